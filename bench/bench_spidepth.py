#!/usr/bin/env python
"""SPIdepth at small scale: pose pretraining, then SPIdepth Table 5's ablation.

    bench/bench_spidepth.py [--pose-steps 200] [--steps 200] [--work DIR]

1. ``train pose`` (config/train/pose_tiny.yaml) on synthetic drives of their own (seeds
   201..), supervised by the odometry: writes a transformers pose backbone folder;
2. the same SPIdepth depth net (config/train/spidepth_tiny.yaml: SQL decoder on the
   conv encoder-decoder) trained twice for the same steps on the same drives as
   bench/bench_train.py: with a random-init pose backbone, and strengthened with the
   pretrained one;
3. both scored on the held-out drives against the image-blind prior of the training
   drives (metric, no median scaling), with the photometric loss at the start and end
   and the predicted depth range.

Prints the tables and the machine load; bags are reused from --work.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
TITLE = "SPIdepth at small scale: bench_spidepth"

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training/depth_perception_training/config/train"
#: same drives as bench/bench_train.py --learn; the pose net learns on drives of its own
TRAIN_SEEDS = tuple(range(1, 9))
TEST_SEEDS = (101, 102)
POSE_SEEDS = tuple(range(201, 209))


def make_bags(root: Path, seeds) -> list[Path]:
    from depth_perception.synth import make_varied_drives

    return make_varied_drives(root, seeds, 60, (320, 96))


def _bags(bags) -> str:
    return "[" + ",".join(str(b) for b in bags) + "]"


def pretrain_pose(work: Path, steps: int | None) -> dict:
    from depth_perception_training.train.pose import pretrain_pose as run

    t0 = time.perf_counter()
    out = run(make_bags(work / "bags", POSE_SEEDS), make_bags(work / "bags", TEST_SEEDS),
              work / "pose", [f"trainer.max_steps={steps}"] if steps else [])
    return {**out, "seconds": time.perf_counter() - t0}


def train_spidepth(work: Path, name: str, steps: int, pose_overrides: list[str]) -> dict:
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    train = make_bags(work / "bags", TRAIN_SEEDS)
    test = make_bags(work / "bags", TEST_SEEDS)
    cfg = load_config(CONFIGS / "spidepth_tiny.yaml",
                      [f"output_dir={work / name}", f"data.bags={_bags(train)}",
                       f"data.val_bags={_bags(test)}", f"trainer.max_steps={steps}",
                       *pose_overrides])
    trainer = build_teacher_trainer(cfg)
    t0 = time.perf_counter()
    result = trainer.fit()
    h = result.history
    k = max(1, min(10, len(h) // 4))
    photo = [r["terms"]["photometric"] for r in h]
    depth_mean = [r["terms"]["depth_mean"] for r in h]
    return {"name": name, "seconds": time.perf_counter() - t0, "steps": result.step,
            "validation": result.validation, "nan_skips": result.nan_skips,
            "photometric_start": sum(photo[:k]) / k, "photometric_end": sum(photo[-k:]) / k,
            "depth_mean_end": depth_mean[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pose-steps", type=int, default=None,
                   help="train pose steps (default: pose_tiny.yaml's)")
    p.add_argument("--pose-folder", type=Path, default=None,
                   help="reuse a `train pose` folder instead of pretraining one")
    p.add_argument("--steps", type=int, default=200, help="steps of each SPIdepth arm")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads (1 on a machine busy with other jobs: spinning "
                        "threads waste CPU there)")
    add_record_argument(p)
    args = p.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_spidepth_"))
    print(f"# SPIdepth at small scale (work dir {work}, {args.threads} threads, load "
          f"{os.getloadavg()[0]:.2f})")

    if args.pose_folder is not None:
        pose = {"backbone": args.pose_folder}
        print(f"train pose: reusing {args.pose_folder}")
    else:
        pose = pretrain_pose(work, args.pose_steps)
        v = pose["validation"]
        print(f"train pose: {pose['result'].step} steps in {pose['seconds']:.0f} s -> "
              f"{pose['backbone']}; held-out translation error {v['translation_error_m']:.3f} "
              f"m (standing still: {v['still_translation_m']:.3f} m), rotation error "
              f"{v['rotation_error_deg']:.3f} deg, {v['pairs']} pairs")

    arms = [train_spidepth(work, "random_pose", args.steps,
                           ["model.pose.strengthened=false", "model.pose.pretrained=null",
                            "model.init_forward_motion=1.0"]),
            train_spidepth(work, "pretrained_pose", args.steps,
                           [f"model.pose.pretrained={pose['backbone']}"])]
    prior = arms[0]["validation"]["prior"]
    print(f"SPIdepth Table-5 ablation, {args.steps} steps each, held-out drives, metric "
          f"(no median scaling), load {os.getloadavg()[0]:.2f}")
    print("| pose backbone | abs_rel | structure abs_rel | scale ratio | a1 | photometric "
          "start -> end | mean depth (m) | time |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| prior (image-blind, training drives) | {prior['abs_rel']:.4f} | "
          f"{prior['abs_rel_structure']:.4f} | {prior['scale_ratio']:.3f} | {prior['a1']:.3f} "
          f"| - | - | - |")
    for arm in arms:
        m = arm["validation"]["all"]
        print(f"| {arm['name']} | {m['abs_rel']:.4f} | {m['abs_rel_structure']:.4f} | "
              f"{m['scale_ratio']:.3f} | {m['a1']:.3f} | {arm['photometric_start']:.4f} -> "
              f"{arm['photometric_end']:.4f} | {arm['depth_mean_end']:.1f} | "
              f"{arm['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
