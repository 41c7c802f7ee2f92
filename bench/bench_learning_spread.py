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

from depth_perception.bench_log import add_record_argument, commit, record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Learning checks over seeds and CPU ISAs"
TEACHER_TITLE = "Teacher learning test: bench_learning_spread"
STUDENT_TITLE = "Student learning test: bench_learning_spread --students"

FIGURES = ("abs_rel_vs_prior", "structure_vs_prior", "scale_ratio", "photometric_ratio",
           "velocity_last40", "abs_rel", "prior_abs_rel")


def one_run(work: Path, seed: int) -> dict:
    from depth_perception_training.train.learning import learning_figures, teacher_learning_run

    t0 = time.perf_counter()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    figures = learning_figures(teacher_learning_run(work, seed, run=f"run_{isa}"))
    figures.update(seed=seed, isa=isa, commit=commit(Path(__file__).parent),
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
             "commit": commit(Path(__file__).parent), "load": round(os.getloadavg()[0], 2),
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


def teacher_markdown(rows: list[dict]) -> str:
    """One table row per run, then the summary."""
    lines = ["The run of `test/training/test_train_learns.py` (`train/learning.py`: "
             "teacher_tiny.yaml, 6 drives x 40 frames, 200 steps, seeded, "
             "`trainer.deterministic=true`, one torch thread), one process per run "
             "(`--seeds 0 1 2 3 4`, and again with `--isa AVX2`: `ONEDNN_MAX_CPU_ISA`, "
             "`MKL_ENABLE_INSTRUCTIONS`, `ATEN_CPU_CAPABILITY`). Prior: per-pixel median "
             "ground truth of the training drives, on the held-out drive. Seconds: wall "
             "time of training and scoring at the load given.", "",
             "| ISA | seed | abs_rel | / prior | structure / prior | scale | photometric "
             "last 40 / first 5 | velocity last 40 | s (load) |", "|---" * 9 + "|"]
    for r in sorted(rows, key=lambda r: (r["isa"] != "default", r["isa"], r["seed"])):
        lines.append(f"| {r['isa']} | {r['seed']} | {r['abs_rel']:.4f} | "
                     f"{r['abs_rel_vs_prior']:.3f} | {r['structure_vs_prior']:.3f} | "
                     f"{r['scale_ratio']:.3f} | {r['photometric_ratio']:.3f} | "
                     f"{r['velocity_last40']:.3f} | {r['seconds']:.0f} ({r['load']}) |")
    return "\n".join(lines) + "\n\n" + "\n".join("    " + line
                                                 for line in summary(rows).splitlines())


def student_markdown(rows: list[dict]) -> str:
    """One table row per student (its abs_rel over the teacher's per condition), the
    teacher of each ISA, and the range per translator and condition."""
    conds = ("day-clear", "night", "rain")
    lines = ["The chain of `test/training/test_student_learns.py` "
             "(`train/learning.py: student_reproduce_config`): one teacher per ISA "
             "(teacher_tiny.yaml, 200 steps), then a student per translator and seed "
             "(80 steps), scored on the held-out drive.", "",
             "| ISA | student | day-clear | night | rain |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["isa"] != "default", r["isa"], r["row"])):
        lines.append(f"| {r['isa']} | {r['row']} | " + " | ".join(
            f"{r[f'{c}_vs_teacher']:.3f}" for c in conds) + " |")
    lines.append("")
    for isa in sorted({r["isa"] for r in rows}):
        teacher = next(r["teacher"] for r in rows if r["isa"] == isa)
        lines.append(f"teacher ({isa}) abs_rel: " + ", ".join(
            f"{c} {teacher[c]['abs_rel']:.3f}" for c in conds) + "  ")
    for translator in sorted({r["row"].split(",")[0].split("(")[-1].rstrip(")")
                              for r in rows}):
        mine = [r for r in rows if f"({translator}" in r["row"]]
        lines.append(f"{translator}, {len(mine)} students: " + ", ".join(
            f"{c} {min(r[f'{c}_vs_teacher'] for r in mine):.3f}-"
            f"{max(r[f'{c}_vs_teacher'] for r in mine):.3f}" for c in conds) + "  ")
    return "\n".join(lines)


def file_rows(section_title: str, markdown: str, rows: list[dict]) -> None:
    """Record ``markdown`` with the commit(s) the rows were measured at and their loads."""
    commits = sorted({r.get("commit", "unknown") for r in rows})
    loads = [r["load"] for r in rows if "load" in r]
    record(RESULTS, SECTION, section_title, markdown, measured_at=", ".join(commits),
           load=f"{min(loads)}-{max(loads)}" if loads else None)


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
    add_record_argument(p)
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
        if args.record:   # every student of this output file, all ISAs
            every = [json.loads(line) for line in out.read_text().splitlines() if line]
            file_rows(STUDENT_TITLE, student_markdown(every), every)
        return 0
    if args.summary:
        rows = [json.loads(line) for line in args.summary.read_text().splitlines() if line]
        if rows and "row" in rows[0]:
            print(student_markdown(rows))
            if args.record:
                file_rows(STUDENT_TITLE, student_markdown(rows), rows)
            return 0
        print(summary(rows))
        if args.record:
            file_rows(TEACHER_TITLE, teacher_markdown(rows), rows)
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
    if args.record:
        every = [json.loads(line) for line in out.read_text().splitlines() if line]
        file_rows(TEACHER_TITLE, teacher_markdown(every), every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
