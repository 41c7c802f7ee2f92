#!/usr/bin/env python
"""SSD student at CPU scale: the reproduction table and the student's training speed.

    bench/bench_student.py                       # full budget (teacher_tiny.yaml's teacher)
    bench/bench_student.py --work /tmp/ssd       # keep bags and runs (reused next time)

Trains the tiny teacher (teacher_tiny.yaml) on synthetic training drives, translates
their day-clear bags with the ``paired`` and ``photometric`` translators, trains one student per
translator from the teacher, and scores teacher, students and the image-blind prior
(per-pixel median of the training bags' ground truth) on a held-out scene per
condition, metric (no median scaling), against dense ground truth. Prints the table,
the student's steps/s and the share of its step time spent in the teacher's forwards.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
TITLE = "SSD student at small scale: bench_student"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--teacher-steps", type=int, default=None,
                        help="default: teacher_tiny.yaml's")
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--translators", default="paired,photometric")
    parser.add_argument("--student-seeds", default="0",
                        help="one student per translator and seed (e.g. 0,1: seed spread)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of teacher and students")
    parser.add_argument("--train-seeds", default="1,2,3,4",
                        help="synthetic training drives (seeds); the held-out drive is 101")
    parser.add_argument("--size", default="320x96",
                        help="WIDTHxHEIGHT of bags and networks (multiples of 32)")
    parser.add_argument("--teacher-threads", type=int, default=2,
                        help="torch threads of the teacher, alone on the machine (2 cores: "
                             "1.35 s a step against 1.89 s with 1 thread, idle machine)")
    parser.add_argument("--student-workers", type=int, default=2,
                        help="students trained at once, one process each (2: one per core)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine spinning threads "
                             "make each step several times slower)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from depth_perception_training.train.reproduce import (ReproduceConfig, claim_holds,
                                                           format_table, reproduce)

    load = os.getloadavg()
    started = time.perf_counter()
    from depth_perception.camera import parse_size

    size = parse_size(args.size)
    batch = [f"data.batch_size={args.batch}"]
    config = ReproduceConfig(size=size, teacher_steps=args.teacher_steps,
                             student_steps=args.student_steps,
                             train_seeds=tuple(int(x) for x in args.train_seeds.split(",")),
                             translators=tuple(args.translators.split(",")),
                             student_seeds=tuple(int(x) for x in args.student_seeds.split(",")),
                             student_workers=args.student_workers,
                             teacher_threads=args.teacher_threads,
                             teacher_overrides=batch, student_overrides=batch)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        out = reproduce(work, config)
    minutes = (time.perf_counter() - started) / 60
    load_end = os.getloadavg()
    print(f"\nload average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 cores); "
          f"at end {load_end[0]:.1f}; total {minutes:.1f} min; "
          f"teacher {args.teacher_steps or 'teacher_tiny'} steps, "
          f"students {args.student_steps} steps each ({args.student_workers} at once), "
          f"{args.size}, batch {args.batch}, "
          f"{args.threads} torch thread(s) per student, {args.teacher_threads} for the teacher")
    print(f"teacher trained in {out['timings']['teacher_seconds'] / 60:.1f} min")
    print(format_table(out["table"]))
    for name, t in out["students"].items():
        print(f"{name}: {t['steps_per_s']:.2f} steps/s, "
              f"{100 * t['teacher_share']:.0f}% of the step in the teacher's forwards")
        print(f"  SSD direction (night, rain lower; day-clear <= +5%): "
              f"{json.dumps(claim_holds(out['table'], name))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
