"""Per-frame cost of the depth node's temporal fusion and of its confidence image.

    .venv/bin/python bench/bench_fusion.py [--size 640x480] [--grids 686x518,320x240]
        [--model MODEL.onnx] [--repeat 50] [--record]

One camera (f = 0.8 x width) driving 1 m per frame towards a street-like scene: a road
plane 1.5 m below the camera and a wall 40-60 m ahead, the prediction off by 3 % noise
per pixel, so nearly every pixel agrees and is blended (the expensive path). Timed per
frame after a warm-up, single-threaded OpenCV and numpy as in the node's worker, on
each grid the fusion can run on:

* ``camera``: ``TemporalFusion.update`` on the camera-resolution depth (recorded depth
  in ``evaluate``; a backend that returns camera-resolution depth);
* each model grid WxH (``--grids``; ``--model``: the grid the estimator plans for that
  model at this camera): ``DepthEstimator.fuse`` as the node runs it, the fusion on the
  model's grid plus bringing the fused depth to camera resolution with the range
  marking (the model replaced by a fixed output at that grid);
* the temporal-agreement confidence of that frame at camera resolution (computed when
  asked for: the node publishes it only while subscribed).

Target: fusion at most 3 ms at 640x480 at the model's resolution.
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
TARGET_MS = 3.0


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


def noisy_frames(width: int, height: int, n: int, seed: int = 0) -> tuple:
    """(Intrinsics, [n] [H,W] depths): the scene 40-60 m ahead with 3 % noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        K, truth = scene(width, height, 60.0 - k % 20)
        frames.append((truth * (1 + 0.03 * rng.standard_normal(truth.shape))
                       ).astype(np.float32))
    return K, frames


def time_frames(fuse, frames, warmup: int = 4) -> tuple[list, list, list]:
    """(fusion ms, confidence ms, share blended) per frame of ``fuse(k, T) -> result``."""
    from depth_perception.data.tf import make_transform

    step = make_transform((0.0, 0.0, -1.0))                  # T_cur_prev: 1 m forward
    fuse(0, None)
    update_ms, confidence_ms, fused = [], [], []
    for k in range(1, len(frames)):
        t0 = time.perf_counter()
        out = fuse(k, step)
        t1 = time.perf_counter()
        out.confidence
        t2 = time.perf_counter()
        if k > warmup:
            update_ms.append((t1 - t0) * 1e3)
            confidence_ms.append((t2 - t1) * 1e3)
            fused.append(out.fused)
    return update_ms, confidence_ms, fused


def camera_grid(width: int, height: int, n: int):
    from depth_perception.runtime.fusion import TemporalFusion

    K, frames = noisy_frames(width, height, n)
    fusion = TemporalFusion()
    return time_frames(lambda k, T: fusion.update(frames[k], K, T), frames)


def model_grid(width: int, height: int, grid: tuple[int, int], n: int):
    """Through DepthEstimator.fuse, the model replaced by the scene at ``grid``."""
    from bench_runtime import FixedOutput
    from depth_perception.metadata import ModelMetadata
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.runtime.fusion import TemporalFusion

    K, _ = scene(width, height, 60.0)
    _, outputs = noisy_frames(*grid, n)
    meta = ModelMetadata(output_kind="metric_depth", min_depth=0.1, max_depth=80.0,
                         input_width=grid[0], input_height=grid[1], size_multiple=1)
    backend = FixedOutput(outputs[0][None, None], meta)
    est = DepthEstimator(backend, meta)
    rgb = np.zeros((height, width, 3), np.uint8)
    fusion = TemporalFusion()
    results = []
    for out in outputs:                                     # the estimates, not timed
        backend.output = out[None, None]
        results.append(est.estimate(rgb, K))
    assert results[0].prepared.model_size == grid, results[0].prepared.model_size
    return time_frames(lambda k, T: est.fuse(fusion, results[k], T), outputs)


def planned_grid(model: str, width: int, height: int) -> tuple[int, int]:
    """The model input the estimator plans for ``model`` at this camera."""
    from depth_perception.runtime.estimator import DepthEstimator

    K, _ = scene(width, height, 60.0)
    with DepthEstimator.load(model, backend="onnxruntime") as est:
        return tuple(est.preprocessor.geometry(K)[1])


def measure(args) -> int:
    import cv2

    cv2.setNumThreads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    grids = [tuple(int(v) for v in g.lower().split("x")) for g in args.grids.split(",") if g]
    named = [(f"model {w}x{h}", (w, h)) for w, h in grids]
    if args.model:
        w, h = planned_grid(args.model, width, height)
        named.append((f"model {w}x{h} ({Path(args.model).name})", (w, h)))
    n = args.repeat + 5
    print(f"temporal fusion for a {width}x{height} camera, {args.repeat} frames, OpenCV "
          f"threads 1, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'fusion grid':34s} {'fusion ms (median/p90/min)':>28s} "
          f"{'confidence ms':>14s} {'blended':>8s}")
    verdicts = []
    for name, run in [(f"camera {width}x{height}", lambda: camera_grid(width, height, n))] + [
            (name, lambda g=g: model_grid(width, height, g, n)) for name, g in named]:
        update_ms, confidence_ms, fused = run()
        med = float(np.median(update_ms))
        print(f"{name:34s} {med:8.2f} {np.percentile(update_ms, 90):8.2f} "
              f"{np.min(update_ms):8.2f}   {np.median(confidence_ms):12.2f} "
              f"{np.mean(fused):8.3f}")
        verdicts.append(f"{name}: {'met' if med <= TARGET_MS else 'not met'}")
    print(f"target {TARGET_MS:g} ms for the fusion (median) — " + "; ".join(verdicts))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x480", help="camera WxH (default 640x480)")
    parser.add_argument("--grids", default="686x518,320x240",
                        help="model grids WxH to fuse on, comma-separated (default "
                             "686x518: a DINOv2 model's 518 short side; 320x240)")
    parser.add_argument("--model", default=None,
                        help="also the grid the estimator plans for this model (ONNX)")
    parser.add_argument("--repeat", type=int, default=50, help="timed frames (default 50)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


if __name__ == "__main__":
    raise SystemExit(main())
