#!/usr/bin/env python
"""The spread of the teacher learning test's figures over seeds and CPU ISAs.

    bench/bench_learning_spread.py --seeds 0 1 2 3 4                  # this CPU
    bench/bench_learning_spread.py --seeds 0 1 2 3 4 --isa AVX2       # oneDNN limited to AVX2
    bench/bench_learning_spread.py --summary spread.jsonl             # table of saved runs

Each run is ``depth_perception_training.train.learning.teacher_learning_run`` (exactly what
``test/training/test_train_learns.py`` trains) in its own process, so
``--isa`` takes effect: it sets ``ONEDNN_MAX_CPU_ISA`` (oneDNN convolutions),
``MKL_ENABLE_INSTRUCTIONS`` (MKL's BLAS) and ``ATEN_CPU_CAPABILITY`` (torch's own
vectorised kernels), each read once at start. One JSON line per
run is appended to ``--out``; the summary prints min / median / max of every figure the
test asserts on, per ISA and over all runs. Thresholds in the test are set from these
with a margin (the test's comments say which). Drives are made once under ``--work``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIGURES = ("abs_rel_vs_prior", "structure_vs_prior", "scale_ratio", "photometric_ratio",
           "velocity_last40", "abs_rel", "prior_abs_rel")


def one_run(work: Path, seed: int) -> dict:
    from depth_perception_training.train.learning import learning_figures, teacher_learning_run

    t0 = time.perf_counter()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    figures = learning_figures(teacher_learning_run(work, seed, run=f"run_{isa}"))
    figures.update(seed=seed, isa=isa,
                   seconds=round(time.perf_counter() - t0, 1),
                   load=round(os.getloadavg()[0], 2))
    return figures


def student_run(work: Path, seeds) -> list[dict]:
    """The student test's chain with one student per translator and seed; one row per
    student: its abs_rel over the teacher's per condition."""
    import torch

    from depth_perception_training.train.learning import (student_ratios,
                                                          student_reproduce_config)
    from depth_perception_training.train.reproduce import reproduce

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = reproduce(work / f"students_{isa}", student_reproduce_config(seeds))
    seconds = round(time.perf_counter() - t0, 1)
    teacher = out["table"]["teacher"]
    return [{"row": row, "isa": isa, "seconds": seconds, "teacher": teacher,
             **{f"{c}_vs_teacher": r for c, r in ratios.items()}}
            for row, ratios in student_ratios(out["table"]).items()]


def summary(rows: list[dict]) -> str:
    lines = [f"{'figure':<20} {'group':<10} {'n':>2}  {'min':>8} {'median':>8} {'max':>8}"]
    groups = sorted({r["isa"] for r in rows})
    for name in FIGURES:
        for group in [*groups, "all"]:
            vals = [r[name] for r in rows if group in ("all", r["isa"])]
            if vals:
                lines.append(f"{name:<20} {group:<10} {len(vals):>2}  {min(vals):8.4f} "
                             f"{float(np.median(vals)):8.4f} {max(vals):8.4f}")
    bad = [r for r in rows if r["nan_skips"] or not r["finite"]]
    lines.append(f"runs with a NaN skip or a non-finite loss: {len(bad)} of {len(rows)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--isa", default=None, help="ONEDNN_MAX_CPU_ISA for the runs (e.g. AVX2)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_learning_spread"))
    p.add_argument("--out", type=Path, default=None, help="JSON lines file (appended)")
    p.add_argument("--summary", type=Path, default=None, help="only summarise this file")
    p.add_argument("--students", action="store_true",
                   help="the student test's chain instead: one teacher, a student per "
                        "translator and seed (--seeds), abs_rel over the teacher's")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_run(args.work, args.one)))
        return 0
    if args.students:
        if args.isa:
            os.environ.update(ONEDNN_MAX_CPU_ISA=args.isa, MKL_ENABLE_INSTRUCTIONS=args.isa,
                              ATEN_CPU_CAPABILITY=args.isa.lower())
            if args.one is None and not os.environ.get("_SPREAD_CHILD"):
                # the ISA variables are read once, at start: run again with them set
                env = dict(os.environ, _SPREAD_CHILD="1")
                return subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:])],
                                      env=env).returncode
        rows = student_run(args.work, args.seeds)
        out = args.out or args.work / "students.jsonl"
        with out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        for row in rows:
            print(f"{row['row']:<32} {row['isa']:<8} " + "  ".join(
                f"{c} {row[f'{c}_vs_teacher']:.3f}" for c in ("day-clear", "night", "rain")))
        return 0
    if args.summary:
        rows = [json.loads(line) for line in args.summary.read_text().splitlines() if line]
        print(summary(rows))
        return 0
    out = args.out or args.work / "spread.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.isa:     # an older CPU for each library that dispatches on the ISA
        env.update(ONEDNN_MAX_CPU_ISA=args.isa, MKL_ENABLE_INSTRUCTIONS=args.isa,
                   ATEN_CPU_CAPABILITY=args.isa.lower())
    rows = []
    for seed in args.seeds:
        done = subprocess.run([sys.executable, __file__, "--work", str(args.work),
                               "--one", str(seed)], env=env, check=True,
                              capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"seed {seed} isa {row['isa']}: " + ", ".join(
            f"{k} {row[k]:.4f}" for k in FIGURES) + f" ({row['seconds']} s, load {row['load']})",
            flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
