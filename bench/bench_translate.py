"""Benchmark ``depth-perception translate``: frames per minute and the per-stage split.

    .venv/bin/python bench/bench_translate.py [--frames 6] [--size 256x128] [--threads 1]

Runs the ``gdt`` pipeline with the tiny random models of ``gdt_tiny.yaml`` (BLIP-2,
DPT, SD 1.5 + depth ControlNet + IP-Adapter, all tiny) on synthetic bags on the CPU:
the figures are the pipeline's own overhead (bag reading, tiling, scheduling, image
files, manifest), not the cost of the real models. Then ``photometric`` and ``paired``
on the same frames. Models and bags are built first and not timed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
TITLE = "Translation throughput: bench_translate"


def _run(translator: str, out: Path, overrides: list[str]):
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    cfg = load_translate_config("gdt_tiny" if translator == "gdt" else translator,
                                [f"output_dir={out}", *overrides])
    tic = time.perf_counter()
    result = run_translate(cfg)
    return result, time.perf_counter() - tic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=2, help="diffusion steps (default 2)")
    parser.add_argument("--grid", default="3x3", help="control-depth tile grid ROWSxCOLS")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import torch

    from depth_perception.camera import parse_size
    from depth_perception.synth import make_synthetic_bags
    from depth_perception_training.tiny import save_tiny_translation_models

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    width, height = parse_size(args.size)
    rows, cols = (int(v) for v in args.grid.lower().split("x"))
    print(f"translate bench: {args.frames} frames at {width}x{height} -> night, rain; "
          f"tiny models, {args.steps} diffusion steps, {rows}x{cols} depth tiles; "
          f"{os.cpu_count()} CPUs, {args.threads} torch thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        day, night, rain = make_synthetic_bags(tmp / "bags", frames=args.frames,
                                               size=(width, height), seed=0)
        models = save_tiny_translation_models(tmp / "models")
        common = [f"source.bags=[{day}]", "conditions=[night,rain]"]
        gdt = [*common, "models.tiny=false",
               *[f"models.{k}={v}" for k, v in models.items()],
               f"style.night.bags=[{night}]", f"style.rain.bags=[{rain}]",
               f"diffusion.steps={args.steps}", f"control_depth.grid=[{rows},{cols}]"]
        for name, overrides in (("gdt", gdt), ("photometric", common), ("paired", common)):
            result, seconds = _run(name, tmp / name, overrides)
            print(f"\n{name}: {args.frames} frames x 2 conditions in {seconds:.1f} s = "
                  f"{60 * args.frames / seconds:.1f} frames/min "
                  f"({60 * result.translated / seconds:.1f} translations/min)")
            stages = sorted(result.timings.items(), key=lambda kv: -kv[1])
            total = sum(result.timings.values())
            for stage, s in stages:
                if s >= 0.005:
                    print(f"  {stage:<14} {s:7.2f} s  {100 * s / total:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
