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
        control_depth: a :class:`~.control_depth.ControlDepth` (callable RGB -> FusedDepth).
        threshold: largest accepted score.
        tiled: compare the tiled, fused maps (the control depth itself); False compares
            the global predictions only (one forward pass instead of rows x cols + 1).
    """

    def __init__(self, control_depth, threshold: float, tiled: bool = True):
        if threshold <= 0:
            raise ValueError(f"consistency threshold must be > 0, got {threshold}")
        self.control_depth, self.threshold = control_depth, float(threshold)
        self.tiled = bool(tiled)

    def depth(self, rgb: np.ndarray) -> np.ndarray:
        """[H,W] the map this check compares, of one image."""
        if self.tiled:
            return self.control_depth(rgb).fused
        return self.control_depth.estimator([rgb])[0]

    def __call__(self, source_depth, output_rgb: np.ndarray) -> Verdict:
        """source_depth: the source's FusedDepth (or the [H,W] map :meth:`depth` gives)."""
        if not isinstance(source_depth, np.ndarray):
            source_depth = source_depth.fused if self.tiled else source_depth.global_pred
        if output_rgb.shape[:2] != source_depth.shape:
            raise ValueError(f"output image {output_rgb.shape[:2]} and source depth "
                             f"{source_depth.shape} differ in size")
        score = consistency_score(source_depth, self.depth(output_rgb))
        return Verdict(score, score <= self.threshold)
