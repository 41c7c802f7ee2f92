"""Lens distortion through the depth node: one synthetic drive rendered twice, through a
pinhole camera and through a plumb_bob lens (k1 = -0.3 by default), one model.

    .venv/bin/python bench/bench_rectify.py [--model M.onnx] [--frames 30] [--seed 5]

Each frame of the bag (image + its CameraInfo, as the camera driver publishes them) goes
over DDS into a real ``depth_node`` (in this process, its own context); the published
``depth/image``, ``depth/camera_info`` and ``points`` of that frame are scored:

* abs_rel of the depth image against ``/ground_truth/depth`` (the rectified camera's);
* the cloud against LiDAR: the organized cloud decoded from its bytes, each LiDAR return
  (projected into the published camera, motion compensated, as ``evaluate`` does) against
  the cloud point of its pixel; median of |z_cloud - z_lidar| / z_lidar;

for the pinhole drive, the lens drive with ``input_image:=raw`` (rectified by the node)
and the lens drive with ``input_image:=ignore_distortion`` (K on the raw image).
Results go to bench/RESULTS.md by hand (date, commit, machine, load).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from depth_perception import conversions
from depth_perception.data.samples import BagSequence, SampleConfig
from depth_perception.metrics import compute_depth_metrics, valid_mask
from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "A lens through the node: bench_rectify"


def fit_model(path: Path, bags_dir: Path, size, seed: int, steps: int,
              blur: tuple = (0.7, 1.2)) -> Path:
    """A small image-dependent metric model, fitted to the ground truth of one pinhole
    drive of another seed (no weights to download; a random model barely looks at the
    image): a 5-layer CNN on log depth, L1, Adam, on the sharp renders plus copies
    blurred by ``blur`` sigmas; exported to ONNX (fixed input size, the package's
    metadata)."""
    import cv2
    import torch
    from torch import nn

    from depth_perception.metadata import ModelMetadata
    from depth_perception.runtime.onnx_metadata import write_onnx_metadata
    from depth_perception.synth import SynthConfig, make_synthetic_bags

    torch.manual_seed(0)
    bag = bags_dir / "train" / "day-clear"
    if not (bag / "metadata.yaml").is_file():
        bag, = make_synthetic_bags(bags_dir / "train", frames=60, size=size,
                                   conditions=("day-clear",), seed=seed, overwrite=True,
                                   config=SynthConfig.varied(seed, size=size))
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))
    frames = [seq[k] for k in range(len(seq))]
    # sharp renders and blurred copies (sigma 0.7 / 1.2 px): camera images are never
    # pixel-sharp, and a model that only saw sharp renders fails on any resampling
    images = [f.image for f in frames]
    for sigma in blur:
        images += [cv2.GaussianBlur(f.image, (0, 0), sigma) for f in frames]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    gt = np.stack([f.gt_depth for f in frames] * (1 + len(blur)))        # NaN sky
    y = torch.from_numpy(np.log(np.clip(np.nan_to_num(gt, nan=80.0), 0.5, 80.0)))[:, None]

    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(block(3, 24, 2), block(24, 48, 2), block(48, 64, 2),
                                     block(64, 64, 1))
            self.dec = nn.Sequential(nn.Upsample(scale_factor=8, mode="bilinear"),
                                     block(64 + 3, 32, 1), nn.Conv2d(32, 1, 3, 1, 1))

        def forward(self, image):                                   # [B,3,H,W] -> [B,1,H,W]
            f = self.dec[0](self.enc(image))
            return torch.exp(self.dec[2](self.dec[1](torch.cat([f, image], 1))) + 2.3)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for step in range(steps):
        idx = torch.randint(0, len(x), (8,))
        loss = (torch.log(net(x[idx])) - y[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    w, h = size
    torch.onnx.export(net, torch.zeros(1, 3, h, w), str(path), input_names=["image"],
                      output_names=["depth"], opset_version=17, dynamo=False)
    write_onnx_metadata(path, ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0),
                                            std=(1, 1, 1), min_depth=0.5, max_depth=80.0,
                                            input_height=h, input_width=w))
    print(f"model: {steps} steps on drive seed {seed}, last loss {float(loss):.3f} (L1 log)")
    return path


def make_drives(out: Path, frames: int, seed: int, size, distortion: str) -> dict:
    from depth_perception.rectify import parse_distortion
    from depth_perception.synth import SynthConfig, make_synthetic_bags

    kw = dict(frames=frames, size=size, conditions=("day-clear",), seed=seed,
              config=SynthConfig.varied(seed, size=size), overwrite=True)
    lenses = {"pinhole": None, "lens": parse_distortion(distortion)}
    bags = {name: out / name / "day-clear" for name in lenses}
    for name, lens in lenses.items():       # an earlier run's drive in --bags is reused
        if not (bags[name] / "metadata.yaml").is_file():
            make_synthetic_bags(out / name, **kw, distortion=lens)
    return bags


def sharp_mask(cal, threshold: float = 0.5) -> np.ndarray:
    """[H,W] bool: rectified pixels where the lens keeps at least ``threshold`` of the
    pinhole's pixel density (area magnification det(d raw / d rectified)); elsewhere the
    raw image holds fewer pixels than the rectified one shows, which no rectification
    gives back."""
    import cv2

    K = np.reshape(cal.K, (3, 3))
    mx, my = cv2.initUndistortRectifyMap(K, np.asarray(cal.D), np.reshape(cal.R, (3, 3)),
                                         np.reshape(cal.P, (3, 4))[:, :3],
                                         (cal.width, cal.height), cv2.CV_32FC1)
    (xu, xv), (yu, yv) = np.gradient(mx, axis=(1, 0)), np.gradient(my, axis=(1, 0))
    return np.abs(xu * yv - xv * yu) >= threshold


def through_node(bag: Path, model: str, input_image: str, timeout: float = 60.0,
                 sharp: np.ndarray | None = None) -> dict:
    """Every frame of ``bag`` through a depth node; returns the metrics (see module doc)."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from depth_perception.ros.depth_node import DepthNode
    from depth_perception.ros.lifetime import Spinner, init, make_executor, shutdown_lifecycle

    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=True,
                                        with_gt=True, input_image="raw"))
    reader = seq.reader
    context = rclpy.Context()
    init(context=context)
    spin = Spinner(make_executor(threads=2, context=context), "bench_rectify")
    got: dict[int, dict] = {}
    cond = threading.Condition()

    def keep(kind):
        def callback(msg):
            with cond:
                got.setdefault(conversions.stamp_to_ns(msg.header.stamp), {})[kind] = msg
                cond.notify_all()
        return callback

    node = DepthNode(context=context, parameter_overrides=[
        Parameter("model", value=model), Parameter("backend", value="onnxruntime"),
        Parameter("input_image", value=input_image), Parameter("queue_size", value=100)])
    io = rclpy.create_node("bench_rectify_io", context=context)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subs = [io.create_subscription(t, name, keep(kind), reliable) for t, name, kind in
            ((Image, "/depth/image", "depth"), (CameraInfo, "/depth/camera_info", "info"),
             (PointCloud2, "/points", "points"))]
    pub_img = io.create_publisher(Image, "/image", reliable)
    pub_info = io.create_publisher(CameraInfo, "/camera_info", reliable)
    for n in (node, io):
        spin.executor.add_node(n)
    spin.start()
    gt_rel, lidar_rel, abs_rel, abs_rel_sharp = [], [], [], []
    try:
        deadline = time.monotonic() + timeout
        while not (pub_img.get_subscription_count() and subs[2].get_publisher_count()
                   and node.state == "active"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"depth node not ready: {node.problem or node.state}")
            time.sleep(0.05)
        for i in range(len(reader.stamps("image"))):
            stamp = int(reader.stamps("image")[i])
            for _ in range(20):            # best-effort input: resend until the frame is out
                pub_info.publish(_rclpy_msg(reader, "camera_info", i, CameraInfo))
                pub_img.publish(_rclpy_msg(reader, "image", i, Image))
                with cond:
                    if cond.wait_for(lambda: len(got.get(stamp, {})) == 3, 2.0):
                        break
            out = got.pop(stamp, None)
            if out is None or len(out) < 3:
                continue
            depth = conversions.image_to_depth(out["depth"])
            gt = seq.gt_depth(i)
            # as the evaluator scores: where the node published a usable depth
            scored = valid_mask(gt, 0.1, 80.0) & np.isfinite(depth) & (depth > 0)
            m = compute_depth_metrics(gt, depth, 0.1, 80.0, mask=scored)
            abs_rel.append(m["abs_rel"])
            if sharp is not None:
                abs_rel_sharp.append(compute_depth_metrics(gt, depth, 0.1, 80.0,
                                                           mask=scored & sharp)["abs_rel"])
            lidar = seq.lidar_depth(i)                       # [H,W] z, rectified camera
            K = np.reshape(out["info"].k, (3, 3))
            assert np.allclose(K, seq.intrinsics.K), "published K is not the rectified camera"
            xyz = conversions.cloud_to_numpy(out["points"]).reshape(
                out["points"].height, out["points"].width, 3)
            z = xyz[..., 2]
            ok = np.isfinite(lidar) & np.isfinite(z) & (lidar > 0.1)
            lidar_rel.append(np.abs(z[ok] - lidar[ok]) / lidar[ok])
            ok = np.isfinite(gt) & np.isfinite(z)
            gt_rel.append(np.abs(z[ok] - gt[ok]) / gt[ok])
    finally:
        spin.stop(timeout=10.0)
        shutdown_lifecycle(node)
        node.destroy_node()
        io.destroy_node()
        context.try_shutdown()
    lidar_all = np.concatenate(lidar_rel) if lidar_rel else np.array([np.nan])
    return {"frames": len(abs_rel), "abs_rel": float(np.mean(abs_rel)),
            "abs_rel_sharp": float(np.mean(abs_rel_sharp)) if abs_rel_sharp else np.nan,
            "cloud_lidar_median_rel": float(np.median(lidar_all)),
            "cloud_lidar_points": int(lidar_all.size)}


def _rclpy_msg(reader, key: str, index: int, cls):
    """The bag's message re-made as the rclpy class (same fields, CDR round trip)."""
    from rclpy.serialization import deserialize_message

    msg = reader.message(key, index)
    name = f"sensor_msgs/msg/{cls.__name__}"
    return deserialize_message(bytes(reader.typestore.serialize_cdr(msg, name)), cls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="ONNX model; default: fit a small CNN to another drive's ground "
                             "truth (--fit-steps, --fit-seed)")
    parser.add_argument("--fit-steps", type=int, default=400)
    parser.add_argument("--fit-seed", type=int, default=11)
    parser.add_argument("--fit-blur", default="0.7,1.2",
                        help="Gaussian blur sigmas [px] of the extra training copies "
                             "('' = sharp renders only)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--size", default="320x96")
    parser.add_argument("--distortion", default="plumb_bob:-0.3")
    parser.add_argument("--bags", type=Path, default=None,
                        help="folder for the drives (default: a temporary one)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    from depth_perception.camera import parse_size

    with tempfile.TemporaryDirectory() as tmp:
        out = args.bags or Path(tmp)
        t0 = time.perf_counter()
        size = parse_size(args.size)
        blur = tuple(float(v) for v in args.fit_blur.split(",") if v.strip())
        model = args.model or str(fit_model(out / "fitted.onnx", out, size, args.fit_seed,
                                            args.fit_steps, blur))
        bags = make_drives(out, args.frames, args.seed, size, args.distortion)
        print(f"drives ({args.frames} frames, {args.size}, seed {args.seed}, lens "
              f"{args.distortion}) in {time.perf_counter() - t0:.0f} s; load "
              f"{os.getloadavg()[0]:.2f}")
        rows = [("pinhole drive, input_image raw", bags["pinhole"], "raw"),
                ("lens drive, input_image raw (rectified)", bags["lens"], "raw"),
                ("lens drive, input_image ignore_distortion", bags["lens"],
                 "ignore_distortion")]
        results = {}
        from depth_perception.data.bag import BagReader

        with BagReader(bags["lens"]) as reader:
            sharp = sharp_mask(reader.calibration(0))
        print(f"sharp region (lens keeps >= 0.5 of the pinhole's pixel density): "
              f"{100 * sharp.mean():.0f} % of the image")
        for name, bag, mode in rows:
            r = results[name] = through_node(bag, model, mode, sharp=sharp)
            print(f"{name:45s} frames {r['frames']:3d}  abs_rel {r['abs_rel']:.4f}  "
                  f"(sharp region {r['abs_rel_sharp']:.4f})  "
                  f"cloud vs LiDAR median rel {r['cloud_lidar_median_rel']:.4f} "
                  f"({r['cloud_lidar_points']} returns)")
        a, b, c = (results[n] for n, _, _ in rows)
        d_abs = b["abs_rel"] / a["abs_rel"] - 1
        d_cloud = b["cloud_lidar_median_rel"] - a["cloud_lidar_median_rel"]
        print(f"rectified lens vs pinhole: abs_rel {100 * d_abs:+.2f} % (target within 2 %); "
              f"cloud median rel {100 * d_cloud:+.2f} points (target within 1 %)")
        print(f"sharp region: rectified lens vs pinhole abs_rel "
              f"{100 * (b['abs_rel_sharp'] / a['abs_rel_sharp'] - 1):+.2f} %, rectification "
              f"off {100 * (c['abs_rel_sharp'] / a['abs_rel_sharp'] - 1):+.2f} %")
        print(f"rectification off: abs_rel {100 * (c['abs_rel'] / a['abs_rel'] - 1):+.2f} % "
              f"against the pinhole drive; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
