"""The tiny teacher learns on synthetic day-clear bags (slow: a few minutes on 2 cores).

One training run of ``config/train/teacher_tiny.yaml`` (random-init tiny DINOv2 + DPT
and pose net, 400 steps), evaluated on a held-out synthetic sequence with ground
truth WITHOUT median scaling, before and after training. Same check as
``bench/bench_train.py --learn``.

* ``test_tiny_teacher_learns``: the photometric loss falls, the pose net's
  translations match odometry (velocity loss), rmse and a1 improve.
* ``test_tiny_teacher_reaches_the_target_numbers``: abs_rel at least 30 % lower than
  at the start, median scale error under 10 % (no median scaling: the scale comes from
  the velocity loss). Measured: abs_rel 0.63 -> 0.37, scale ratio 0.995.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    out = tmp_path_factory.mktemp("learn")
    cfg = load_config(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml",
                      [f"output_dir={out}", "trainer.checkpoint_every=0",
                       "trainer.val_every=0", "trainer.image_every=0"])
    trainer = build_teacher_trainer(cfg)
    before = trainer.validate()["all"]
    result = trainer.fit()
    after = result.validation["all"]
    print(f"abs_rel {before['abs_rel']:.4f} -> {after['abs_rel']:.4f}, rmse {before['rmse']:.3f} "
          f"-> {after['rmse']:.3f}, a1 {before['a1']:.3f} -> {after['a1']:.3f}, scale ratio "
          f"{before['scale_ratio']:.3f} -> {after['scale_ratio']:.3f}")
    return before, after, result


def _mean_term(history, name, sl):
    return float(np.mean([r["terms"][name] for r in history[sl]]))


@pytest.mark.slow
def test_tiny_teacher_learns(learned):
    before, after, result = learned
    h = result.history
    assert result.nan_skips == 0 and np.isfinite([r["loss"] for r in h]).all()
    # photometric error of the warps falls by a fifth or more
    assert _mean_term(h, "photometric", slice(-40, None)) < \
        0.8 * _mean_term(h, "photometric", slice(0, 5))
    # predicted translation norms match the odometry (metres per frame)
    assert _mean_term(h, "velocity", slice(-40, None)) < 0.1
    # depth against ground truth: rmse 10 % lower, a1 up, scale metric within 25 %
    assert after["rmse"] < 0.9 * before["rmse"]
    assert after["a1"] > before["a1"] + 0.1
    assert abs(after["scale_ratio"] - 1.0) < 0.10


@pytest.mark.slow
def test_tiny_teacher_reaches_the_target_numbers(learned):
    before, after, _ = learned
    assert after["abs_rel"] <= 0.7 * before["abs_rel"]
    assert abs(after["scale_ratio"] - 1.0) < 0.10
