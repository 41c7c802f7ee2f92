"""Frames per second of reading training samples (640x192, with LiDAR projection).

Reads every sample of a synthetic bag three ways: without cache, cold cache (decode and
write) and warm cache (second epoch), and prints the figures, on a synthetic bag
(``depth_perception.synth.make_synthetic_bags``, 1280x384 frames with LiDAR).

    .venv/bin/python bench/bench_data.py [--frames 40] [--storage mcap]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Reading training samples: bench_data"


def make_bag(out: Path, frames: int, storage: str) -> tuple[Path, str]:
    from depth_perception.synth import make_synthetic_bags

    bags = make_synthetic_bags(out, frames=frames, size=(1280, 384),
                               conditions=("day-clear",), seed=0, storage=storage)
    return Path(bags[0]), "make_synthetic_bags"


def read_all(seq) -> tuple[int, float]:
    start = time.perf_counter()
    for s in seq:
        _ = s.image, s.lidar_depth
    return len(seq), time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
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
