"""The CPU learning runs that tests assert on and benches measure, defined once, so a
threshold in ``test/training/test_train_learns.py`` or ``test_student_learns.py`` comes
from the spread ``bench/bench_learning_spread.py`` measured on runs of exactly this code.

Teacher run:
``config/train/teacher_tiny.yaml`` (slim ResNet-18 + monodepth2 disparity decoder, tiny
pose net, random init) trained for ``steps`` on varied synthetic day-clear drives
(seeds :data:`TRAIN_SEEDS`, made first: training never makes data), scored on a drive
of another seed against the per-pixel median ground truth of the training drives,
metric (no median scaling). Seeded and deterministic where torch allows
(``trainer.deterministic``: ``torch.use_deterministic_algorithms``), with a fixed
thread count: on one machine two runs agree to the last digit; another CPU (other
oneDNN / BLAS kernels) lands elsewhere, which is what the bench measures.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

TRAIN_SEEDS = (1, 2, 3, 4, 5, 6)
TEST_SEEDS = (101,)
FRAMES = 40
STEPS = 200
THREADS = 1            # fixed: a bigger machine agrees, and a loaded one does not spin


@contextmanager
def fixed_threads(n: int = THREADS):
    """torch intra-op threads set to ``n`` for the block (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def deterministic_restored():
    """Restore torch's deterministic-algorithms flag (the trainer sets it globally)."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def teacher_learning_run(root: Path, seed: int = 0, steps: int = STEPS, run: str = "run"):
    """Train the tiny teacher in ``root/<run>_seed<seed>`` (drives under ``root/bags``,
    reused when there); returns the trainer's ``TrainResult``."""
    from depth_perception.synth import make_varied_drives
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    root = Path(root)
    train = make_varied_drives(root / "bags", TRAIN_SEEDS, frames=FRAMES)
    test = make_varied_drives(root / "bags", TEST_SEEDS, frames=FRAMES)
    cfg = load_config("teacher_tiny",
                      [f"output_dir={root / f'{run}_seed{seed}'}", f"trainer.max_steps={steps}",
                       f"seed={seed}", "trainer.deterministic=true",
                       f"data.bags=[{','.join(map(str, train))}]",
                       f"data.val_bags=[{','.join(map(str, test))}]",
                       "trainer.checkpoint_every=0", "trainer.val_every=0"])
    with fixed_threads(), deterministic_restored():
        return build_teacher_trainer(cfg).fit()


def mean_term(history, name: str, sl: slice) -> float:
    """Mean of one loss term over a slice of the training history."""
    return float(np.mean([r["terms"][name] for r in history[sl]]))


def learning_figures(result) -> dict:
    """Every figure the learning test asserts on, from one run."""
    v, h = result.validation, result.history
    return {
        "abs_rel": v["all"]["abs_rel"],
        "abs_rel_structure": v["all"]["abs_rel_structure"],
        "prior_abs_rel": v["prior"]["abs_rel"],
        "prior_abs_rel_structure": v["prior"]["abs_rel_structure"],
        "abs_rel_vs_prior": v["all"]["abs_rel"] / v["prior"]["abs_rel"],
        "structure_vs_prior": v["all"]["abs_rel_structure"] / v["prior"]["abs_rel_structure"],
        "scale_ratio": v["all"]["scale_ratio"],
        # photometric error over the last 40 steps against the first 5
        "photometric_ratio": mean_term(h, "photometric", slice(-40, None))
        / mean_term(h, "photometric", slice(0, 5)),
        "velocity_last40": mean_term(h, "velocity", slice(-40, None)),   # metres per frame
        "nan_skips": result.nan_skips,
        "finite": bool(np.isfinite([r["loss"] for r in h]).all()),
    }


def student_reproduce_config(student_seeds=(0,)):
    """The SSD chain of ``test/training/test_student_learns.py``: teacher_tiny.yaml at
    320x96 on three drives for 200 steps (velocity weight 0.1), then one student per
    translator (paired, photometric) and seed for 80 steps, two at a time, one torch
    thread each (the bench: four drives, 400 teacher steps, 150 student steps)."""
    from depth_perception_training.train.reproduce import ReproduceConfig

    return ReproduceConfig(train_seeds=(1, 2, 3), teacher_steps=200, student_steps=80,
                           student_workers=2, student_seeds=tuple(student_seeds),
                           teacher_overrides=["loss.velocity_weight=0.1"])


def student_ratios(table: dict) -> dict:
    """{student row: {condition: student abs_rel / teacher abs_rel}} (SSD's direction:
    below 1 at night and in rain, near 1 by day)."""
    teacher = table["teacher"]
    return {row: {c: v[c]["abs_rel"] / teacher[c]["abs_rel"] for c in teacher}
            for row, v in table.items() if row.startswith("student")}
