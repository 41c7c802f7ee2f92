"""File digests: one implementation for engine cache keys, export provenance and the
frame cache."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Sequence[Path]) -> str:
    """sha256 over the bytes of ``paths`` in sorted order (one file: its own sha256)."""
    paths = sorted(Path(p) for p in paths)
    if len(paths) == 1:
        return sha256_file(paths[0])
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
