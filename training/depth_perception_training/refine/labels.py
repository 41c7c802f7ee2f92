"""Pseudo-labels on disk: a writer for refinement/teachers and a reader for students.

Layout of a label folder ``OUT``::

    OUT/manifest.json                        what the labels are, one entry per frame
    OUT/labels/<bag>/<topic>/<stamp_ns>.npy  float32 [H,W], NaN = no label

``manifest.json``::

    {"format": "depth_perception.pseudo_labels", "version": 1,
     "source": "redepth" | "marigold" | ...,   # who made them
     "kind": "metric_depth" | "relative_disparity" | "relative_depth",
     "encoding": "depth" | "log_depth",        # what the .npy files hold
     "depth_range": [min, max],                # metres (log_depth: its normalisation)
     "model": "...", "config": {...},          # provenance
     "frames": [{"bag": "day-clear", "bag_path": "/abs/day-clear",
                 "topic": "/camera/image_raw", "stamp_ns": 1700000000000000000,
                 "file": "labels/day-clear/camera_image_raw/1700000000000000000.npy",
                 "width": 320, "height": 96, "condition": "day-clear",
                 "image_path": null, "fit": {...}}, ...]}

Frames are keyed by (bag folder name, image topic, stamp in ns); an image folder is a
"bag" named after the folder with topic ``images`` and the file's index as stamp. The
label has the size of the image as stored (before any training resize). ``encoding:
log_depth`` stores MetricGold's normalised log depth in [-1, 1]; the reader decodes it.

Reading (what a student trainer uses instead of a live teacher)::

    labels = PseudoLabels("OUT")
    depth = labels.get("day-clear", stamp_ns)          # [H,W] float32 metres (or relative)
    depth = labels.for_sample(sample)                  # a BagSequence Sample, or None
    ds = PseudoLabelDataset(labels, size=(224, 70))    # torch Dataset
    ds[0] -> {"image": [3,h,w] float in [0,1], "depth": [1,h,w], "valid": [1,h,w] bool,
              "stamp_ns": int, "bag": str}
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from depth_perception_training.refine.marigold import log_depth_denormalize, log_depth_normalize

__all__ = ["PseudoLabelWriter", "PseudoLabels", "PseudoLabelDataset", "MANIFEST", "FORMAT",
           "KINDS", "ENCODINGS"]

MANIFEST = "manifest.json"
FORMAT = "depth_perception.pseudo_labels"
VERSION = 1
KINDS = ("metric_depth", "relative_disparity", "relative_depth")
ENCODINGS = ("depth", "log_depth")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")) or "_"


class PseudoLabelWriter:
    """Writes one label folder; :meth:`close` (or leaving the ``with`` block) writes the
    manifest atomically. Refuses a folder that already holds a manifest."""

    def __init__(self, out: str | Path, source: str, kind: str = "metric_depth",
                 encoding: str = "depth", depth_range: tuple[float, float] = (0.1, 80.0),
                 model: str = "", config: dict | None = None, overwrite: bool = False):
        if kind not in KINDS:
            raise ValueError(f"pseudo labels: kind must be one of {KINDS}, got {kind!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"pseudo labels: encoding must be one of {ENCODINGS}, got {encoding!r}")
        if encoding == "log_depth" and kind != "metric_depth":
            raise ValueError("pseudo labels: log_depth encoding is for metric depth labels")
        self.out = Path(out)
        if (self.out / MANIFEST).exists() and not overwrite:
            raise ValueError(f"{self.out} already holds pseudo labels ({MANIFEST}); choose "
                             "another folder or pass overwrite")
        self.out.mkdir(parents=True, exist_ok=True)
        self.header = {"format": FORMAT, "version": VERSION, "source": source, "kind": kind,
                       "encoding": encoding, "depth_range": [float(d) for d in depth_range],
                       "model": str(model), "config": config or {}}
        self.frames: list[dict] = []

    def add(self, bag: str, topic: str, stamp_ns: int, depth: np.ndarray,
            bag_path: str | None = None, condition: str | None = None,
            image_path: str | None = None, fit: dict | None = None) -> Path:
        """Store one label [H,W] (metres for metric kinds; NaN where unknown)."""
        depth = np.asarray(depth, np.float32)
        if depth.ndim != 2:
            raise ValueError(f"pseudo label for {bag}/{topic}/{stamp_ns} must be [H,W], got {depth.shape}")
        if self.header["encoding"] == "log_depth":
            lo, hi = self.header["depth_range"]
            depth = log_depth_normalize(depth, lo, hi).astype(np.float32)
        rel = Path("labels") / _safe(bag) / _safe(topic) / f"{int(stamp_ns)}.npy"
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(self.out / rel, depth, allow_pickle=False)
        self.frames.append({"bag": bag, "bag_path": bag_path, "topic": topic,
                            "stamp_ns": int(stamp_ns), "file": rel.as_posix(),
                            "width": int(depth.shape[1]), "height": int(depth.shape[0]),
                            "condition": condition, "image_path": image_path, "fit": fit or {}})
        return self.out / rel

    def close(self) -> Path:
        path = self.out / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**self.header, "frames": self.frames}, indent=1) + "\n")
        os.replace(tmp, path)
        return path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


class PseudoLabels:
    """Read-only view of a label folder (see the module doc)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no {MANIFEST}; expected a folder written by "
                                    "'depth-perception refine --out'")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"{path}: format {manifest.get('format')!r} version "
                             f"{manifest.get('version')!r}; expected {FORMAT!r} version {VERSION}")
        self.manifest = manifest
        self.frames = manifest["frames"]
        self.kind, self.source = manifest["kind"], manifest["source"]
        self.encoding = manifest["encoding"]
        self.depth_range = tuple(manifest["depth_range"])
        self._index = {(f["bag"], f["topic"], f["stamp_ns"]): f for f in self.frames}

    def __len__(self) -> int:
        return len(self.frames)

    def keys(self) -> list[tuple[str, str, int]]:
        return list(self._index)

    def entry(self, bag: str, stamp_ns: int, topic: str | None = None) -> dict | None:
        """The manifest entry of a frame (any topic when ``topic`` is None), or None."""
        if topic is not None:
            return self._index.get((bag, topic, int(stamp_ns)))
        for (b, _, s), f in self._index.items():
            if b == bag and s == int(stamp_ns):
                return f
        return None

    def load(self, entry: dict) -> np.ndarray:
        """[H,W] float32 label of a manifest entry (decoded to metres for log_depth)."""
        data = np.load(self.root / entry["file"], allow_pickle=False)
        if self.encoding == "log_depth":
            data = log_depth_denormalize(data.astype(np.float64), *self.depth_range)
        return np.asarray(data, np.float32)

    def get(self, bag: str, stamp_ns: int, topic: str | None = None) -> np.ndarray:
        entry = self.entry(bag, stamp_ns, topic)
        if entry is None:
            raise KeyError(f"no pseudo label for bag {bag!r} stamp {stamp_ns}"
                           + (f" topic {topic!r}" if topic else "") + f" in {self.root}")
        return self.load(entry)

    def for_sample(self, sample) -> np.ndarray | None:
        """The label of a :class:`depth_perception.data.samples.Sample`, or None."""
        entry = self.entry(Path(sample.bag).name, sample.stamp_ns)
        return None if entry is None else self.load(entry)


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2
    if (array.shape[1], array.shape[0]) == tuple(size):
        return array
    return cv2.resize(array, tuple(size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


class PseudoLabelDataset:
    """torch-style Dataset of (image, label) pairs for distillation (see the module doc).

    Images come back from the bags named in the manifest (``bag_path``; ``bag_root``
    replaces their parent folder when the bags moved) or from ``image_path``. ``size``
    (W, H) resizes both (labels with nearest neighbour, so NaN stays NaN).
    """

    def __init__(self, labels: PseudoLabels, size: tuple[int, int] | None = None,
                 bag_root: str | Path | None = None):
        import torch  # noqa: F401  (fail early with torch's own error when missing)
        self.labels, self.size = labels, tuple(size) if size else None
        self.bag_root = Path(bag_root) if bag_root else None
        self._bags: dict[str, object] = {}
        self._stamp_index: dict[str, dict[int, int]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _bag(self, entry: dict):
        from depth_perception.data.samples import BagSequence, SampleConfig
        path = Path(entry["bag_path"]) if entry.get("bag_path") else None
        if self.bag_root is not None:
            path = self.bag_root / entry["bag"]
        if path is None or not path.exists():
            raise FileNotFoundError(f"pseudo label {entry['file']}: bag {path} not found; pass "
                                    "bag_root= the folder that now holds the bags")
        key = str(path)
        if key not in self._bags:
            cfg = SampleConfig(offsets=(), skip_static=False, with_lidar=False, with_gt=False)
            seq = BagSequence(path, cfg)
            self._bags[key] = seq
            self._stamp_index[key] = {int(s): i for i, s in enumerate(seq.stamps)}
        return self._bags[key], self._stamp_index[key]

    def image(self, entry: dict) -> np.ndarray:
        """[H,W,3] uint8 RGB of a manifest entry."""
        if entry.get("image_path"):
            import cv2
            bgr = cv2.imread(entry["image_path"], cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"pseudo label {entry['file']}: image "
                                        f"{entry['image_path']} not readable")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        seq, index = self._bag(entry)
        i = index.get(int(entry["stamp_ns"]))
        if i is None:
            raise KeyError(f"bag {entry['bag']} has no image at stamp {entry['stamp_ns']}")
        return seq.frame(i)

    def __getitem__(self, k: int) -> dict:
        import torch
        entry = self.labels.frames[k]
        rgb = self.image(entry)
        depth = self.labels.load(entry)
        if depth.shape != rgb.shape[:2]:
            depth = _resize(depth, (rgb.shape[1], rgb.shape[0]), nearest=True)
        if self.size:
            rgb = _resize(rgb, self.size, nearest=False)
            depth = _resize(depth, self.size, nearest=True)
        valid = np.isfinite(depth) & (depth > 0)
        return {"image": torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0,
                "depth": torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None],
                "valid": torch.from_numpy(valid)[None],
                "stamp_ns": int(entry["stamp_ns"]), "bag": entry["bag"]}
