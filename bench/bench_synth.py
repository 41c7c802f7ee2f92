"""Benchmark ``depth-perception synth``: seconds to render and write synthetic bags.

    .venv/bin/python bench/bench_synth.py [--frames 30] [--size 640x192] [--storage mcap]

1. each condition alone (its own bag: geometry, LiDAR, shading and writing);
2. all conditions in one run, as ``depth-perception synth`` does (geometry, LiDAR and
   the shared messages computed once per frame), with the time split by stage.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Synthetic bags: bench_synth"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", default="640x192")
    parser.add_argument("--conditions", default="day-clear,night,rain")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    parser.add_argument("--seed", type=int, default=0)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    from depth_perception.synth import (SynthConfig, SyntheticStreet, parse_size,
                                        write_synthetic_bags)

    size = parse_size(args.size)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    config = SynthConfig(size=size, seed=args.seed)
    print(f"synth bench: {args.frames} frames at {size[0]}x{size[1]}, {args.storage}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. One condition per run.
        alone = {}
        for condition in conditions:
            street = SyntheticStreet(config, frames=args.frames)
            start, cpu = time.perf_counter(), time.process_time()
            write_synthetic_bags(street, {condition: tmp / "alone" / condition}, args.storage)
            alone[condition] = time.perf_counter() - start
            cpu = time.process_time() - cpu
            print(f"  {condition:<10} alone: {alone[condition]:6.1f} s wall, {cpu:6.1f} s CPU "
                  f"({alone[condition] / args.frames * 1000:.0f} ms/frame)")
        print(f"  sum of single-condition runs: {sum(alone.values()):6.1f} s")
        # 2. All conditions in one run.
        street = SyntheticStreet(config, frames=args.frames)
        start, cpu = time.perf_counter(), time.process_time()
        timing = write_synthetic_bags(street, {c: tmp / "all" / c for c in conditions},
                                      args.storage)
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu
        size_mb = sum(f.stat().st_size for f in (tmp / "all").rglob("*") if f.is_file()) / 1e6
    print(f"  all {len(conditions)} conditions in one run: {total:6.1f} s wall, {cpu:6.1f} s CPU "
          f"({size_mb:.0f} MB written)")
    print("    geometry {geometry:.1f} s, lidar {lidar:.1f} s, serialize+write {write:.1f} s"
          .format(**timing))
    print("    shading: " + ", ".join(f"{c} {timing[c]:.1f} s" for c in conditions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
