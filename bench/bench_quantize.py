"""CPU INT8 (onnxruntime static QDQ) against FP32 onnxruntime, speed and accuracy.

    .venv/bin/python bench/bench_quantize.py                      # both models
    .venv/bin/python bench/bench_quantize.py --models unet --configs default,all

Models: a small convolutional U-Net at 640x192 (trained for ``--train-steps`` steps
on the synthetic bags' ground truth, so its depth has structure), and a ViT-S sized
Depth Anything (24.8 M backbone parameters, random weights) at 644x196. Synthetic
bags (day-clear, night, rain, 640x192) come from ``depth_perception.synth``.

For each model and each op-type configuration (``default`` = the package default,
``all`` = every op type onnxruntime can quantise, the naive setting, or a
``+``-joined list such as ``Conv+MatMul``): calibrate on frames of the bags through
the node's preprocessing, time FP32 and INT8 onnxruntime (median of ``--repeat``
runs, ``--threads`` intra-op threads), and score both against the ground-truth depth
of the bags (abs_rel). Prints a table with the machine load; no asserts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from depth_perception.metadata import ModelMetadata
from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "INT8 against FP32 onnxruntime: bench_quantize"

UNET_SIZE = (192, 640)     # (h, w)
VIT_SIZE = (196, 644)


def train_unet(module, bags, steps: int, metadata: ModelMetadata) -> None:
    """A few supervised steps on the bags' ground truth (L1 on log depth, random
    64x160 crops of the 192x640 frames: the net is fully convolutional and a crop keeps
    the focal length), so the FP32 model predicts structured depth."""
    import torch

    from depth_perception.data.bag import BagReader
    from depth_perception.models.conventions import disp_to_depth
    from depth_perception.runtime.processing import Preprocessor

    pre = Preprocessor(metadata)
    images, targets = [], []
    for bag in bags:
        reader = BagReader(bag)
        try:
            stamps = reader.stamps("image")
            for i in range(reader.count("image")):
                rgb = reader.image(i)
                j, _ = reader.nearest("gt_depth", int(stamps[i]))
                gt = reader.gt_depth(j)
                intr = reader.camera_info(reader.nearest("camera_info", int(stamps[i]))[0])
                images.append(pre.prepare(rgb, intr).tensor[0])
                targets.append(np.where(np.isfinite(gt), gt, metadata.max_depth))
        finally:
            reader.close()
    x = torch.from_numpy(np.stack(images))                                  # [N,3,H,W]
    depth = torch.from_numpy(np.stack(targets)).float().clamp(metadata.min_depth,
                                                            metadata.max_depth)[:, None]
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    rng = np.random.default_rng(0)
    h, w = 64, 160
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), size=4, replace=False))
        y0 = int(rng.integers(0, x.shape[2] - h + 1))
        x0 = int(rng.integers(0, x.shape[3] - w + 1))
        crop = (slice(None), slice(None), slice(y0, y0 + h), slice(x0, x0 + w))
        _, pred = disp_to_depth(module(x[idx][crop]), metadata.min_depth, metadata.max_depth)
        loss = (pred.log() - depth[idx][crop].log()).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  U-Net step {step}: L1 log depth {loss.item():.4f} "
                  f"({time.perf_counter() - t0:.0f} s)")
    module.eval()


def latency_ms(path: Path, frame: np.ndarray, repeat: int, threads: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: frame})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, {name: frame})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def abs_rel(model: Path, bags) -> float:
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate

    results = evaluate(bags, EvaluateConfig(reference="/ground_truth/depth"),
                       models=[ModelSpec(str(model), "onnxruntime", "m")])
    return results.models["m"].summary()["all"]["abs_rel"]


def op_types_of(config: str):
    if config == "default":
        return None
    if config == "all":
        return ("all",)
    return tuple(config.split("+"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="unet,vit_s")
    parser.add_argument("--configs", default="default,all,Conv,Conv+MatMul",
                        help="comma-separated op-type configurations (see the docstring)")
    parser.add_argument("--frames", type=int, default=12, help="frames per synthetic bag")
    parser.add_argument("--calib-frames", type=int, default=24)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    import onnxruntime

    from depth_perception.runtime.calibration import frames_from_bags
    from depth_perception.runtime.quantize import QuantizeConfig, quantize_onnx
    from depth_perception.synth import make_synthetic_bags
    from depth_perception_training.tiny import (export_depth_onnx, unet_depth_module,
                                                unet_metadata, vit_s_depth_anything_onnx)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bags = make_synthetic_bags(tmp / "bags", frames=args.frames, size=(640, 192),
                                   conditions=("day-clear", "night", "rain"), seed=0)
        print(f"onnxruntime {onnxruntime.__version__}, {args.threads} threads; bags: "
              f"{len(bags)} x {args.frames} frames 640x192")
        for name in args.models.split(","):
            if name == "unet":
                meta = unet_metadata(*UNET_SIZE)
                module = unet_depth_module()
                if args.train_steps:
                    train_unet(module, bags, args.train_steps, meta)
                fp32 = export_depth_onnx(module, tmp / "unet.onnx", *UNET_SIZE, meta,
                                         meta.input_name, meta.output_name)
            elif name == "vit_s":
                fp32 = vit_s_depth_anything_onnx(tmp / "vit_s.onnx", *VIT_SIZE)
            else:
                raise ValueError(f"unknown model '{name}', expected unet or vit_s")
            from depth_perception.runtime.onnx_metadata import read_onnx_metadata

            meta = read_onnx_metadata(fp32)
            calib = frames_from_bags(bags, meta, args.calib_frames)
            frame = calib[:1]
            load = os.getloadavg()[0]
            t_fp32 = latency_ms(fp32, frame, args.repeat, args.threads)
            a_fp32 = abs_rel(fp32, bags)
            for config in args.configs.split(","):
                out = tmp / f"{name}.{config.replace('+', '_')}.int8.onnx"
                t0 = time.perf_counter()
                result = quantize_onnx(fp32, out, calib,
                                       QuantizeConfig(op_types=op_types_of(config),
                                                      tolerance=10.0),
                                       calibration_source={"bags": [b.name for b in bags]})
                seconds = time.perf_counter() - t0
                t_int8 = latency_ms(out, frame, args.repeat, args.threads)
                a_int8 = abs_rel(out, bags)
                rows.append((name, config, t_fp32, t_int8, a_fp32, a_int8, result.abs_rel,
                             result.quantized_ops, seconds, load, os.getloadavg()[0]))
                print(f"  {name} {config}: fp32 {t_fp32:.1f} ms, int8 {t_int8:.1f} ms "
                      f"({t_fp32 / t_int8:.2f}x); abs_rel fp32 {a_fp32:.4f} int8 {a_int8:.4f}; "
                      f"ops {result.quantized_ops}")
    print("\n== INT8 (QDQ) vs FP32 onnxruntime, CPU ==")
    print(f"{'model':>6} {'ops':>12} {'fp32 ms':>8} {'int8 ms':>8} {'speedup':>7} "
          f"{'abs_rel32':>9} {'abs_rel8':>9} {'delta':>7} {'vsFP32':>7} {'quant s':>7} "
          f"{'load':>9}")
    for (name, config, t32, t8, a32, a8, parity, ops, seconds, l0, l1) in rows:
        print(f"{name:>6} {config:>12} {t32:8.1f} {t8:8.1f} {t32 / t8:6.2f}x {a32:9.4f} "
              f"{a8:9.4f} {a8 - a32:+7.4f} {parity:7.4f} {seconds:7.1f} {l0:4.1f}/{l1:4.1f}")
    print("abs_rel: against /ground_truth/depth of the synthetic bags (all frames); vsFP32: "
          "abs_rel of INT8 depth against FP32 depth on the calibration frames; load: 1-min "
          "load average before/after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
