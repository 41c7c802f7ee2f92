#!/usr/bin/env python
"""Training benchmarks on this machine (CPU).

    bench/bench_train.py                 # steps/s of the tiny teacher; S/B params + memory
    bench/bench_train.py --learn         # + the learning check (abs_rel before/after,
                                         #   median scale error without median scaling)

Prints one block per measurement. Models are random-init (no download); synthetic
bags go to a temporary folder unless --work is given (then they are reused).
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

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"
TEACHER = REPO / "training/depth_perception_training/config/train/teacher.yaml"


def tiny_trainer(work: Path, overrides: list[str]):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    cfg = load_config(TINY, [f"output_dir={work}", "trainer.progress=false", *overrides])
    return build_teacher_trainer(cfg)


def bench_steps(work: Path, steps: int, warmup: int = 2) -> dict:
    """Training steps per second of the tiny teacher (data loading included)."""
    trainer = tiny_trainer(work, [])
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
from depth_perception_training.train.teacher import build_models, TeacherObjective, build_loss
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
obj = TeacherObjective(build_loss(cfg), cfg.data.context, smooth_depth=arch == "sql")
out = obj({"depth": depth, "pose": pose}, batch)
out.loss.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"arch": arch, "depth_params": params(depth), "pose_params": params(pose),
                  "trainable": trainable(depth) + trainable(pose), "H": H, "W": W, "B": B,
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


def learning_check(work: Path, steps: int, overrides: list[str] = ()) -> dict:
    """Train the tiny teacher; abs_rel and scale ratio on the held-out bag before/after."""
    trainer = tiny_trainer(work, [f"trainer.max_steps={steps}", "trainer.checkpoint_every=0",
                                  "trainer.val_every=0", *overrides])
    before = trainer.validate()["all"]
    result = trainer.fit()
    after = result.validation["all"]
    return {"steps": result.step, "abs_rel_before": before["abs_rel"],
            "abs_rel_after": after["abs_rel"],
            "abs_rel_drop": 1.0 - after["abs_rel"] / before["abs_rel"],
            "scale_ratio_before": before["scale_ratio"], "scale_ratio_after": after["scale_ratio"],
            "median_scale_error": abs(after["scale_ratio"] - 1.0),
            "rmse_before": before["rmse"], "rmse_after": after["rmse"],
            "a1_before": before["a1"], "a1_after": after["a1"], "n_images": after["n_images"],
            "nan_skips": result.nan_skips}


def _mib(x: float) -> str:
    return f"{x / 2**20:8.1f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps of the tiny teacher")
    p.add_argument("--learn", action="store_true", help="run the learning check")
    p.add_argument("--learn-steps", type=int, default=400)
    p.add_argument("--memory-batch", type=int, default=1, help="batch of the S/B memory probe")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="working folder (kept)")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train_"))
    print(f"# depth_perception training bench  (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, work dir {work})")

    r = bench_steps(work / "speed", args.steps)
    print(f"tiny teacher (224x70, batch {r['batch_size']}): {r['steps_per_s']:.2f} steps/s "
          f"({r['steps']} steps in {r['seconds']:.1f} s, data loading included)")

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
        t0 = time.perf_counter()
        r = learning_check(work / "learn", args.learn_steps)
        print(f"learning check ({r['steps']} steps, {time.perf_counter() - t0:.0f} s, "
              f"{r['n_images']} held-out images, no median scaling):")
        print(f"  abs_rel {r['abs_rel_before']:.4f} -> {r['abs_rel_after']:.4f} "
              f"({-100 * r['abs_rel_drop']:+.1f}% change; target <= -30%)")
        print(f"  scale ratio median(gt)/median(pred) {r['scale_ratio_before']:.3f} -> "
              f"{r['scale_ratio_after']:.3f}: median scale error "
              f"{100 * r['median_scale_error']:.1f}% (target < 10%)")
        print(f"  rmse {r['rmse_before']:.3f} -> {r['rmse_after']:.3f} m, a1 {r['a1_before']:.3f} "
              f"-> {r['a1_after']:.3f}, "
              f"{r['nan_skips']} non-finite steps skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
