"""Per-frame cost of the depth node's temporal fusion and of its confidence image.

    .venv/bin/python bench/bench_fusion.py [--size 640x480] [--repeat 50] [--record]

One camera (f = 0.8 x width) driving 1 m per frame towards a street-like scene: a road
plane 1.5 m below the camera and a wall 40 m ahead, the prediction off by 3 % noise
per pixel, so nearly every pixel agrees and is blended (the expensive path). Timed per
frame after a warm-up, single-threaded OpenCV and numpy as in the node's worker:

* ``TemporalFusion.update`` (carry the previous fused depth, agree, blend or reset);
* the temporal-agreement confidence of that frame (computed when asked for);
* both, what the node spends on a frame with ``temporal_fusion:=true`` and a
  ``confidence/image`` subscriber; the target is 3 ms at 640x480.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Temporal fusion and its confidence per frame: bench_fusion"


def scene(width: int, height: int, distance: float):
    """(Intrinsics, [H,W] float32 depth): road 1.5 m below, wall ``distance`` ahead."""
    from depth_perception.camera import Intrinsics

    f = 0.8 * width
    K = Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
    v = np.arange(height, dtype=np.float32)[:, None] - K.cy                  # [H,1]
    with np.errstate(divide="ignore"):
        road = np.where(v > 0, 1.5 * f / v, np.inf)                          # [H,1]
    depth = np.minimum(np.broadcast_to(road, (height, width)), distance)
    return K, depth.astype(np.float32)


def measure(args) -> int:
    import cv2

    from depth_perception.data.tf import make_transform
    from depth_perception.runtime.fusion import TemporalFusion

    cv2.setNumThreads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    step = make_transform((0.0, 0.0, -1.0))                  # T_cur_prev: 1 m forward
    fusion = TemporalFusion()
    frames = []
    for k in range(args.repeat + 5):
        K, truth = scene(width, height, 60.0 - k % 20)
        frames.append((truth * (1 + 0.03 * rng.standard_normal(truth.shape))
                       ).astype(np.float32))
    fusion.update(frames[0], K, None)
    update_ms, confidence_ms, fused = [], [], []
    for k, depth in enumerate(frames[1:]):
        t0 = time.perf_counter()
        out = fusion.update(depth, K, step)
        t1 = time.perf_counter()
        out.confidence
        t2 = time.perf_counter()
        if k >= 4:                                           # warm-up frames left out
            update_ms.append((t1 - t0) * 1e3)
            confidence_ms.append((t2 - t1) * 1e3)
            fused.append(out.fused)
    total = np.add(update_ms, confidence_ms)
    print(f"temporal fusion at {width}x{height}, {len(update_ms)} frames, OpenCV threads 1, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"share of pixels blended: {np.mean(fused):.3f}")
    for name, ms in (("fusion update", update_ms), ("confidence", confidence_ms),
                     ("fusion + confidence", total)):
        print(f"{name:20s} median {np.median(ms):6.2f} ms   p90 {np.percentile(ms, 90):6.2f} ms"
              f"   min {np.min(ms):6.2f} ms")
    print(f"target 3 ms for the fusion: {'met' if np.median(update_ms) <= 3.0 else 'not met'}"
          " (median)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x480", help="camera WxH (default 640x480)")
    parser.add_argument("--repeat", type=int, default=50, help="timed frames (default 50)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


if __name__ == "__main__":
    raise SystemExit(main())
