"""Slow: SSD's direction at small scale. On a held-out synthetic scene the student,
distilled from the tiny teacher on `paired` and on `photometric` translations, has a
lower abs_rel than its teacher in rain and at night, and stays near it on day-clear.
bench/bench_student.py runs the same chain with the full budget and prints the table."""
from __future__ import annotations

import pytest

# the fixture (teacher + two students) counts towards the first test's timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Day-clear tolerance of this short run. The bound is 5% (SSD Table 1: 0.1223 ->
# 0.1217); the bench checks that one with its budget. Measured at this budget with the
# student defaults (day frame kept with P = 2/3 as printed, weight average): -3.4% /
# +2.8% (paired / photometric). With the earlier defaults (day frame 1/3, no average)
# it was +0.9% / +1.3% on these drives and +11.1% / +10.5% or +17.8% / +18.1% on
# earlier ones; a student trained with batch statistics drifted +23%.
DAY_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    from depth_perception_training.train.reproduce import reproduce
    from depth_perception_training.train.learning import fixed_threads, student_reproduce_config

    # a teacher trained at 128x64 for 120 steps (batch 4) came out image-blind (a
    # constant ~21 m); with teacher_tiny.yaml's velocity weight 1.0 instead of 0.1 the
    # photometric student lost rain (0.516 vs 0.487) and day (+27 %) at this budget.
    # One torch thread: 2 threads on the shared 2-core CI machine: ~10x slower steps.
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


# Measured on the drives with textured car flanks (67eb730), at this budget, with the
# student defaults: teacher 0.319 / 0.527 / 0.442 (day / night / rain), paired 0.308 /
# 0.377 / 0.349, photometric 0.328 / 0.428 / 0.412, prior 0.458. With the earlier
# defaults (day frame 1/3, no average) the photometric student missed rain here (0.454).
@pytest.mark.parametrize("translator", ["paired", "photometric"])
def test_student_beats_teacher_in_rain(reproduction, translator):
    from depth_perception_training.train.reproduce import claim_holds, format_table

    table = _table(reproduction)
    holds = claim_holds(table, translator, day_tolerance=DAY_TOLERANCE)
    assert holds["rain"], (holds, format_table(table))


@pytest.mark.parametrize("translator", ["paired", "photometric"])
def test_student_stays_near_teacher_by_day(reproduction, translator):
    from depth_perception_training.train.reproduce import claim_holds, format_table

    table = _table(reproduction)
    holds = claim_holds(table, translator, day_tolerance=DAY_TOLERANCE)
    assert holds["day-clear"], (holds, format_table(table))


@pytest.mark.parametrize("translator", ["paired", "photometric"])
def test_student_beats_teacher_at_night(reproduction, translator):
    from depth_perception_training.train.reproduce import claim_holds, format_table

    table = _table(reproduction)
    holds = claim_holds(table, translator, day_tolerance=DAY_TOLERANCE)
    assert holds["night"], (holds, format_table(table))
