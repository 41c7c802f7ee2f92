"""The CPU teacher sees the scene: it beats an image-blind prior on held-out streets
(slow: 10 min of one core at load 3).

The run is ``depth_perception_training.train.learning.teacher_learning_run`` (teacher_tiny.yaml,
200 steps, seeded, deterministic, one thread), scored on a drive of another seed against
the per-pixel median ground truth of the training drives, metric (no median scaling).
A seeded run repeats to the last digit on one machine and lands elsewhere on another
CPU, so every threshold below is set from the spread that
``bench/bench_learning_spread.py`` measured over seeds and CPU ISAs (the default ISA of
this machine kind, and AVX2 for oneDNN, MKL and torch's kernels), with the margin
stated beside it; the figures are in ``bench/RESULTS.md``. Claims that need a longer
run (the scale settling within 5 %, the photometric error's full fall) are printed by
``bench/bench_train.py --learn``, not asserted here.
"""
from __future__ import annotations

import pytest
from depth_perception_training.train.learning import learning_figures, teacher_learning_run

# the fixture trains for about 10 min of one core; under load it takes longer than the
# suite's 600 s default (which counts it towards the first test)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# Thresholds, each beside its spread over 10 runs (seeds 0-4 x the default ISA and AVX2,
# bench/RESULTS.md) and the margin kept between the worst run and the threshold:
ABS_REL_VS_PRIOR = 1.0        # teacher abs_rel / prior abs_rel: 0.63-0.90; margin 0.10
STRUCTURE_VS_PRIOR = 0.90     # the same on the structure pixels: 0.56-0.76; margin 0.14
SCALE_TOLERANCE = 0.30        # |median(pred / truth) - 1|: 0.01-0.20; margin 0.10
PHOTOMETRIC_RATIO = 0.90      # photometric error, last 40 steps / first 5: 0.67-0.79; 0.11
VELOCITY_LAST40 = 0.15        # velocity loss, last 40 steps (m per frame): 0.05-0.09; 0.06


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    result = teacher_learning_run(tmp_path_factory.mktemp("learn"), seed=0)
    f = learning_figures(result)
    print(", ".join(f"{k} {v:.4f}" for k, v in f.items() if isinstance(v, float)))
    return f


def test_teacher_beats_the_image_blind_prior(figures):
    assert figures["abs_rel_vs_prior"] < ABS_REL_VS_PRIOR
    assert figures["structure_vs_prior"] < STRUCTURE_VS_PRIOR
    # metric through the velocity loss (without it the scale is arbitrary; a unit slip
    # is 10x)
    assert abs(figures["scale_ratio"] - 1.0) < SCALE_TOLERANCE


def test_teacher_losses_behave(figures):
    assert figures["nan_skips"] == 0 and figures["finite"]
    # the photometric error falls; a net that does not learn stays at ~1.0x
    assert figures["photometric_ratio"] < PHOTOMETRIC_RATIO
    assert figures["velocity_last40"] < VELOCITY_LAST40
