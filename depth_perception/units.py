"""Depth units and encodings, defined once (REP 117 / REP 118).

* ``32FC1``: z-depth in metres. ``NaN`` = invalid, ``+inf`` = no return / beyond range
  (sky), ``-inf`` = too close.
* ``16UC1``: z-depth in millimetres, ``0`` = invalid (no way to say "beyond range").

Every conversion between the two goes through this module; nothing else multiplies by
1000 or 0.001.
"""
from __future__ import annotations

import numpy as np

MM_PER_M = 1000.0
ENCODING_METRES = "32FC1"
ENCODING_MILLIMETRES = "16UC1"
UINT16_MAX_MM = np.iinfo(np.uint16).max


def mm_to_metres(depth_mm: np.ndarray) -> np.ndarray:
    """[H,W] uint16 millimetres -> [H,W] float32 metres, 0 -> NaN (invalid)."""
    depth_mm = np.asarray(depth_mm)
    out = depth_mm.astype(np.float32) / np.float32(MM_PER_M)
    out[depth_mm == 0] = np.nan
    return out


def metres_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """[H,W] float metres -> [H,W] uint16 millimetres.

    Non-finite values and depths that do not fit in uint16 (> 65.535 m) become 0
    (invalid), as 16UC1 has no encoding for "beyond range".
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    mm = np.rint(depth_m * np.float32(MM_PER_M))
    ok = np.isfinite(mm) & (mm > 0) & (mm <= UINT16_MAX_MM)
    return np.where(ok, mm, 0).astype(np.uint16)


def mark_out_of_range(depth_m: np.ndarray, min_depth: float, max_depth: float,
                      copy: bool = True) -> np.ndarray:
    """Apply the REP 117 meanings: ``< min`` -> -inf, ``> max`` -> +inf; NaN stays NaN.
    ``copy=False``: in place when ``depth_m`` is already float32 (a caller's own array)."""
    depth_m = (np.array(depth_m, dtype=np.float32, copy=True) if copy
               else np.asarray(depth_m, dtype=np.float32))
    if depth_m.size == 0:
        return depth_m
    # NaN-ignoring extremes first (one cheap pass each): a frame within the range, the
    # usual case of a model whose output is bounded, needs no masked writes
    lowest, highest = np.fmin.reduce(depth_m, axis=None), np.fmax.reduce(depth_m, axis=None)
    with np.errstate(invalid="ignore"):
        if lowest < min_depth:
            np.copyto(depth_m, np.float32(-np.inf), where=depth_m < min_depth)
        if highest > max_depth:
            np.copyto(depth_m, np.float32(np.inf), where=depth_m > max_depth)
    return depth_m


def nan_outside(depth_m: np.ndarray, max_range: float = float("inf")) -> np.ndarray:
    """Contiguous float32 copy of ``depth_m`` with NaN wherever it is not a usable
    distance: NaN, +-inf, ``<= 0`` and ``> max_range`` all become NaN."""
    out = np.empty(np.shape(depth_m), np.float32)
    np.copyto(out, depth_m, casting="same_kind")
    with np.errstate(invalid="ignore"):
        bad = ~(out > 0)                                        # NaN, -inf, <= 0
        bad |= (out > max_range) if np.isfinite(max_range) else (out == np.inf)
    np.copyto(out, np.float32(np.nan), where=bad)
    return out
