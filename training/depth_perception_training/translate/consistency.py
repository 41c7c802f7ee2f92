"""Depth-consistency check: does a translation keep the source's 3D structure?

SSD's translation rests on the translated frame having the depth of its day-clear
original (the student is supervised with the day-clear teacher's depth). The check runs
the control-depth model on the output and compares it with the source's control depth.
Relative depth models agree only up to scale and shift, so both maps are normalised the
MiDaS way (Ranftl et al.): ``n(d) = (d - median(d)) / mean|d - median(d)|``; the score is
``mean |n(out) - n(src)|`` (0 = same structure; two unrelated maps score about 1).
A translation passes when its score is at most the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def normalise(depth: np.ndarray) -> np.ndarray:
    """Scale-and-shift normalised copy of a relative depth map (NaN ignored)."""
    d = depth.astype(np.float64)
    t = np.nanmedian(d)
    s = np.nanmean(np.abs(d - t))
    return (d - t) / max(s, 1e-12)


def consistency_score(source: np.ndarray, output: np.ndarray) -> float:
    """Scale-and-shift invariant error between two [H,W] relative depth maps."""
    if source.shape != output.shape:
        raise ValueError(f"depth maps differ in shape: source {source.shape}, output "
                         f"{output.shape}")
    diff = np.abs(normalise(output) - normalise(source))
    return float(np.nanmean(diff))


@dataclass
class Verdict:
    score: float
    accepted: bool


class ConsistencyCheck:
    """``check(source_depth, output_rgb) -> Verdict``.

    Args:
        control_depth: callable RGB -> object with ``.fused`` [H,W] (a ControlDepth).
        threshold: largest accepted score.
    """

    def __init__(self, control_depth, threshold: float):
        if threshold <= 0:
            raise ValueError(f"consistency threshold must be > 0, got {threshold}")
        self.control_depth, self.threshold = control_depth, float(threshold)

    def __call__(self, source_depth: np.ndarray, output_rgb: np.ndarray) -> Verdict:
        if output_rgb.shape[:2] != source_depth.shape:
            raise ValueError(f"output image {output_rgb.shape[:2]} and source depth "
                             f"{source_depth.shape} differ in size")
        score = consistency_score(source_depth, self.control_depth(output_rgb).fused)
        return Verdict(score, score <= self.threshold)
