"""Evaluation throughput (frames per second) with onnxruntime on CPU.

    .venv/bin/python bench/bench_evaluate.py [--frames 30] [--size 640x192] [--model M.onnx]

Makes a synthetic day-clear bag, exports a tiny Depth Anything to ONNX (random weights)
unless --model is given, and times ``evaluate`` (bag decoding + LiDAR projection +
DepthEstimator + metrics) against LiDAR and against the dense ground truth, and the
report writing. Prints figures; no asserts.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Evaluation throughput: bench_evaluate"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", default="640x192")
    parser.add_argument("--model", default=None, help="an .onnx model (default: tiny random)")
    parser.add_argument("--threads", type=int, default=2)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    width, height = (int(v) for v in args.size.lower().split("x"))

    import onnxruntime

    from depth_perception.synth import make_synthetic_bags
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.evaluation.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        bags = make_synthetic_bags(tmp / "bags", frames=args.frames, size=(width, height),
                                   conditions=("day-clear",), seed=0)
        print(f"synthetic bag: {args.frames} frames {width}x{height} in "
              f"{time.perf_counter() - t0:.1f} s")
        model = args.model
        if model is None:
            from depth_perception_training.tiny import tiny_depth_anything_onnx
            h14 = max(14, round(height / 14) * 14)
            w14 = max(14, round(width / 14) * 14)
            model = str(tiny_depth_anything_onnx(tmp / "tiny.onnx", h14, w14))
            print(f"model: tiny Depth Anything (random weights) exported to ONNX at "
                  f"{w14}x{h14}")
        print(f"onnxruntime {onnxruntime.__version__}, providers "
              f"{onnxruntime.get_available_providers()}")
        spec = ModelSpec(model, "onnxruntime", "bench")
        for reference in ("lidar", "/ground_truth/depth"):
            config = EvaluateConfig(reference=reference)
            t0 = time.perf_counter()
            results = evaluate(bags, config, models=[spec])
            dt = time.perf_counter() - t0
            n = len(results.models["bench"].frames)
            per = results.models["bench"].info.get("seconds_per_frame", float("nan"))
            print(f"reference {reference:>20}: {n} frames in {dt:.2f} s = {n / dt:.1f} fps "
                  f"end to end (model incl. pre/post: {1 / per:.1f} fps)")
        t0 = time.perf_counter()
        write_report(results, tmp / "report")
        print(f"report with plots: {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
