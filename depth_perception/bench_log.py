"""Entries of ``bench/RESULTS.md``, written by the bench scripts themselves.

A bench prints its figures and, with ``--record``, files them as an entry: a
``### title`` block under a ``## section`` heading, opening with the date, the commit,
the machine and the load average, then the command and what the bench printed. An
entry of the same title in the same section is replaced, so a re-run updates its
figures instead of piling up history (git keeps that).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path


def machine() -> str:
    """``CPU model, N cores, M GiB, Python X.Y`` of this machine (Linux /proc; else what
    the platform module knows)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory = f", {mem:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    return (f"{cpu}, {os.cpu_count()} cores{memory}, "
            f"Python {platform.python_version()}")


def commit(root: str | Path) -> str:
    """Short hash of ``root``'s HEAD, ``+changes`` when tracked files differ from it;
    ``unknown`` outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=30)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def header(root: str | Path, load: str | None = None, today: str | None = None,
           measured_at: str | None = None) -> str:
    """``date, commit C, machine, load L``; ``load`` defaults to the 1-minute load
    average now (pass the range seen during the run when the bench measured it);
    ``measured_at``: the commit the figures were measured at, when not the checkout's."""
    if load is None:
        load = f"{os.getloadavg()[0]:.1f}"
    today = today or datetime.date.today().isoformat()
    return f"{today}, commit {measured_at or commit(root)}, {machine()}, load {load}"


def entry(title: str, body: str, *, command: str, stamp: str) -> str:
    """The Markdown of one entry."""
    body = body.strip("\n").rstrip()     # keep a leading indent: a printed block
    return (f"### {title}\n\n{stamp}\n\n    {command}\n\n{body}\n")


def record(path: str | Path, section: str, title: str, body: str, *,
           command: str | None = None, load: str | None = None,
           today: str | None = None, measured_at: str | None = None) -> Path:
    """Write the entry ``title`` under ``## section`` of the Markdown file ``path``,
    replacing an entry of that title there; the section is appended when missing.
    ``command`` defaults to this process's command line."""
    path = Path(path)
    if command is None:
        command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    if "\n" in title or "\n" in section:
        raise ValueError("bench_log: a title or section is one line")
    block = entry(title, body, command=command,
                  stamp=header(path.resolve().parent, load, today, measured_at))
    text = path.read_text() if path.exists() else "# Measured results\n"
    sections = re.split(r"(?m)^(?=## )", text)
    head, rest = sections[0], sections[1:]
    for i, sec in enumerate(rest):
        if sec.splitlines()[0].strip() == f"## {section}":
            parts = re.split(r"(?m)^(?=### )", sec)
            for j, part in enumerate(parts[1:], 1):
                if part.splitlines()[0].strip() == f"### {title}":
                    parts[j] = block + "\n"
                    break
            else:
                parts.append(block + "\n")
            rest[i] = "".join(parts)
            break
    else:
        rest.append(f"## {section}\n\n{block}")
    text = "".join(part.rstrip("\n") + "\n\n" for part in [head, *rest])
    path.write_text(text.rstrip("\n") + "\n")
    return path


def add_record_argument(parser) -> None:
    """``--record``: file the printed figures in bench/RESULTS.md."""
    parser.add_argument("--record", action="store_true",
                        help="also write the figures into bench/RESULTS.md (an entry of "
                             "this bench's title, replaced on a re-run) with the date, "
                             "commit, machine and load")


class _Tee:
    """A text stream that writes to ``stream`` and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def run_and_record(measure, args, results: str | Path, section: str, title: str) -> int:
    """Run ``measure(args)`` (a bench's figures, printed); with ``args.record`` file what
    it printed as the entry ``title`` under ``## section`` of ``results``, as an indented
    block. Returns ``measure``'s exit code (None counts as 0)."""
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        code = measure(args)
    if getattr(args, "record", False):
        printed = tee.copy.getvalue().strip("\n")
        body = "\n".join(("    " + line).rstrip() for line in printed.splitlines())
        record(results, section, title, body)
        print(f"recorded in {results}: {section} / {title}")
    return code or 0
