"""The tiny teacher learns metric depth on synthetic day-clear bags (slow: a few minutes).

Held-out synthetic sequence with ground truth; metrics WITHOUT median scaling:
abs_rel must drop by at least 30 % from the untrained network, and thanks to the
velocity loss the scale must be metric: |median(gt) / median(pred) - 1| < 10 %.
Same check as ``bench/bench_train.py --learn``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

LEARN_STEPS = 300


@pytest.mark.slow
def test_tiny_teacher_learns_metric_depth(tmp_path):
    from depth_perception.train.config import load_config
    from depth_perception.train.teacher import build_teacher_trainer

    cfg = load_config(REPO / "config" / "train" / "teacher_tiny.yaml",
                      [f"output_dir={tmp_path}", f"trainer.max_steps={LEARN_STEPS}",
                       "trainer.checkpoint_every=0", "trainer.val_every=0",
                       "trainer.image_every=0"])
    trainer = build_teacher_trainer(cfg)
    before = trainer.validate()["all"]
    result = trainer.fit()
    after = result.validation["all"]
    drop = 1.0 - after["abs_rel"] / before["abs_rel"]
    scale_error = abs(after["scale_ratio"] - 1.0)
    print(f"abs_rel {before['abs_rel']:.4f} -> {after['abs_rel']:.4f} ({100 * drop:.1f}% lower), "
          f"scale ratio {before['scale_ratio']:.3f} -> {after['scale_ratio']:.3f}")
    assert result.step == LEARN_STEPS and result.nan_skips == 0
    assert np.isfinite([r["loss"] for r in result.history]).all()
    assert drop >= 0.30, (before, after)
    assert scale_error < 0.10, (before, after)
    # the translation the pose net predicts matches the odometry (velocity loss)
    velocity = np.mean([r["terms"]["velocity"] for r in result.history[-20:]])
    assert velocity < 0.2
