"""bench/RESULTS.md entries written by the benches: replaced by title, appended per
section, stamped with date, commit, machine and load."""
from __future__ import annotations

import argparse
import subprocess

from depth_perception.bench_log import add_record_argument, commit, record, run_and_record


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_entries_are_replaced_by_title_and_appended_per_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Measured results\n\nIntro line.\n\n## Old\n\n### kept\n\nold text\n")
    kw = dict(command="bench/x.py --fast", load="1.5", today="2026-12-06")
    record(results, "Speed", "runtime", "fps 10", **kw)
    record(results, "Speed", "memory", "rss 1 GB", **kw)
    record(results, "Speed", "runtime", "fps 12", **kw)           # re-run: replaced
    text = results.read_text()
    assert text.count("### runtime") == 1 and "fps 12" in text and "fps 10" not in text
    # order: intro, the untouched section, then Speed with runtime before memory
    assert text.index("Intro line.") < text.index("### kept") < text.index("## Speed")
    assert text.index("### runtime") < text.index("### memory")
    assert "old text" in text
    block = text.split("### runtime\n", 1)[1].split("### memory", 1)[0]
    lines = [line for line in block.splitlines() if line]
    assert lines[0].startswith("2026-12-06, commit unknown, ") and lines[0].endswith("load 1.5")
    assert "cores" in lines[0]
    assert lines[1] == "    bench/x.py --fast" and lines[2] == "fps 12"


def test_commit_names_the_head_and_uncommitted_changes(tmp_path):
    assert commit(tmp_path) == "unknown"
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("2\n")
    assert commit(tmp_path) == head + "+changes"


def test_a_bench_files_what_it_printed_only_with_record(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    parser = argparse.ArgumentParser()
    add_record_argument(parser)

    def measure(args):
        print("fps  12.5")
        print("load after: 1.0")

    assert run_and_record(measure, parser.parse_args([]), results, "Speed", "x: bench") == 0
    assert not results.exists() and "fps  12.5" in capsys.readouterr().out
    assert run_and_record(measure, parser.parse_args(["--record"]), results, "Speed",
                          "x: bench") == 0
    block = results.read_text().split("### x: bench\n", 1)[1]
    assert "\n    fps  12.5\n    load after: 1.0\n" in block
    assert "fps  12.5" in capsys.readouterr().out
