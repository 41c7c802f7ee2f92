"""Per-frame cost of the depth node around the model, and end-to-end latency.

    .venv/bin/python bench/bench_runtime.py               # both parts
    .venv/bin/python bench/bench_runtime.py --skip-model  # only the non-model stages

For 640x480 and 1280x720 frames of a distorted camera (plumb_bob, k1 = -0.3): decode
(sensor_msgs/Image -> RGB), CameraInfo -> calibration and the cached rectifier ("K"),
rectification straight to the model input with the cached maps ("rect", the raw image
rectified, cropped and resized in one remap; target <= 2 ms at 1280x720; beside it the
plain resize of an undistorted camera and the full-size rectification; the one-off map
computation is printed apart), preprocess, postprocess, depth message, colourised depth,
point cloud at stride 1 and 2 — everything the node does except the model forward — and a plain copy of
as many bytes as the stride-1 cloud, for comparison (target: cloud within 3x of the
copy; the costmap cloud filters of ``depth_perception.cloud`` at 640x480 on a road
scene; whole frame under 5 ms at 1280x720 with a stride-2 cloud; colourised depth under
2 ms). The 1-minute load average is printed with the figures. Then end-to-end
(message in -> depth, info and cloud messages out) with onnxruntime on a ViT-S sized
Depth Anything (random weights, exported to ONNX at the preprocessor's input size).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from depth_perception import conversions, rectify
from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec
from depth_perception.runtime.processing import Preprocessor
from depth_perception.bench_log import add_record_argument, run_and_record
from depth_perception.colorize import colorize_depth

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"

SIZES = ((640, 480), (1280, 720))


def timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in ms (one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cpu_ms(fn, repeat: int) -> float:
    """Median process CPU time of ``fn()`` in ms with one OpenCV thread (one warm-up
    call): the work itself, which other processes on the cores inflate far less than
    the wall time."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append((time.process_time() - t0) * 1e3)
    finally:
        cv2.setNumThreads(threads)
    return statistics.median(times)


def frame(width: int, height: int):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    header = Header(stamp=Time(sec=1, nanosec=0), frame_id="camera_optical_frame")
    K = Intrinsics(0.8 * width, 0.8 * width, width / 2 - 0.5, height / 2 - 0.5, width, height)
    image = conversions.numpy_to_image(rgb, "rgb8", header)
    lens = rectify.Calibration.pinhole(K, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))
    info = conversions.calibration_to_camera_info(lens, header)
    depth = rng.uniform(0.5, 60.0, (height, width)).astype(np.float32)
    depth[: height // 5] = np.inf  # sky
    return header, image, info, K, depth


class FixedOutput(Backend):
    """A backend that returns one precomputed output (no model): the estimator's own
    pre- and post-processing timed as the node runs them."""

    def __init__(self, output: np.ndarray, metadata: ModelMetadata):
        self.output, self.metadata = output, metadata
        self.name, self.precision, self.device = "fixed", "fp32", "cpu"
        self.inputs = {metadata.input_name: TensorSpec((1, 3, None, None), "float32")}
        self.outputs = {metadata.output_name: TensorSpec((1, 1, None, None), "float32")}

    def run(self, feeds):
        return {self.metadata.output_name: self.output.copy()}   # a fresh array, as ORT


def estimator_ms(output: np.ndarray, metadata: ModelMetadata, rgb, rectifier,
                 repeat: int) -> tuple[float, float]:
    """Median (preprocess_ms, postprocess_ms) of DepthEstimator.estimate on the raw
    frame with its rectifier, the model replaced by ``output``."""
    from depth_perception.runtime.estimator import DepthEstimator

    est = DepthEstimator(FixedOutput(output, metadata), metadata)
    runs = [est.estimate(rgb, rectifier.intrinsics, rectifier=rectifier).timings
            for _ in range(repeat + 1)][1:]
    return (statistics.median(t["preprocess_ms"] for t in runs),
            statistics.median(t["postprocess_ms"] for t in runs))


def bench_stages(repeat: int, metadata: ModelMetadata) -> None:
    print(f"\n== per-frame stages without the model (median of {repeat}, ms; load "
          f"{os.getloadavg()[0]:.2f}) ==")
    print(f"{'size':>10} {'input':>8} {'decode':>7} {'K':>6} {'rect':>6} {'resize':>6} "
          f"{'full':>6} {'maps':>6} {'prep':>7} {'post':>7} {'depth':>7} "
          f"{'color':>7} {'cloud1':>7} {'cloud2':>7} {'copy1':>7} {'c1/copy':>7} "
          f"{'total2':>7}")
    cpu_lines = []
    for width, height in SIZES:
        header, image, info, K, depth = frame(width, height)
        pre = Preprocessor(metadata)
        rgb = conversions.image_to_rgb(image)
        crop, size = pre.geometry(K)
        rectifier = rectify.rectifier(conversions.camera_info_to_calibration(info))
        tic = time.perf_counter()
        rectifier.resample(rgb, crop, size)
        maps_ms = (time.perf_counter() - tic) * 1e3          # once per calibration and size
        prepared = pre.prepare(rgb, K, rectifier)
        h, w = prepared.tensor.shape[2:]
        output = np.random.default_rng(1).uniform(1, 50, (1, 1, h, w)).astype(np.float32)
        cloud = conversions.depth_to_cloud(depth, K, header, stride=1)
        raw = np.frombuffer(bytes(cloud.data), np.uint8)
        rectifier.apply(rgb)                                  # its maps, for "full"
        t = {
            "decode": timeit(lambda: conversions.image_to_rgb(image, copy=False), repeat),
            "K": timeit(lambda: rectify.rectifier(conversions.camera_info_to_calibration(info))
                        .intrinsics, repeat),
            "rect": timeit(lambda: rectifier.resample(rgb, crop, size), repeat),
            "resize": timeit(lambda: rectify.crop_resize(rgb, crop, size), repeat),
            "full": timeit(lambda: rectifier.apply(rgb), repeat),
            "depth": timeit(lambda: conversions.depth_to_image(depth, header), repeat),
            "color": timeit(lambda: conversions.numpy_to_image(
                colorize_depth(depth, 0.5, 80.0), "bgr8", header), repeat),
            "cloud1": timeit(lambda: conversions.depth_to_cloud(depth, K, header, stride=1),
                             repeat),
            "cloud2": timeit(lambda: conversions.depth_to_cloud(depth, K, header, stride=2),
                             repeat),
            "copy1": timeit(lambda: raw.copy(), repeat),
        }
        t["prep"], t["post"] = estimator_ms(output, metadata, rgb, rectifier, repeat)
        total2 = t["decode"] + t["K"] + t["prep"] + t["post"] + t["depth"] + t["cloud2"]
        cpu = {name: cpu_ms(fn, repeat) for name, fn in (
            ("rect", lambda: rectifier.resample(rgb, crop, size)),
            ("resize", lambda: rectify.crop_resize(rgb, crop, size)),
            ("full", lambda: rectifier.apply(rgb)))}
        cpu_lines.append(f"{width}x{height} -> {size[0]}x{size[1]}: rect {cpu['rect']:.2f}, "
                         f"resize {cpu['resize']:.2f}, full {cpu['full']:.2f}")
        print(f"{width}x{height:<5} {size[0]}x{size[1]:<4} {t['decode']:7.2f} {t['K']:6.3f} "
              f"{t['rect']:6.2f} {t['resize']:6.2f} {t['full']:6.2f} {maps_ms:6.1f} "
              f"{t['prep']:7.2f} "
              f"{t['post']:7.2f} {t['depth']:7.2f} {t['color']:7.2f} {t['cloud1']:7.2f} "
              f"{t['cloud2']:7.2f} {t['copy1']:7.2f} {t['cloud1'] / t['copy1']:7.1f} "
              f"{total2:7.2f}")
        if (width, height) == (1280, 720):
            ratio = t["cloud1"] / t["copy1"]
            targets = (f"targets at 1280x720: rect {t['rect']:.2f} <= 2 ms "
                       f"{'met' if t['rect'] <= 2 else 'NOT met'} (over the plain resize: "
                       f"{t['rect'] - t['resize']:+.2f} ms); total2 {total2:.2f} < 5 ms "
                       f"{'met' if total2 < 5 else 'NOT met'}; cloud1 {ratio:.1f}x copy "
                       f"<= 3x {'met' if ratio <= 3 else 'NOT met'}; colour "
                       f"{t['color']:.2f} < 2 ms {'met' if t['color'] < 2 else 'NOT met'}")
    print(f"load after: {os.getloadavg()[0]:.2f}; {targets}")
    print(f"process CPU time, 1 OpenCV thread (median of {repeat}, ms; load "
          f"{os.getloadavg()[0]:.2f}): " + "; ".join(cpu_lines))
    print("input = model input size; rect = the raw image rectified, cropped and resized to "
          "it in one remap (cached maps; what the node runs); resize = the plain resize an "
          "undistorted camera gets instead; full = rectification at full size (only for a "
          "coloured cloud); maps = the one-off maps of a new calibration and input size; "
          "prep, post = the estimator's preprocess_ms and postprocess_ms (DepthEstimator.estimate "
          "with the model's output given: rect + normalisation; check, upsample, scale, "
          "range marking); total2 = decode + K + prep + post + depth msg + "
          "stride-2 cloud (no colorized); K = CameraInfo -> calibration + cached rectifier; "
          "copy1 = np.copy of the stride-1 cloud's bytes")


def street_depth(K: Intrinsics, camera_height: float = 1.5) -> np.ndarray:
    """[H,W] depth of a road scene: sky saturated at 79.9 m above the horizon, the road
    below it (z = fy h / (v - cy)), a 6 m box with a one-pixel blended edge each side."""
    v = np.arange(K.height, dtype=np.float32)[:, None] - np.float32(K.cy)
    with np.errstate(divide="ignore"):
        road = np.float32(K.fy * camera_height) / v
    depth = np.where(v > 0, np.minimum(road, 79.9), 79.9) * np.ones((1, K.width), np.float32)
    x0, x1 = K.width // 3, K.width // 2
    top, bottom = int(K.cy - 0.3 * K.height), int(K.cy + K.fy * camera_height / 6.0)
    depth[top:bottom, x0:x1] = 6.0
    depth[top:bottom, x0 - 1] = (6.0 + depth[top:bottom, x0 - 2]) / 2   # blended pixels
    depth[top:bottom, x1] = (6.0 + depth[top:bottom, x1 + 1]) / 2
    return depth.astype(np.float32)


def bench_costmap_cloud(repeat: int) -> None:
    """The cloud filters of depth_perception.cloud at 640x480 on a road scene."""
    from depth_perception import cloud as dc

    header, _, _, K, _ = frame(640, 480)
    depth = street_depth(K)
    T = np.array([[0, 0, 1, 0.5], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], float)
    cases = {
        "plain stride1 (no filter)": (dc.CloudSettings(), None),
        "default stride1 (flying 0.1, sky)": (dc.CloudSettings(flying_jump=0.1,
                                                                sky_depth=76.0), None),
        "flying pixels only (mask)": None,
        "nav2 example (stride2, 8 m, base_link, 5 cm voxels)": (dc.CloudSettings(
            stride=2, max_range=8.0, sky_depth=76.0, flying_jump=0.1, voxel_size=0.05,
            organized=False), ("base_link", T)),
        "nav2 without voxels": (dc.CloudSettings(stride=2, max_range=8.0, sky_depth=76.0,
                                                 flying_jump=0.1, organized=False),
                                ("base_link", T)),
    }
    print(f"\n== costmap cloud at 640x480, road scene (median of {repeat}, ms; load "
          f"{os.getloadavg()[0]:.2f}) ==")
    for name, case in cases.items():
        if case is None:
            ms = timeit(lambda: dc.flying_pixels(depth, 0.1), repeat)
            print(f"{name:>55} {ms:7.2f}")
            continue
        settings, target = case
        msg = dc.costmap_cloud(depth, K, header, settings, target=target)
        n = int(np.isfinite(conversions.cloud_to_numpy(msg)).all(axis=1).sum())
        ms = timeit(lambda: dc.costmap_cloud(depth, K, header, settings, target=target),
                    repeat)
        print(f"{name:>55} {ms:7.2f}   {n} points")


def bench_end_to_end(repeat: int, short_side: int) -> None:
    import torch

    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.runtime.processing import choose_input_size
    from depth_perception_training.tiny import vit_s_depth_anything_onnx

    torch.set_num_threads(2)
    print(f"\n== end to end with onnxruntime, ViT-S Depth Anything (median of {repeat}, ms) ==")
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in SIZES:
            w, h = choose_input_size(width, height, 14, short_side=short_side)
            model = vit_s_depth_anything_onnx(Path(tmp) / f"vit_s_{h}x{w}.onnx", h, w)
            est = DepthEstimator.load(str(model), backend="onnxruntime")
            header, image, info, K, _ = frame(width, height)
            timings = []

            def one():
                t0 = time.perf_counter()
                rgb = conversions.image_to_rgb(image, copy=False)   # as the node
                lens = rectify.rectifier(conversions.camera_info_to_calibration(info))
                result = est.estimate(rgb, lens.intrinsics, rectifier=lens)
                conversions.depth_to_image(result.depth, header)
                conversions.intrinsics_to_camera_info(result.intrinsics, header)
                conversions.depth_to_cloud(result.depth, result.intrinsics, header, stride=2)
                timings.append((result.timings, (time.perf_counter() - t0) * 1e3))

            total = timeit(one, repeat)
            timings = timings[1:]  # drop the warm-up run
            model_ms = statistics.median(t["inference_ms"] for t, _ in timings)
            rest_ms = statistics.median(wall - t["inference_ms"] for t, wall in timings)
            print(f"{width}x{height}: model input {w}x{h}, end-to-end {total:.0f} ms, model "
                  f"forward {model_ms:.0f} ms, everything else {rest_ms:.1f} ms "
                  f"({est.backend.name}, {est.backend.precision}, {est.backend.device})")
            est.close()


def title(args) -> str:
    """The bench/RESULTS.md entry of this run: without the model, or with it."""
    return ("Stages around the model: bench_runtime --skip-model" if args.skip_model
            else "Stages around the model and end to end: bench_runtime")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per stage")
    parser.add_argument("--model-repeat", type=int, default=3, help="timed end-to-end runs")
    parser.add_argument("--short-side", type=int, default=364,
                        help="model input short side for the end-to-end part (default 364)")
    parser.add_argument("--skip-model", action="store_true", help="skip the end-to-end part")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, title(args))


def measure(args) -> int:
    """The bench: prints its figures."""
    metadata = ModelMetadata(output_kind="metric_depth", min_depth=0.1, max_depth=80.0)
    bench_stages(args.repeat, metadata)
    bench_costmap_cloud(args.repeat)
    if not args.skip_model:
        bench_end_to_end(args.model_repeat, args.short_side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
