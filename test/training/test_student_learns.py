"""Slow: SSD's direction at small scale. On a held-out synthetic drive the student,
distilled from the tiny teacher on `paired` and on `photometric` translations, is
scored against its teacher per condition (student abs_rel / teacher abs_rel).

The bounds come from the spread of this same chain (bench/bench_learning_spread.py
--students; bench/RESULTS.md, "Student learning test"): 5 student seeds x 2 translators
x 2 CPU ISAs (the default, AVX-512 + AMX, and AVX2), one teacher per ISA, 20 students.
Each bound is the worst student plus a margin. At this budget (a 200-step teacher, 80
student steps) the student beats its teacher at night with both translators and in rain
with `paired`; with `photometric` its worst rain is 0.996 of the teacher's, too close to
1 to assert that it wins: here it must not lose by more than 5 %, and
bench/bench_student.py (a larger budget) prints whether it wins.
"""
from __future__ import annotations

import pytest

# the fixture (teacher + two students) counts towards the first test's timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# student / teacher abs_rel: {translator: {condition: bound}}. Spread of 10 students per
# translator (worst -> bound, margin):
#   paired       night 0.630-0.856 -> 1.0 (0.144), rain 0.748-0.947 -> 1.0 (0.053),
#                day-clear 0.939-1.074 -> 1.2 (0.126)
#   photometric  night 0.816-0.914 -> 1.0 (0.086), rain 0.748-0.996 -> 1.05 (0.054),
#                day-clear 1.003-1.116 -> 1.2 (0.084)
# By day the student pays for its night/rain training at this budget (up to +11.6 %);
# SSD's bound of 5 % (Table 1) is the bench's to check, with its budget.
BOUNDS = {
    "paired": {"night": 1.0, "rain": 1.0, "day-clear": 1.2},
    "photometric": {"night": 1.0, "rain": 1.05, "day-clear": 1.2},
}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    from depth_perception_training.train.reproduce import reproduce
    from depth_perception_training.train.learning import fixed_threads, student_reproduce_config

    # the configuration the spread was measured with (train/learning.py); one torch
    # thread: two students train at once on 2 cores, and spinning threads would make
    # each step several times slower
    with fixed_threads(1):
        return reproduce(tmp_path_factory.mktemp("ssd_repro"), student_reproduce_config())


def _table(reproduction):
    from depth_perception_training.train.reproduce import format_table

    table = reproduction["table"]
    print(format_table(table))
    assert set(table) == {"teacher", "student (paired)", "student (photometric)", "prior"}
    for row in table.values():
        assert {"day-clear", "night", "rain"} <= set(row)
    # the teacher uses the image: it beats the image-blind prior by day
    assert table["teacher"]["day-clear"]["abs_rel"] < table["prior"]["day-clear"]["abs_rel"]
    return table


@pytest.mark.parametrize("condition", ["night", "rain", "day-clear"])
@pytest.mark.parametrize("translator", ["paired", "photometric"])
def test_student_over_teacher_within_the_measured_spread(reproduction, translator, condition):
    from depth_perception_training.train.learning import student_ratios
    from depth_perception_training.train.reproduce import format_table

    table = _table(reproduction)
    ratio = student_ratios(table)[f"student ({translator})"][condition]
    assert ratio < BOUNDS[translator][condition], (translator, condition, ratio,
                                                   format_table(table))
