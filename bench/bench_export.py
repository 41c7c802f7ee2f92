"""Export benchmark: export time, ONNX size and inference latency per model size.

For the tiny and the ViT-S-sized (DINOv2 384/12/6 + DPT) depth models with random
weights: torch -> ONNX export time (including the onnxruntime parity check), file size,
onnxruntime CPU latency (median of ``--repeats`` runs after a warm-up) and torch CPU
latency for reference. Where TensorRT and a GPU are present, the same for FP32, FP16 and
INT8 engines (build time, engine size, latency, max relative error vs onnxruntime).

    .venv/bin/python bench/bench_export.py                      # 98x168, both models
    .venv/bin/python bench/bench_export.py --height 364 --width 644 --models small
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Export and latency: bench_export"


def _median_ms(fn, repeats: int) -> float:
    fn()                                   # warm-up (allocations, lazy init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _checkpoint(folder: Path, size: str) -> Path:
    import torch

    from depth_perception.models import build_depth_model, save_depth_model

    torch.manual_seed(0)
    net = build_depth_model({"arch": "dpt", "size": size})
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            m.reset_parameters()
    return save_depth_model(folder, net.eval())


def bench_model(size: str, height: int, width: int, repeats: int, threads: int,
                workdir: Path) -> dict:
    import torch

    from depth_perception.runtime.calibration import synthetic_frames
    from depth_perception_training.export.onnx_export import export_onnx, load_export_source
    from depth_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    torch.set_num_threads(threads)
    source = load_export_source(_checkpoint(workdir / f"ckpt_{size}", size))
    params = sum(p.numel() for p in source.module.parameters())
    onnx_path = workdir / f"{size}_{height}x{width}.onnx"
    t0 = time.perf_counter()
    result = export_onnx(source, onnx_path, height, width)
    export_s = time.perf_counter() - t0
    frame = synthetic_frames(result.metadata, 1)
    backend = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"],
                                 intra_op_threads=threads)
    ort_ms = _median_ms(lambda: backend.run({"image": frame}), repeats)
    backend.close()
    x = torch.from_numpy(frame)
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: source.module(x), repeats)
    row = {"model": size, "params_M": params / 1e6, "export_s": export_s,
           "onnx_MB": onnx_path.stat().st_size / 1e6, "ort_cpu_ms": ort_ms,
           "torch_cpu_ms": torch_ms, "parity": result.max_rel_error, "onnx": onnx_path,
           "metadata": result.metadata}
    return row


def bench_tensorrt(row: dict, repeats: int, workdir: Path) -> list[dict]:
    from depth_perception.runtime.calibration import CalibrationSource, synthetic_frames
    from depth_perception.runtime.engine import EngineBuildConfig, build_engine
    from depth_perception.runtime.backends.tensorrt_backend import TensorRTBackend

    meta = row["metadata"]
    frame = synthetic_frames(meta, 1, seed=3)
    rows = []
    for precision in ("fp32", "fp16", "int8"):
        engine = workdir / f"{row['model']}.{precision}.engine"
        calibration = None
        if precision == "int8":
            calibration = CalibrationSource(meta, workdir / f"{row['model']}.calib",
                                            frames_loader=lambda: synthetic_frames(meta, 32))
        t0 = time.perf_counter()
        build_engine(row["onnx"], engine, EngineBuildConfig(precision, tolerance=1.0),
                     calibration=calibration, metadata=meta)
        build_s = time.perf_counter() - t0
        with TensorRTBackend(engine) as backend:
            ms = _median_ms(lambda: backend.run({"image": frame}), repeats)
        import json

        error = json.loads(Path(str(engine) + ".json").read_text())["provenance"][
            "tensorrt"]["max_rel_error_vs_onnxruntime"]
        rows.append({"model": row["model"], "precision": precision, "build_s": build_s,
                     "engine_MB": engine.stat().st_size / 1e6, "latency_ms": ms,
                     "max_rel_error": error})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=98)
    parser.add_argument("--width", type=int, default=168)
    parser.add_argument("--models", nargs="+", default=["tiny", "small"],
                        choices=["tiny", "small", "base"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    from depth_perception.runtime.engine import tensorrt_available

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = [bench_model(m, args.height, args.width, args.repeats, args.threads, workdir)
                for m in args.models]
        print(f"input {args.height}x{args.width}, {args.threads} CPU threads, median of "
              f"{args.repeats} runs")
        print(f"{'model':<8}{'params':>9}{'export':>9}{'onnx':>9}{'ort cpu':>10}"
              f"{'torch cpu':>11}{'parity':>10}")
        for r in rows:
            print(f"{r['model']:<8}{r['params_M']:>8.1f}M{r['export_s']:>8.1f}s"
                  f"{r['onnx_MB']:>7.1f}MB{r['ort_cpu_ms']:>8.1f}ms{r['torch_cpu_ms']:>9.1f}ms"
                  f"{r['parity']:>10.1e}")
        if not tensorrt_available():
            print("TensorRT: not available here (FP32/FP16/INT8 engine figures need TensorRT "
                  "and a GPU)")
            return 0
        print(f"{'model':<8}{'prec':>6}{'build':>9}{'engine':>10}{'latency':>10}{'err':>10}")
        for r in rows:
            for t in bench_tensorrt(r, args.repeats, workdir):
                print(f"{t['model']:<8}{t['precision']:>6}{t['build_s']:>8.1f}s"
                      f"{t['engine_MB']:>8.1f}MB{t['latency_ms']:>8.2f}ms"
                      f"{t['max_rel_error']:>10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
