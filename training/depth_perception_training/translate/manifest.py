"""The translated dataset on disk: atomic image files and an append-only manifest.

Layout of ``output_dir``::

    config.yaml                         resolved configuration of the run
    images/<condition>/<bag_id>/<stamp_ns>.png
    manifest/part-<rank>.jsonl          what each process finished, one JSON line each
    manifest.jsonl                      merged: one line per (frame, condition), sorted
    summary.json                        per condition: samples, checked, rejected, rate
    bags/<condition>/<bag_id>/          optional rosbag2 per source bag and condition

Crash safety: an image is written to a temporary file and renamed into place; only
then is its record appended (one ``write`` of a whole line, flushed and fsync'd) to the
process's part file. A run killed at any point leaves complete images and complete
records; a record whose line was cut short is ignored on reading. A rerun reads every
part file, skips the (frame, condition) keys already recorded and redoes only what was
in flight. Merging dedups by key and sorts, so the merged manifest depends on what was
translated, not on how many processes did it or in which order.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
PARTS = "manifest"
#: fields every record has (see :func:`make_record`)
FIELDS = ("key", "source_bag", "bag_id", "topic", "stamp_ns", "index", "condition",
          "translator", "image", "width", "height", "prompt", "caption", "style", "seed",
          "models", "consistency", "accepted")


def sample_key(bag_id: str, stamp_ns: int, condition: str) -> str:
    return f"{bag_id}/{int(stamp_ns)}/{condition}"


def image_path(bag_id: str, stamp_ns: int, condition: str, fmt: str = "png") -> str:
    """Relative path of a translated image inside the output folder."""
    return f"images/{condition}/{bag_id}/{int(stamp_ns)}.{fmt}"


def write_image_atomic(path: Path, rgb: np.ndarray) -> None:
    """[H,W,3] uint8 RGB -> png/jpg at ``path``, via a temporary file and a rename."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path.name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_image(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"translated image {path} is missing or unreadable")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def make_record(*, ref, topic: str, condition: str, translator: str, image: str,
                size: tuple[int, int], translation, seed: int, models: dict,
                consistency: float | None, accepted: bool) -> dict:
    rec = {"key": sample_key(ref.bag_id, ref.stamp_ns, condition), "source_bag": ref.bag,
           "bag_id": ref.bag_id, "topic": topic, "stamp_ns": int(ref.stamp_ns),
           "index": int(ref.index), "condition": condition, "translator": translator,
           "image": image, "width": int(size[0]), "height": int(size[1]),
           "prompt": translation.prompt, "caption": translation.caption,
           "style": translation.style, "seed": int(seed), "models": dict(models),
           "consistency": None if consistency is None else round(float(consistency), 5),
           "accepted": bool(accepted)}
    assert tuple(rec) == FIELDS
    return rec


class ManifestWriter:
    """Appends records to ``output_dir/manifest/part-<rank>.jsonl`` durably."""

    def __init__(self, output_dir: Path, rank: int):
        self.path = Path(output_dir) / PARTS / f"part-{rank:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        if self._file.tell() > 0:            # a line cut by a kill: start on a fresh line
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write(b"\n")

    def append(self, record: dict) -> None:
        self._file.write((json.dumps(record, sort_keys=True) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path: Path) -> list[dict]:
    """Complete records of a jsonl file (a line cut short by a kill is skipped)."""
    records = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is incomplete (interrupted write); ignored", path, n)
            continue
        if isinstance(rec, dict) and "key" in rec:
            rec.setdefault("accepted", True)
            records.append(rec)
    return records


def read_parts(output_dir: Path) -> list[dict]:
    """Every record of every part file (and of a merged manifest), first one per key."""
    output_dir = Path(output_dir)
    files = sorted((output_dir / PARTS).glob("part-*.jsonl"))
    if (output_dir / MANIFEST).is_file():
        files.append(output_dir / MANIFEST)
    seen: dict[str, dict] = {}
    for f in files:
        for rec in read_jsonl(f):
            seen.setdefault(rec["key"], rec)
    return list(seen.values())


def done_keys(output_dir: Path) -> set[str]:
    """Keys recorded and whose image is on disk (what a rerun skips)."""
    output_dir = Path(output_dir)
    return {r["key"] for r in read_parts(output_dir) if (output_dir / r["image"]).is_file()}


def summarize(records: list[dict]) -> dict:
    """``{"conditions": {condition: {"samples", "checked", "rejected", "rejection_rate"}}}``
    of manifest records: ``checked`` counts the samples the consistency check scored,
    ``rejection_rate`` is ``rejected / samples`` (0 when nothing was checked)."""
    per: dict[str, dict] = {}
    for r in records:
        n = per.setdefault(r["condition"], {"samples": 0, "checked": 0, "rejected": 0})
        n["samples"] += 1
        n["checked"] += r.get("consistency") is not None
        n["rejected"] += not r["accepted"]
    for n in per.values():
        n["rejection_rate"] = n["rejected"] / n["samples"]
    return {"conditions": dict(sorted(per.items()))}


def _write_atomic(path: Path, lines) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        for line in lines:
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge(output_dir: Path) -> list[dict]:
    """Write the merged, sorted ``manifest.jsonl`` and its ``summary.json`` (atomically);
    returns the records."""
    output_dir = Path(output_dir)
    records = sorted(read_parts(output_dir),
                     key=lambda r: (r["bag_id"], r["stamp_ns"], r["condition"]))
    _write_atomic(output_dir / MANIFEST,
                  (json.dumps(rec, sort_keys=True) + "\n" for rec in records))
    _write_atomic(output_dir / SUMMARY, [json.dumps(summarize(records), indent=2) + "\n"])
    return records


def read_summary(output_dir: Path) -> dict:
    """The ``summary.json`` of a merged output folder."""
    return json.loads((Path(output_dir) / SUMMARY).read_text())
