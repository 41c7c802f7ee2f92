"""On-disk cache of decoded (resized) frames, so later epochs never decode a bag again.

Layout: ``<root>/<key>/<name>.npy`` with ``<root>`` = ``$DEPTH_PERCEPTION_CACHE`` or
``~/.cache/depth_perception``. The key hashes the bag's identity (absolute path, name,
size and mtime of every file in the bag directory, the metadata.yaml content) and the
settings that change the cached arrays (output size, crop, topics...). Changing or
touching a bag gives a new key; entries of the old key for the same bag and settings
are removed. Writes go to a temporary file renamed into place, so a crash never
leaves a half-written entry; an unreadable entry counts as a miss and is rewritten.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from depth_perception.files import sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "DEPTH_PERCEPTION_CACHE"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "depth_perception"


def bag_fingerprint(bag_path: str | Path) -> dict:
    """Identity of a bag directory: absolute path, files with size and mtime, metadata hash."""
    bag_path = Path(bag_path).resolve()
    files = []
    for p in sorted(q for q in bag_path.iterdir() if q.is_file()):
        st = p.stat()
        files.append([p.name, st.st_size, st.st_mtime_ns])
    meta = bag_path / "metadata.yaml"
    meta_hash = sha256_file(meta) if meta.is_file() else ""
    return {"bag": str(bag_path), "files": files, "metadata_sha256": meta_hash}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class CacheView:
    """The entries of one (bag, settings) key."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.hits = 0
        self.misses = 0

    def _file(self, name: str) -> Path:
        return self.dir / f"{name}.npy"

    def get(self, name: str) -> np.ndarray | None:
        path = self._file(name)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            log.warning("cache entry %s unreadable (%s): recomputing", path, err)
            return None

    def put(self, name: str, array: np.ndarray) -> None:
        """Atomic write: temporary file in the same directory, then rename."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(array), allow_pickle=False)
            os.replace(tmp, self._file(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        cached = self.get(name)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        value = np.asarray(compute())
        self.put(name, value)
        return value


class FrameCache:
    """Root of the frame cache; :meth:`view` gives the entries of one bag + settings."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def view(self, bag_path: str | Path, settings: dict) -> CacheView:
        fingerprint = bag_fingerprint(bag_path)
        settings_hash = _digest(settings)
        key = _digest({"format": CACHE_FORMAT, "fingerprint": fingerprint,
                       "settings": settings_hash})[:24]
        directory = self.root / key
        if not (directory / "key.json").is_file():
            self._prune(fingerprint["bag"], settings_hash, keep=key)
            directory.mkdir(parents=True, exist_ok=True)
            info = {"format": CACHE_FORMAT, "fingerprint": fingerprint,
                    "settings": settings, "settings_hash": settings_hash}
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh, indent=1, default=str)
            os.replace(tmp, directory / "key.json")
        return CacheView(directory)

    def _prune(self, bag: str, settings_hash: str, keep: str) -> None:
        """Remove entries of an older version of the same bag with the same settings."""
        if not self.root.is_dir():
            return
        for key_file in self.root.glob("*/key.json"):
            if key_file.parent.name == keep:
                continue
            try:
                info = json.loads(key_file.read_text())
            except (OSError, ValueError):
                continue
            if (info.get("fingerprint", {}).get("bag") == bag
                    and info.get("settings_hash") == settings_hash):
                log.info("cache: bag %s changed, removing stale entries %s", bag,
                         key_file.parent)
                shutil.rmtree(key_file.parent, ignore_errors=True)
