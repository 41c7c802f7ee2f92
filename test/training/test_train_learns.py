"""The CPU teacher sees the scene: it beats an image-blind prior on held-out streets
(slow: a few minutes on 2 idle cores).

``config/train/teacher_tiny.yaml`` (slim ResNet-18 + monodepth2 disparity decoder, tiny
pose net, random init) trains on varied
synthetic drives made first with the generator (training never makes data), for fewer
steps than the bench (``bench/bench_train.py --learn``), and is scored on drives of
other seeds against the per-pixel median ground truth of the training drives, metric
(no median scaling):

* ``test_teacher_beats_the_image_blind_prior``: lower abs_rel than the prior overall
  and on the structure pixels (where the prior is off by more than 20 %), scale from
  the velocity loss within 25 % (at 200 steps it has not settled: 0.830, then 0.794 with
  textured car flanks; a 600-step learning run as the bench's went 0.72, 0.93, 0.85,
  0.90, 0.97 at steps 200-600);
* ``test_teacher_losses_behave``: photometric error falls, translation norms match the
  odometry, no non-finite step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN_SEEDS = (1, 2, 3, 4, 5, 6)
TEST_SEEDS = (101,)
STEPS = 200
# the module fixture trains for about 4 min on 2 idle cores; under load it takes longer
# than the suite's 600 s default (which counts it towards the first test)
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from depth_perception.synth import make_varied_drives
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    root = tmp_path_factory.mktemp("learn")
    train = make_varied_drives(root / "bags", TRAIN_SEEDS, frames=40)
    test = make_varied_drives(root / "bags", TEST_SEEDS, frames=40)

    cfg = load_config(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml",
                      [f"output_dir={root / 'run'}", f"trainer.max_steps={STEPS}",
                       f"data.bags=[{','.join(map(str, train))}]",
                       f"data.val_bags=[{','.join(map(str, test))}]",
                       "trainer.checkpoint_every=0", "trainer.val_every=0"])
    result = build_teacher_trainer(cfg).fit()
    v = result.validation
    print(f"teacher abs_rel {v['all']['abs_rel']:.4f} structure "
          f"{v['all']['abs_rel_structure']:.4f} scale {v['all']['scale_ratio']:.3f}; prior "
          f"abs_rel {v['prior']['abs_rel']:.4f} structure {v['prior']['abs_rel_structure']:.4f}")
    return result


@pytest.mark.slow
def test_teacher_beats_the_image_blind_prior(learned):
    teacher, prior = learned.validation["all"], learned.validation["prior"]
    assert teacher["abs_rel"] < prior["abs_rel"]
    assert teacher["abs_rel_structure"] < prior["abs_rel_structure"]
    # metric through the velocity loss, not settled at 200 steps (measured 0.890, 0.830,
    # 0.794 on successive versions of the drives; the bench's 600 steps: within 5 %).
    # Without the velocity term the scale is arbitrary; a unit slip is 10x.
    assert abs(teacher["scale_ratio"] - 1.0) < 0.25


def _mean_term(history, name, sl):
    return float(np.mean([r["terms"][name] for r in history[sl]]))


@pytest.mark.slow
def test_teacher_losses_behave(learned):
    h = learned.history
    assert learned.nan_skips == 0 and np.isfinite([r["loss"] for r in h]).all()
    # the photometric error falls: 0.82x of its start after 200 steps with velocity weight
    # 1.0 (below 0.8x with 0.1: a weaker scale term leaves more of the loss to the photometric
    # fit); a net that does not learn stays at ~1.0x
    assert _mean_term(h, "photometric", slice(-40, None)) < \
        0.9 * _mean_term(h, "photometric", slice(0, 5))
    assert _mean_term(h, "velocity", slice(-40, None)) < 0.15     # metres per frame
