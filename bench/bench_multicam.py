"""Four cameras in one depth node against four single-camera nodes: memory and rate.

    .venv/bin/python bench/bench_multicam.py                  # both models, 12 s windows
    .venv/bin/python bench/bench_multicam.py --models unet --seconds 20

For each model (a ViT-S sized Depth Anything, random weights; the convolutional U-Net
of bench_quantize, untrained; both from ``depth_perception_training.tiny``), exported to ONNX with a dynamic batch
dimension and run by onnxruntime (CPU): start

* one ``depth_node`` process with ``cameras:=[cam0..cam3]``, and
* four ``depth_node`` processes, one camera each (``cameras:=[camI]``),

publish 320x240 frames (image + CameraInfo) on the four cameras at ``--rate`` Hz each
from this process (a quarter period apart), wait until every camera has an output, then count each camera's
depth outputs over ``--seconds`` and read the nodes' resident memory (sum of VmRSS of
the node processes), ``--repeats`` times, the two layouts alternated. Prints, with the
load average: RSS sum, frames per second per camera (min / mean) of each run, and the
one-node / four-nodes ratios of the medians (targets: RSS <= 0.4x, fps >= 1x). On a
shared machine four processes (each with onnxruntime's default thread count) take a
larger share of the CPU from other users than one does: read fps at low load. Own ROS
domain, localhost discovery; no asserts.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Several cameras, one node: bench_multicam"


CAMERAS = ("cam0", "cam1", "cam2", "cam3")
WIDTH, HEIGHT = 320, 240            # camera frames
VIT_SIZE = (112, 154)               # model input (h, w), multiples of 14
UNET_SIZE = (128, 160)              # model input (h, w), multiples of 8


def build_models(folder: Path, which: list[str]) -> dict[str, Path]:
    """The bench models as ONNX files with a dynamic batch dimension."""
    from depth_perception_training.tiny import (export_depth_onnx, unet_depth_module,
                                                unet_metadata, vit_s_depth_anything_onnx)

    models = {}
    if "vit_s" in which:
        models["vit_s"] = vit_s_depth_anything_onnx(folder / "vit_s.onnx", *VIT_SIZE,
                                                    dynamic_batch=True)
    if "unet" in which:
        meta = unet_metadata(*UNET_SIZE)
        models["unet"] = export_depth_onnx(unet_depth_module(), folder / "unet.onnx",
                                           *UNET_SIZE, meta, meta.input_name,
                                           meta.output_name, dynamic_batch=True)
    return models


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_nodes(model: Path, groups: list[list[str]], env: dict) -> list[subprocess.Popen]:
    """One depth_node process per camera group."""
    procs = []
    for i, cams in enumerate(groups):
        cameras = "[" + ",".join(f"'{c}'" for c in cams) + "]"
        cmd = [sys.executable, "-m", "depth_perception.ros.depth_node", "--ros-args",
               "-r", f"__node:=depth_node_{i}", "-p", f"model:={model}",
               "-p", "backend:=onnxruntime", "-p", f"cameras:={cameras}",
               "--log-level", "warn"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    return procs


class Rig:
    """Publishes every camera's frames at ``rate`` Hz and counts its depth outputs."""

    def __init__(self, rate: float):
        import rclpy
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        from depth_perception.camera import Intrinsics
        from depth_perception.ros.lifetime import make_executor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_multicam", context=self.context)
        self.K = Intrinsics(fx=260.0, fy=260.0, cx=159.5, cy=119.5, width=WIDTH,
                            height=HEIGHT)
        rng = np.random.default_rng(0)
        self.rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.pubs = {c: (self.node.create_publisher(Image, f"/{c}/image",
                                                    qos_profile_sensor_data),
                         self.node.create_publisher(CameraInfo, f"/{c}/camera_info",
                                                    qos_profile_sensor_data))
                     for c in CAMERAS}
        self.counts = {c: 0 for c in CAMERAS}
        self._lock = threading.Lock()
        for c in CAMERAS:
            self.node.create_subscription(Image, f"/{c}/depth/image",
                                          lambda msg, c=c: self._count(c), 10)
        self.executor = make_executor(context=self.context)
        self.executor.add_node(self.node)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        # one timer per camera, a quarter period apart: cameras are not phase-locked, and
        # four 230 kB images sent back to back overflow the DDS transport buffers (the
        # first cameras of the burst then lose frames, in either layout)
        self.timers = []
        for c in CAMERAS:
            self.timers.append(self.node.create_timer(1.0 / rate,
                                                      lambda c=c: self._publish(c)))
            time.sleep(0.25 / rate)

    def _spin(self) -> None:
        while not self._closing.is_set():
            self.executor.spin_once(timeout_sec=0.1)

    def _count(self, camera: str) -> None:
        with self._lock:
            self.counts[camera] += 1

    def _publish(self, camera: str) -> None:
        from std_msgs.msg import Header

        from depth_perception import conversions

        image_pub, info_pub = self.pubs[camera]
        header = Header(stamp=self.node.get_clock().now().to_msg(),
                        frame_id=f"{camera}_optical")
        info_pub.publish(conversions.intrinsics_to_camera_info(self.K, header))
        image_pub.publish(conversions.numpy_to_image(self.rgb, "rgb8", header))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self._closing.set()
        self._thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


def run_config(model: Path, groups: list[list[str]], rate: float, seconds: float,
               env: dict) -> dict:
    """fps per camera and the nodes' RSS sum for one process layout."""
    procs = start_nodes(model, groups, env)
    rig = Rig(rate)
    try:
        deadline = time.monotonic() + 180.0
        while min(rig.snapshot().values()) < 3:          # every node up and producing
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                errors = [p.stderr.read()[-2000:] for p in procs if p.poll() is not None]
                raise RuntimeError(f"nodes did not produce depth on every camera: "
                                   f"{rig.snapshot()} {errors}")
            time.sleep(0.2)
        before, t0 = rig.snapshot(), time.monotonic()
        time.sleep(seconds)
        after, t1 = rig.snapshot(), time.monotonic()
        rss = [rss_mb(p.pid) for p in procs]
    finally:
        rig.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    fps = {c: (after[c] - before[c]) / (t1 - t0) for c in CAMERAS}
    return {"rss": rss, "fps": fps}


def median(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit_s,unet", help="comma list: vit_s, unet")
    parser.add_argument("--seconds", type=float, default=12.0, help="counting window")
    parser.add_argument("--rate", type=float, default=15.0, help="frames/s per camera")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each layout, alternated (the machine is shared: "
                             "medians over alternated runs)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 200)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", HF_HUB_OFFLINE="1")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores; "
          f"camera {WIDTH}x{HEIGHT}, {args.rate:g} Hz x 4 cameras, window {args.seconds:g} s, "
          "onnxruntime CPU, default intra-op threads per process")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.models.split(","))
        for name, path in models.items():
            size = VIT_SIZE if name == "vit_s" else UNET_SIZE
            runs = {"1 node x 4 cameras": [], "4 nodes x 1 camera": []}
            for _ in range(args.repeats):
                for label, groups in (("1 node x 4 cameras", [list(CAMERAS)]),
                                      ("4 nodes x 1 camera", [[c] for c in CAMERAS])):
                    r = run_config(path, groups, args.rate, args.seconds, env)
                    runs[label].append(r)
                    fps = list(r["fps"].values())
                    print(f"{name} ({size[1]}x{size[0]} input) {label}: RSS "
                          f"{sum(r['rss']):.0f} MB "
                          f"({' + '.join(f'{x:.0f}' for x in r['rss'])}), fps per camera "
                          f"min {min(fps):.1f} mean {statistics.mean(fps):.1f} "
                          f"({', '.join(f'{x:.1f}' for x in fps)}); load "
                          f"{os.getloadavg()[0]:.2f}", flush=True)
            rows.append((name, *runs.values()))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    for name, one, four in rows:
        rss = (median(one, lambda r: sum(r["rss"]))
               / median(four, lambda r: sum(r["rss"])))
        fps = (median(one, lambda r: statistics.mean(r["fps"].values()))
               / max(median(four, lambda r: statistics.mean(r["fps"].values())), 1e-9))
        print(f"{name}: one node / four nodes (medians of {args.repeats} runs each): RSS "
              f"{rss:.2f}x (target <= 0.4x: "
              f"{'met' if rss <= 0.4 else 'NOT met'}), mean fps {fps:.2f}x (target >= 1x: "
              f"{'met' if fps >= 1.0 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
