#!/usr/bin/env python
"""Dry runs of every shipped GPU recipe, one at a time, as subprocesses.

    bench/bench_dry_run.py [--recipes ssd_teacher,spidepth] [--cache FILE] [--rerun]
                           [--limit-gb 11] [--timeout 900] [--threads 1] [--record]

Each recipe's ``--dry-run`` (``depth-perception train|translate|refine ... --dry-run``)
runs in its own process under ``nice``, with ``--threads`` torch threads; its last line
(one JSON object) is kept in ``--cache`` (so recipes can be run one per call and the
table shows them all). A run whose resident memory passes ``--limit-gb`` or that takes
longer than ``--timeout`` seconds is ended and reported as such. Prints the table:
params, input size, batch, FLOPs per step, peak memory, whether it fits a 24 GB GPU at
the recipe's batch, and seconds per step on this machine (wall, and the process's CPU
time: on a shared machine the wall time includes waiting for a core).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
TITLE = "Dry runs of the GPU recipes at full size: bench_dry_run"

#: name -> (command after ``depth-perception``, what it is)
RECIPES = {
    "ssd_teacher": (["train", "teacher", "--config", "ssd_teacher"], "SSD teacher, Sec. 4.1"),
    "dinosd_teacher": (["train", "teacher", "--config", "dinosd_teacher"], "DINO-SD teacher"),
    "monodepth2": (["train", "teacher", "--config", "monodepth2"], "monodepth2 teacher"),
    "spidepth": (["train", "teacher", "--config", "spidepth"], "SPIdepth teacher"),
    "ssd_student": (["train", "student", "--config", "ssd_student"],
                    "SSD student + its SSD teacher"),
    "dinosd_student": (["train", "student", "--config", "dinosd_student"],
                       "DINO-SD student + its teacher"),
    "ssd_table3_row0": (["train", "student", "--config", "ssd_table3_row0"],
                        "SSD Table 3 ResNet-18 student + SSD teacher"),
    "pose": (["train", "pose", "--config", "pose_tiny", "model.pose.backbone=resnet18",
              "data.width=576", "data.height=320"],
             "pose pretraining: ResNet-18 at SSD's pose size (pose_tiny's batch)"),
    "translate_gdt": (["translate", "--config", "gdt", "--dry-run", "--dry-run-steps", "2"],
                      "GDT: one sample (2 of 30 denoising steps run, the rest counted)"),
    "refine_redepth": (["refine", "--config", "redepth", "--dry-run", "--dry-run-steps", "2"],
                       "Re-Depth: one image (2 of 1000 x 10 steps run, the rest counted)"),
    "refine_marigold": (["refine", "--config", "marigold", "--dry-run"],
                        "Marigold: one image"),
    "metricgold": (["train", "metricgold", "--config", "metricgold"],
                   "MetricGold: SD 2 UNet fine-tuning step at 1216x352, batch 2"),
}


def command(name: str) -> list[str]:
    args, _ = RECIPES[name]
    if "--dry-run" not in args:
        args = args[:4] + ["--dry-run"] + args[4:]
    return args


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return 0.0


def run_one(name: str, threads: int, limit_gb: float, timeout: float) -> dict:
    """The recipe's JSON line, or {"recipe", "error"} when it failed or was ended."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["nice", "-n", "15", sys.executable, "-m", "depth_perception.cli",
                                 *command(name)], stdout=out, stderr=err, env=env)
        t0, peak, why, load = time.monotonic(), 0.0, None, os.getloadavg()[0]
        while proc.poll() is None:
            peak = max(peak, _rss_gb(proc.pid))
            if peak > limit_gb:
                why = f"ended: resident memory passed {limit_gb} GiB"
            elif time.monotonic() - t0 > timeout:
                why = f"ended: over {timeout:.0f} s"
            if why:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.strip()]
        if why is None and proc.returncode == 0 and lines:
            try:
                return {**json.loads(lines[-1]),
                        "load": [round(load, 2), round(os.getloadavg()[0], 2)]}
            except json.JSONDecodeError:
                why = "last line is not JSON"
        tail = err.read().strip().splitlines()[-3:]
        return {"recipe": name, "error": why or f"exit {proc.returncode}", "stderr": tail,
                "process_peak_rss_gb": round(peak, 2)}


def _fmt(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/m"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def table(results: dict) -> list[str]:
    rows = ["| recipe | params | input size | batch | FLOPs/step | peak memory GiB | "
            "fits 24 GB | s/step wall | s/step CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | {r['error']} (process peak {r.get('process_peak_rss_gb')}"
                        " GiB) | | | | | | | |")
            continue
        size = ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in r["input_size"].items())
        peak = r["peak_memory_gb"]
        rows.append(f"| {name} | {_fmt(r['params_total'])} | {size} | {r['batch']} | "
                    f"{_fmt(r['flops_per_step'])} | {'n/m' if peak is None else f'{peak:.2f}'}"
                    f" | {r['fits_24gb']} | {_fmt(r['seconds_per_step'])} | "
                    f"{_fmt(r.get('cpu_seconds_per_step'))} |")
    return rows


def measure(args) -> int:
    cache = Path(args.cache)
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    names = args.recipes.split(",") if args.recipes else list(RECIPES)
    for name in names:
        if name not in RECIPES:
            raise SystemExit(f"unknown recipe {name}; known: {', '.join(RECIPES)}")
        if name in results and not args.rerun:
            continue
        results[name] = run_one(name, args.threads, args.limit_gb, args.timeout)
        cache.write_text(json.dumps(results, indent=1))
    shown = {n: results[n] for n in RECIPES if n in results}
    print(f"# dry runs, {args.threads} torch thread(s), nice 15, each in its own process; "
          f"a run is ended above {args.limit_gb} GiB or {args.timeout:.0f} s. Wall times "
          "include waiting for a core on a shared machine (each run's load at its start and "
          "end below, where recorded); the CPU column is the process's own CPU time")
    for line in table(shown):
        print(line)
    print("\nPer recipe (command, memory method, notes):")
    for name, r in shown.items():
        print(f"- {name}: depth-perception {' '.join(command(name))}; {RECIPES[name][1]}")
        if "error" not in r:
            print(f"  params {r['params']}; memory: {r['memory_method']}; fits: "
                  f"{r['fits_basis']}; load {r.get('load', 'not recorded')}")
            for st in r.get("stages") or []:
                print(f"  stage {st['name']}: FLOPs {_fmt(st['flops'])}, peak "
                      f"{st['peak_memory_gb']} GiB, {st['seconds']} s wall, "
                      f"{st.get('cpu_seconds')} s CPU")
            for note in r.get("notes", []):
                print(f"  note: {note}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=None, help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bench_dry_run.json"))
    p.add_argument("--rerun", action="store_true", help="run recipes already in --cache again")
    p.add_argument("--limit-gb", type=float, default=11.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--threads", type=int, default=1)
    add_record_argument(p)
    args = p.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


if __name__ == "__main__":
    sys.exit(main())
