#!/usr/bin/env python
"""Training benchmarks on this machine (CPU).

    bench/bench_train.py                 # steps/s of the tiny teacher; S/B params + memory
    bench/bench_train.py --learn         # + the learning run: teacher_tiny.yaml on
                                         #   synthetic training bags, scored on held-out
                                         #   scenes (other seeds) against the image-blind
                                         #   prior of the training bags, no median scaling

Prints one block per measurement with the machine load. Models are random-init (no
download); synthetic bags (made with the generator first: training never makes data)
go to a temporary folder unless --work is given (then they are reused).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"
TEACHER = REPO / "training/depth_perception_training/config/train/ssd_teacher.yaml"


#: learning run: training scenes (seeds) and held-out scenes, frames per bag
TRAIN_SEEDS = tuple(range(1, 9))
TEST_SEEDS = (101, 102)
POSE_SEEDS = tuple(range(201, 209))  # the pose net is pretrained on drives of its own
FRAMES = 60
SIZE = (320, 96)


def make_bags(root: Path, seeds, frames: int = FRAMES, size=SIZE) -> list[Path]:
    """Day-clear drives, rig and street varied by the seed (reused when there)."""
    from depth_perception.synth import make_varied_drives

    return make_varied_drives(root, seeds, frames, size)


def pose_folder(work: Path, frames: int = FRAMES, steps: int | None = None) -> tuple[Path, dict]:
    """The strengthened pose net of teacher_tiny.yaml: `train pose` on POSE_SEEDS drives
    (reused when already there). Returns (folder, validation or {})."""
    from depth_perception_training.train.pose import BACKBONE_DIR, pretrain_pose

    folder = work / "pose" / BACKBONE_DIR
    if (folder / "config.json").is_file():
        return folder, {}
    out = pretrain_pose(make_bags(work / "bags", POSE_SEEDS, frames),
                        make_bags(work / "bags", TEST_SEEDS, frames), work / "pose",
                        [f"trainer.max_steps={steps}"] if steps else [])
    return out["backbone"], out["validation"] or {}


def tiny_trainer(work: Path, overrides: list[str], train_bags, val_bags=()):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    bags = ",".join(str(b) for b in train_bags)
    val = ",".join(str(b) for b in val_bags)
    cfg = load_config(TINY, [f"output_dir={work}", "trainer.progress=false",
                             f"data.bags=[{bags}]", f"data.val_bags=[{val}]", *overrides])
    return build_teacher_trainer(cfg)


def bench_steps(work: Path, steps: int, warmup: int = 2) -> dict:
    """Training steps per second of the tiny teacher (data loading included)."""
    trainer = tiny_trainer(work / "run", [], make_bags(work / "bags", TRAIN_SEEDS[:1], 12))
    trainer.resume(None)
    trainer.train_loader.set_epoch(0)
    it = iter(trainer.train_loader)

    def batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(trainer.train_loader)
            return next(it)

    for _ in range(warmup):
        trainer.train_step(batch())
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch())
    dt = time.perf_counter() - t0
    cfg = trainer.config
    return {"steps": steps, "seconds": dt, "steps_per_s": steps / dt,
            "batch_size": trainer.train_loader.total_batch_size}


_MEMORY_CHILD = r"""
import json, resource, sys, torch
from depth_perception_training.train.config import load_config, to_dataclass
from depth_perception_training.train.teacher import (build_models, TeacherObjective, build_loss,
                                                     depth_input_size)
torch.set_num_threads(2)
cfg = to_dataclass(load_config(sys.argv[1], sys.argv[3:]))
arch, depth, depth_cfg, pose = build_models(cfg)
params = lambda m: sum(p.numel() for p in m.parameters())
trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
rss_models = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
B, H, W, n = int(sys.argv[2]), cfg.data.height, cfg.data.width, len(cfg.data.context)
batch = {"image": torch.rand(B, 3, H, W), "image_aug": torch.rand(B, 3, H, W),
         "context": torch.rand(B, n, 3, H, W), "context_aug": torch.rand(B, n, 3, H, W),
         "K": torch.tensor([[W * 0.8, 0, W / 2], [0, W * 0.8, H / 2], [0, 0, 1.0]]).expand(B, 3, 3),
         "distance": torch.ones(B, n)}
obj = TeacherObjective(build_loss(cfg), cfg.data.context, smooth_depth=not depth.disparity_heads(),
                       depth_size=depth_input_size(cfg))
out = obj({"depth": depth, "pose": pose}, batch)
out.loss.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"arch": arch, "depth_params": params(depth), "pose_params": params(pose),
                  "trainable": trainable(depth) + trainable(pose), "H": H, "W": W, "B": B,
                  "depth_input": list(depth_input_size(cfg)),
                  "rss_after_build": rss_models, "peak_rss_fwd_bwd": peak}))
"""


def bench_memory(size: str, batch: int) -> dict:
    """Parameters, parameter + Adam bytes, and peak RSS of one forward/backward (subprocess)."""
    overrides = [f"model.depth.size={size}", "model.depth.pretrained=null",
                 "model.pose.pretrained=null"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(TEACHER), str(batch),
                           *overrides], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark of size {size} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    total = r["depth_params"] + r["pose_params"]
    r["param_bytes"] = 4 * total                       # float32 weights
    r["adam_state_bytes"] = 2 * 4 * r["trainable"]     # exp_avg + exp_avg_sq
    r["grad_bytes"] = 4 * r["trainable"]
    return r


def learning_check(work: Path, steps: int | None = None, overrides: list[str] = (),
                   train_seeds=TRAIN_SEEDS, test_seeds=TEST_SEEDS, frames: int = FRAMES) -> dict:
    """Train teacher_tiny.yaml on synthetic scenes; score it and the image-blind prior of
    the training bags on held-out scenes (metric: no median scaling)."""
    t0 = time.perf_counter()
    train = make_bags(work / "bags", train_seeds, frames)
    test = make_bags(work / "bags", test_seeds, frames)
    synth_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    pose_val, pose_args = {}, []
    if "model.pose.strengthened=true" in overrides:      # the strengthened-pose variant
        pose, pose_val = pose_folder(work, frames)
        pose_args = [f"model.pose.pretrained={pose}"]
    pose_s, pose_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    extra = [f"trainer.max_steps={steps}"] if steps else []
    trainer = tiny_trainer(work / "run", ["trainer.checkpoint_every=0", "trainer.val_every=0",
                                          *extra, *overrides, *pose_args], train, test)
    t0, c0 = time.perf_counter(), time.process_time()
    result = trainer.fit()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    v = result.validation
    by_range = range_figures(work / "run" / "model", test)
    sweep = scale_sweep(work / "run" / "model", test)
    return {"by_range": by_range, "scale_sweep": sweep, "steps": result.step, "train_s": train_s,
            "synth_s": synth_s, "train_cpu_s": train_cpu_s, "pose_s": pose_s,
            "pose_cpu_s": pose_cpu_s, "pose_validation": pose_val,
            "teacher": v["all"], "prior": v["prior"], "nan_skips": result.nan_skips,
            "train_bags": len(train), "test_bags": len(test), "frames": frames,
            "history": result.history}


def range_figures(model: Path, bags, every: int = 1) -> list[dict]:
    """The model's error per ground-truth range bin on ``bags`` (metres, no scaling)."""
    from depth_perception.data.samples import BagSequence
    from depth_perception.metrics import range_breakdown
    from depth_perception.runtime.estimator import DepthEstimator

    est = DepthEstimator.load(str(model), backend="torch")

    def pairs():
        for bag in bags:
            seq = BagSequence(bag)
            for k in range(0, len(seq), every):
                s = seq[k]
                if s.gt_depth is not None:
                    yield s.gt_depth, est.estimate(s.image, s.intrinsics).depth

    return range_breakdown(pairs())


def scale_sweep(model: Path, bags, scales=tuple(np.round(np.arange(0.8, 1.21, 0.05), 2)),
                every: int = 2) -> dict:
    """Mean photometric error (SSIM + L1, minimum over the frames before and after, the
    odometry's relative pose) of warping with the model's depth times a global factor s,
    and with the ground truth times s, on ``bags``. The ground truth's minimum is at
    s = 1 when the data's geometry is right; the model's minimum is the scale the
    photometric term alone would pull the model's depth to, given a metric pose."""
    import torch

    from depth_perception.data.samples import BagSequence
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception_training import geometry, losses

    est = DepthEstimator.load(str(model), backend="torch")
    err = {"model": np.zeros(len(scales)), "truth": np.zeros(len(scales))}

    def tensor(image):
        return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0

    n = 0
    for bag in bags:
        seq = BagSequence(bag)
        for k in range(0, len(seq), every):
            s = seq[k]
            if s.gt_depth is None or not s.context:
                continue
            K = torch.from_numpy(s.intrinsics.K)[None]
            valid = torch.from_numpy(np.isfinite(s.gt_depth) & (s.gt_depth < 80.0))[None, None]
            depths = {"truth": np.nan_to_num(s.gt_depth, nan=1e3),
                      "model": est.estimate(s.image, s.intrinsics).depth}
            for name, depth in depths.items():
                d = torch.from_numpy(depth.astype(np.float64))[None, None]
                for j, factor in enumerate(scales):
                    errors = []
                    for offset, image in s.context.items():
                        T = torch.from_numpy(s.T_src_tgt[offset])[None]
                        warped, inside = geometry.warp(tensor(image), d * factor, K, T)
                        e = losses.photometric_error(warped, tensor(s.image))
                        errors.append(torch.where(inside > 0, e, torch.full_like(e, np.inf)))
                    e = torch.stack(errors).min(dim=0).values
                    m = valid & torch.isfinite(e)
                    err[name][j] += float(e[m].mean())
            n += 1
    return {"scales": list(scales), "frames": n,
            **{name: list(v / max(n, 1)) for name, v in err.items()}}


def print_learning(r: dict) -> None:
    t, p = r["teacher"], r["prior"]
    pv = r["pose_validation"]
    if pv:
        print(f"pose pretraining (train pose, {len(POSE_SEEDS)} other drives): "
              f"{r['pose_s']:.0f} s wall, {r['pose_cpu_s']:.0f} s CPU; held-out translation "
              f"error {pv['translation_error_m']:.3f} m/frame (standing still "
              f"{pv['still_translation_m']:.3f}), rotation {pv['rotation_error_deg']:.2f} deg")
    print(f"learning run: {r['steps']} steps in {r['train_s']:.0f} s wall, "
          f"{r['train_cpu_s']:.0f} s CPU (+{r['synth_s']:.0f} s synth), "
          f"{r['train_bags']} training scenes x {r['frames']} frames, "
          f"{t['n_images']} held-out images from {r['test_bags']} other scenes, metric "
          f"(no median scaling), load {os.getloadavg()[0]:.2f}")
    print("| held-out scenes | abs_rel | structure abs_rel | scale ratio | a1 |")
    print("|---|---|---|---|---|")
    for name, m in (("prior (image-blind, training bags)", p), ("teacher_tiny", t)):
        print(f"| {name} | {m['abs_rel']:.4f} | {m.get('abs_rel_structure', float('nan')):.4f} "
              f"| {m['scale_ratio']:.3f} | {m['a1']:.3f} |")
    print(f"  teacher / prior: abs_rel {t['abs_rel'] / p['abs_rel']:.2f} (target <= 0.70), "
          f"structure {t['abs_rel_structure'] / p['abs_rel_structure']:.2f} (target <= 0.50); "
          f"scale error {100 * abs(t['scale_ratio'] - 1):.1f}% (target < 5%); "
          f"{r['nan_skips']} non-finite steps skipped")
    print("  where the error is (held-out ground truth by range): "
          + "; ".join(f"{b['lo']:.0f}-{b['hi']:.0f} m: {100 * b['share']:.0f}% of pixels, "
                      f"median pred/gt {b['median_ratio']:.2f}, abs_rel {b['abs_rel']:.2f}"
                      for b in r["by_range"]))
    sw = r["scale_sweep"]
    best = {k: sw["scales"][int(np.argmin(sw[k]))] for k in ("truth", "model")}
    print(f"  photometric error of depth x s with the odometry pose ({sw['frames']} held-out "
          f"frames): minimum at s = {best['truth']:.2f} for the ground truth, "
          f"{best['model']:.2f} for the model; model: "
          + " ".join(f"{f:.2f}:{e:.4f}" for f, e in zip(sw["scales"], sw["model"])))


def title(args) -> str:
    """The bench/RESULTS.md entry of this run: the learning check, or speed and memory."""
    if not args.learn:
        return "Training speed and memory: bench_train"
    return ("Teacher learning check: bench_train --learn"
            + (" --strengthened-pose" if args.strengthened_pose else ""))


def _mib(x: float) -> str:
    return f"{x / 2**20:8.1f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps of the tiny teacher")
    p.add_argument("--learn", action="store_true", help="run the learning check")
    p.add_argument("--strengthened-pose", action="store_true",
                   help="learning run with the pose net pretrained by `train pose` on other "
                        "drives (slim18 backbone, velocity weight 0.3)")
    p.add_argument("--learn-steps", type=int, default=None,
                   help="steps of the learning run (default: the config's)")
    p.add_argument("--memory-batch", type=int, default=1, help="batch of the S/B memory probe")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="working folder (kept)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads (1 on a machine busy with other jobs: spinning "
                        "threads waste CPU there)")
    add_record_argument(p)
    args = p.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, title(args))


def measure(args) -> int:
    """The bench: prints its figures."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train_"))
    print(f"# depth_perception training bench  (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, work dir {work})")

    if args.steps > 0:
        r = bench_steps(work / "speed", args.steps)
        print(f"tiny teacher ({SIZE[0]}x{SIZE[1]}, batch {r['batch_size']}): "
              f"{r['steps_per_s']:.2f} steps/s ({r['steps']} steps in {r['seconds']:.1f} s, "
              f"data loading included; load {os.getloadavg()[0]:.2f})")

    if not args.skip_memory:
        for size in ("small", "base"):
            m = bench_memory(size, args.memory_batch)
            print(f"teacher {size.upper()[0]} (DINOv2-{size} + DPT, ResNet-18 pose), "
                  f"{m['W']}x{m['H']} batch {m['B']}:")
            print(f"  parameters: depth {m['depth_params'] / 1e6:.2f} M, pose "
                  f"{m['pose_params'] / 1e6:.2f} M, trainable {m['trainable'] / 1e6:.2f} M")
            print(f"  weights {_mib(m['param_bytes'])} + grads {_mib(m['grad_bytes'])} + Adam "
                  f"state {_mib(m['adam_state_bytes'])}")
            print(f"  measured peak RSS: {_mib(m['rss_after_build'])} after build, "
                  f"{_mib(m['peak_rss_fwd_bwd'])} after one forward/backward")

    if args.learn:
        variant = (["model.pose.backbone=slim18", "model.pose.strengthened=true",
                    "model.init_forward_motion=null", "optim.lr_pose=1e-4",
                    "loss.velocity_weight=0.3"] if args.strengthened_pose else [])
        print_learning(learning_check(work / "learn", args.learn_steps, variant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
