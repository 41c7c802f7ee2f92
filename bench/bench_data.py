"""Frames per second of reading training samples (640x192, with LiDAR projection).

Reads every sample of a synthetic bag three ways: without cache, cold cache (decode and
write) and warm cache (second epoch), and prints the figures. Uses
``depth_perception.synth.make_synthetic_bags`` when available, else a hand-made
bag (1280x384 frames, 20k-point LiDAR scans) from test/bagtools.py.

    .venv/bin/python bench/bench_data.py [--frames 40] [--storage mcap]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_bag(out: Path, frames: int, storage: str) -> tuple[Path, str]:
    try:
        from depth_perception.synth import make_synthetic_bags
    except ImportError:
        make_synthetic_bags = None
    if make_synthetic_bags is not None:
        bags = make_synthetic_bags(out, frames=frames, size=(1280, 384),
                                   conditions=("day-clear",), seed=0, storage=storage)
        return Path(bags[0]), "make_synthetic_bags"
    sys.path.insert(0, str(ROOT / "test"))
    from support.bagtools import make_drive_bag

    from depth_perception.camera import Intrinsics

    rng = np.random.default_rng(0)
    n = 20000
    lidar = np.stack([rng.uniform(2, 60, n), rng.uniform(-15, 15, n), rng.uniform(-2, 1, n)],
                     axis=1)
    intr = Intrinsics(fx=700.0, fy=700.0, cx=639.5, cy=191.5, width=1280, height=384)
    return make_drive_bag(out / "drive", storage, n=frames, lidar_points=lidar,
                          intrinsics=intr), "hand-made (test/bagtools.py)"


def read_all(seq) -> tuple[int, float]:
    start = time.perf_counter()
    for s in seq:
        _ = s.image, s.lidar_depth
    return len(seq), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    args = parser.parse_args()

    from depth_perception.data.cache import FrameCache
    from depth_perception.data.samples import BagSequence, SampleConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        bag, source = make_bag(tmp / "bags", args.frames, args.storage)
        print(f"bag: {source}, {args.storage}, {args.frames} frames, written in "
              f"{time.perf_counter() - t0:.1f} s")
        cfg = SampleConfig(size=(640, 192), with_gt=False)
        t0 = time.perf_counter()
        seq = BagSequence(bag, cfg)
        print(f"index: {time.perf_counter() - t0:.2f} s for {len(seq)} samples")
        n, dt = read_all(seq)
        print(f"no cache:   {n / dt:7.1f} samples/s ({seq.decode_count} decodes)")
        cache = FrameCache(tmp / "cache")
        cold = BagSequence(bag, cfg, cache=cache)
        n, dt = read_all(cold)
        print(f"cold cache: {n / dt:7.1f} samples/s ({cold.decode_count} decodes)")
        warm = BagSequence(bag, cfg, cache=cache)
        n, dt = read_all(warm)
        print(f"warm cache: {n / dt:7.1f} samples/s ({warm.decode_count} decodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
