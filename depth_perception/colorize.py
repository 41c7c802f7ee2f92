"""Depth -> colour image for display (the node's ``depth_colorized/image``, plots, TensorBoard).

One implementation: the value of each pixel is mapped linearly to 255 colour levels
(inverse depth by default: near is bright and structure shows at every range), then a
precomputed 256-entry table turns levels into colours in one table-lookup pass
(``cv2.applyColorMap`` with a user table).
Table entry 0 is black and marks invalid pixels (NaN and ``-inf``, REP 117 "too
close / invalid"); ``+inf`` (beyond range, sky) takes the colour of ``max_depth``.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

#: Levels for valid pixels: 1..255 (0 is black, reserved for invalid pixels).
LEVELS = 254


@functools.lru_cache(maxsize=32)
def colour_table(colormap: str, bgr: bool = True) -> np.ndarray:
    """[256,1,3] uint8 table: entry 0 black, entries 1..255 the OpenCV ``colormap``
    sampled evenly from its first to its last colour (BGR, or RGB with ``bgr=False``)."""
    name = f"COLORMAP_{str(colormap).upper()}"
    if not hasattr(cv2, name):
        raise ValueError(f"unknown colormap '{colormap}' (cv2.{name} does not exist); "
                         "expected an OpenCV colormap name such as 'turbo' or 'magma'")
    ramp = np.round(np.arange(LEVELS + 1) * 255.0 / LEVELS).astype(np.uint8)   # [255]
    colours = cv2.applyColorMap(ramp[:, None], getattr(cv2, name))            # [255,1,3] BGR
    table = np.zeros((256, 1, 3), np.uint8)
    table[1:] = colours if bgr else colours[..., ::-1]
    table.setflags(write=False)
    return table


def depth_levels(depth: np.ndarray, min_depth: float, max_depth: float,
                 inverse: bool = True) -> np.ndarray:
    """[H,W] metres -> [H,W] uint8 colour levels: 0 invalid (NaN, -inf), 1 at
    ``max_depth`` (and beyond, +inf), 255 at ``min_depth`` (and closer); linear in
    ``1/depth`` (``inverse``) or in depth."""
    if not 0 < min_depth < max_depth:
        raise ValueError(f"colorize: need 0 < min_depth < max_depth, got {min_depth}, "
                         f"{max_depth}")
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize: expected depth [H,W], got shape {depth.shape}")
    buf = np.empty(depth.shape, np.float32)
    # level = round(1 + LEVELS * t), t in [0, 1] (near: t = 1, bright); the + 0.5 makes
    # the truncating cast below round to nearest
    with np.errstate(divide="ignore", invalid="ignore"):
        if inverse:   # t = (1/d - 1/max) / (1/min - 1/max)
            a = LEVELS / (1.0 / min_depth - 1.0 / max_depth)
            np.divide(np.float32(a), depth, out=buf)
            buf -= np.float32(a / max_depth - 1.5)
        else:         # t = (max - d) / (max - min); +inf -> t < 0 -> level 1
            np.subtract(np.float32(max_depth), depth, out=buf)
            buf *= np.float32(LEVELS / (max_depth - min_depth))
            buf += np.float32(1.5)
    np.fmax(buf, 1.0, out=buf)              # NaN -> 1 (masked below), far -> 1
    np.fmin(buf, 255.0, out=buf)            # near -> 255
    levels = buf.astype(np.uint8)
    np.copyto(levels, 0, where=~(depth > -np.inf))   # NaN and -inf -> 0 (black)
    return levels


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float,
                   colormap: str = "turbo", inverse: bool = True,
                   bgr: bool = True) -> np.ndarray:
    """[H,W] metres -> [H,W,3] uint8 colour image (BGR for ``bgr8`` messages, or RGB).

    Near is bright (``inverse``: the colour scale is linear in 1/depth between
    ``1/max_depth`` and ``1/min_depth``; else linear in depth). NaN and ``-inf`` are
    black; ``+inf`` takes the colour of ``max_depth``.
    """
    levels = depth_levels(depth, min_depth, max_depth, inverse)            # [H,W] uint8
    return cv2.applyColorMap(levels, colour_table(colormap, bgr))       # [H,W,3]
