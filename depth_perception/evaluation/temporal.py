"""Temporal alignment error (TAE): how well a depth stream holds still between frames.

As Video Depth Anything (Chen et al., CVPR 2025, ``benchmark/eval/eval_tae.py``) defines
it: the depth of frame k is warped into frame k+1 with the known relative camera pose
(:func:`depth_perception.data.warp.forward_warp`: back-project with K, move by
``T_{k+1<-k}``, project, nearest point wins) and compared with the depth of frame k+1 by
abs_rel, ``mean |d_{k+1} - w(d_k)| / d_{k+1}``; the same from k+1 back into k; the two
directions averaged per pair, the pairs averaged per condition. 0 is a depth stream that
moves exactly with the camera; an image-blind prior, which never moves, is far from it.

What this package fixes on top (VDA leaves it to each dataset's mask):

* compared pixels: those of the target frame with a valid reference depth (the
  evaluation's LiDAR or ground truth, inside its range and crop) that are static, i.e.
  not marked in the bag's moving-object mask (``/ground_truth/moving`` of the synthetic
  drives; a bag without it counts every pixel static, and the report says so);
* warped pixels: every static pixel with a usable prediction (not only those with a
  reference), so that a near surface still hides what is behind it;
* the prediction as the metrics score it: ``+inf`` / ``-inf`` (REP 117) at the clamp's
  ends, clamped, median-scaled per frame when the protocol median-scales; not computed
  for the affine alignments (their per-frame fit is not a depth of the scene).

Values are fractions (VDA prints them x 100).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import invert_transform
from depth_perception.data.warp import backproject, forward_warp

#: keys of :func:`temporal_alignment_error`
TAE_KEYS = ("tae", "tae_forward", "tae_backward", "pixels")
#: relative agreement of the warped ground truth that makes a pixel co-visible
COVISIBLE_TOLERANCE = 0.05


def _direction(src: np.ndarray, dst: np.ndarray, intrinsics: Intrinsics, T_dst_src,
               compare_dst: np.ndarray, source_valid) -> tuple[float, int]:
    """abs_rel of ``src`` warped into ``dst`` over ``compare_dst`` pixels that got a point."""
    warped = forward_warp(src, intrinsics, T_dst_src, source_valid)
    d = np.asarray(dst, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.asarray(compare_dst, bool) & np.isfinite(warped) & np.isfinite(d) & (d > 0)
    n = int(ok.sum())
    if n == 0:
        return math.nan, 0
    return float(np.mean(np.abs(d[ok] - warped[ok]) / d[ok])), n


def temporal_alignment_error(depth_a: np.ndarray, depth_b: np.ndarray,
                             intrinsics: Intrinsics, T_b_a, compare_a: np.ndarray,
                             compare_b: np.ndarray, static_a: np.ndarray | None = None,
                             static_b: np.ndarray | None = None) -> dict:
    """TAE of one frame pair (a = frame k, b = frame k+1).

    depth_a, depth_b: [H,W] metres (NaN / non-positive: no depth); ``T_b_a``: [4,4] maps
    points of camera a into camera b; ``compare_a`` / ``compare_b``: [H,W] bool pixels
    where each frame is compared (static, with a reference); ``static_a`` / ``static_b``:
    [H,W] bool pixels of each frame that are warped (None: all).

    Returns {"tae": mean of the two directions (of the one that had pixels; NaN when
    none had), "tae_forward": a into b, "tae_backward": b into a, "pixels": compared
    pixels of both directions}.
    """
    T = np.asarray(T_b_a, dtype=np.float64)
    fwd, n_fwd = _direction(depth_a, depth_b, intrinsics, T, compare_b, static_a)
    bwd, n_bwd = _direction(depth_b, depth_a, intrinsics, invert_transform(T), compare_a,
                            static_b)
    values = [v for v in (fwd, bwd) if math.isfinite(v)]
    return {"tae": float(np.mean(values)) if values else math.nan, "tae_forward": fwd,
            "tae_backward": bwd, "pixels": n_fwd + n_bwd}


#: motion_scale: pairs whose camera moved less along its axis are skipped [m]
MIN_AXIAL_MOTION_M = 0.05


def motion_scale(depth_a: np.ndarray, depth_b: np.ndarray, intrinsics: Intrinsics,
                 T_a_b, max_depth: float = 30.0) -> float | None:
    """How far a depth stream moves with the camera between frame a and frame b: 1 when
    its depth of a static point changes by as much as the point's distance does, 0 when
    it does not change at all while the point comes nearer.

    Every pixel of ``depth_b`` ([H,W] metres) with depth in (1 m, ``max_depth``) is moved
    into camera a with ``T_a_b`` ([4,4], maps points of camera b into camera a): its depth
    there is ``zp = c + t`` (``t``: the z of the translation, ``c``: the rest). The
    stream's own depth of frame a sampled where the pixel lands (bilinear), ``za``, gives
    ``(za - c) / t``; the median over pixels is returned. None when the camera moved
    less than :data:`MIN_AXIAL_MOTION_M` along its axis or fewer than 100 pixels compare.
    A stream below 1 keeps part of its TAE whatever a temporal fusion averages.
    """
    import cv2

    T = np.asarray(T_a_b, np.float64)
    t = float(T[2, 3])
    if abs(t) < MIN_AXIAL_MOTION_M:
        return None
    with np.errstate(invalid="ignore"):
        near = (depth_b > 1.0) & (depth_b < max_depth)
        before = np.where(np.isfinite(depth_a) & (depth_a > 0), depth_a,
                          np.nan).astype(np.float32)
    moved = backproject(depth_b, intrinsics, near) @ T[:3, :3].T + T[:3, 3]  # [N,3] in a
    zp = moved[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = intrinsics.fx * moved[:, 0] / zp + intrinsics.cx
        v = intrinsics.fy * moved[:, 1] / zp + intrinsics.cy
    map_x = np.full(near.shape, -1.0, np.float32)            # outside: sampled as NaN
    map_y = np.full(near.shape, -1.0, np.float32)
    map_x[near], map_y[near] = u, v                           # backproject's pixel order
    za = cv2.remap(before, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                   borderValue=float("nan"))[near]
    with np.errstate(invalid="ignore"):
        ok = (zp > 1e-3) & np.isfinite(za)
    if int(ok.sum()) < 100:
        return None
    return float(np.median((za[ok] - (zp[ok] - t)) / t))


def scored_depth(pred: np.ndarray, clamp: tuple, scale: float = 1.0) -> np.ndarray:
    """[H,W] float32 prediction as the metrics score it: +inf / -inf at the clamp's ends,
    times ``scale`` (median scaling), clamped; NaN and non-positive stay unusable."""
    p = np.asarray(pred, dtype=np.float32)
    lo, hi = clamp
    p = np.where(np.isposinf(p), np.float32(hi), np.where(np.isneginf(p), np.float32(lo), p))
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(p) & (p > 0)
    return np.where(usable, np.clip(p * np.float32(scale), lo, hi), np.nan).astype(np.float32)


def covisible(gt_src: np.ndarray, gt_dst: np.ndarray, intrinsics: Intrinsics, T_dst_src,
              static_src: np.ndarray | None = None,
              tolerance: float = COVISIBLE_TOLERANCE) -> np.ndarray:
    """[H,W] bool pixels of the destination frame that see the surface the source frame
    saw there: the source's ground truth, warped as the predictions are, lands within
    ``tolerance`` (relative) of the destination's ground truth. Leaves out what a
    forward warp gets wrong even for perfect depth: surfaces the source frame could not
    see (outside its view, behind an occluder), whose background points land on them,
    and the gaps of magnified thin objects that background points fill."""
    warped = forward_warp(gt_src, intrinsics, T_dst_src, static_src)
    d = np.asarray(gt_dst, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.isfinite(warped) & np.isfinite(d) & (d > 0) & (
            np.abs(d - warped) <= tolerance * d)


@dataclass
class FrameScene:
    """One evaluated frame as every stream shares it: ``position`` in the evaluated frame
    list, camera pose [4,4] in the world frame (None: unknown), scored reference pixels,
    static pixels, dense ground truth (None: not in the bag) and whether the static
    pixels came from a moving-object mask."""

    position: int
    pose: np.ndarray | None
    compare: np.ndarray
    static: np.ndarray
    gt: np.ndarray | None
    masked: bool


@dataclass
class TemporalRecord:
    """The TAE of one frame pair of one model (``index``/``stamp_ns``: frame k+1)."""

    model: str
    bag: str
    condition: str
    index: int
    stamp_ns: int
    values: dict
    #: the static pixels came from the bag's moving-object mask (False: all pixels)
    masked: bool = True


class TemporalTracker:
    """The TAE of consecutive evaluated frames of every stream of one bag.

    Per evaluated frame, :meth:`frame` once (the shared scene), then :meth:`add` for
    each stream (model, prior) scored on it. A stream whose frame was not scored (failed
    prediction) has no pair with it; neither has a frame without a pose, nor frames that
    are not consecutive in the evaluated list (with a stride N the pairs are N frames
    apart).
    """

    def __init__(self, results, intrinsics: Intrinsics, bag: str):
        self.results = results
        self.intrinsics = intrinsics
        self.bag = bag
        self._scenes: dict[int, FrameScene] = {}
        self._pairs: dict[int, dict] = {}               # position of k+1 -> masks
        self._depth: dict[str, tuple[int, np.ndarray]] = {}

    def frame(self, position: int, pose, compare: np.ndarray, moving: np.ndarray | None,
              gt: np.ndarray | None) -> None:
        """The shared state of frame ``position``: pose [4,4] (or None), ``compare``
        [H,W] scored reference pixels, ``moving`` [H,W] moving-object pixels (None: no
        mask, all static), ``gt`` dense ground truth [H,W] (None: not in the bag)."""
        static = np.ones(compare.shape, bool) if moving is None else ~np.asarray(moving, bool)
        self._scenes = {p: s for p, s in self._scenes.items() if p == position - 1}
        self._scenes[position] = FrameScene(position, pose, compare & static, static, gt,
                                            moving is not None)
        self._pairs.clear()

    def _pair(self, position: int) -> dict | None:
        """Masks of the pair (position - 1, position), computed once for every stream."""
        if position in self._pairs:
            return self._pairs[position]
        a, b = self._scenes.get(position - 1), self._scenes.get(position)
        pair = None
        if a is not None and b is not None and a.pose is not None and b.pose is not None:
            T = invert_transform(b.pose) @ a.pose                   # T_{k+1<-k}
            compare_a, compare_b = a.compare, b.compare
            if a.gt is not None and b.gt is not None:
                compare_b = compare_b & covisible(a.gt, b.gt, self.intrinsics, T, a.static)
                compare_a = compare_a & covisible(b.gt, a.gt, self.intrinsics,
                                                  invert_transform(T), b.static)
            pair = {"T": T, "compare_a": compare_a, "compare_b": compare_b,
                    "masked": a.masked and b.masked}
        self._pairs[position] = pair
        return pair

    def add(self, name: str, position: int, pred: np.ndarray, metrics: dict,
            condition: str, index: int, stamp_ns: int) -> dict | None:
        """Stream ``name`` scored ``pred`` [H,W] on frame ``position`` (``metrics``: its
        frame metrics, for the median scaling). Records and returns the TAE of the pair
        with its previous frame when there is one, else None."""
        res = self.results
        if res.align is not None:
            return None
        scale = metrics["scale_ratio"] if res.median_scaling else 1.0
        depth = scored_depth(pred, res.clamp, scale)
        prev, self._depth[name] = self._depth.get(name), (position, depth)
        if prev is None or prev[0] != position - 1:
            return None
        pair = self._pair(position)
        if pair is None:
            return None
        a, b = self._scenes[position - 1], self._scenes[position]
        values = temporal_alignment_error(prev[1], depth, self.intrinsics, pair["T"],
                                          pair["compare_a"], pair["compare_b"], a.static,
                                          b.static)
        if values["pixels"] == 0:
            return None
        res.model(name).temporal.append(TemporalRecord(
            name, self.bag, condition, int(index), int(stamp_ns), values, pair["masked"]))
        return values


# -- views of the results ------------------------------------------------------------------
def summary(records) -> dict:
    """{"per_condition": {cond: {"tae", "pairs"}}, "all": {...}}: the mean TAE of the
    pairs (NaN-free), per condition and over all of them."""
    groups: dict[str, list[float]] = {}
    for r in records:
        if math.isfinite(r.values["tae"]):
            groups.setdefault(r.condition, []).append(r.values["tae"])
            groups.setdefault("all", []).append(r.values["tae"])
    out = {g: {"tae": float(np.mean(v)), "pairs": len(v)} for g, v in groups.items()}
    return {"per_condition": {c: v for c, v in out.items() if c != "all"},
            "all": out.get("all", {"tae": None, "pairs": 0})}


def _static_note(results) -> str:
    records = [r for res in results.models.values() for r in res.temporal]
    unmasked = sum(1 for r in records if not r.masked)
    if unmasked == 0:
        return "Static pixels: those outside the bags' moving-object masks."
    return (f"{unmasked} of {len(records)} pairs come from bags without a moving-object "
            "mask: there every pixel counts as static (moving cars included).")


def markdown(results, conditions, labels) -> list[str]:
    """Report lines: one row per model that has pairs, TAE per condition (and pairs)."""
    rows = [(name, summary(res.temporal), res.summary()) for name, res in
            results.models.items() if res.temporal]
    if not rows:
        return []
    head = ["model"] + [f"{labels.get(c, c)} {k}" for c in conditions
                        for k in ("TAE", "absRel moving")] + ["pairs"]
    lines = ["## Temporal alignment error (TAE)", "",
             "abs_rel between the depth of frame k warped into frame k+1 with the known "
             "camera motion and the depth of frame k+1 (and back), over the static pixels "
             "with a reference depth; lower is steadier (Video Depth Anything, CVPR 2025). "
             + _static_note(results) + " absRel moving: abs_rel over the pixels of moving "
             "objects alone (a fused stream that lags behind them scores worse there).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s, scores in rows:
        cells = [name.replace("|", "/")]
        for c in conditions:
            v = s["per_condition"].get(c, {}).get("tae")
            moving = scores.get(c, {}).get("abs_rel_moving")
            cells.append("-" if v is None else f"{v:.4f}")
            cells.append("-" if moving is None or not math.isfinite(moving)
                         else f"{moving:.4f}")
        cells.append(str(s["all"]["pairs"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_csv(results, path) -> None:
    """``temporal.csv``: one row per (model, frame pair)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "bag", "condition", "index", "stamp_ns", *TAE_KEYS])
        for res in results.models.values():
            for r in res.temporal:
                writer.writerow([r.model, r.bag, r.condition, r.index, r.stamp_ns,
                                 *(f"{r.values[k]:.6g}" for k in TAE_KEYS)])


def plot_per_frame(results, path, labels) -> object | None:
    """TAE of each pair against the frame index, one line per model and condition."""
    from depth_perception.evaluation.plots import line_plot

    series = []
    for name, res in results.models.items():
        by_condition: dict[str, list] = {}
        for r in res.temporal:
            by_condition.setdefault(r.condition, []).append((r.index, r.values["tae"]))
        for cond, points in by_condition.items():
            x, y = zip(*sorted(points))
            series.append((x, y, f"{name} / {labels.get(cond, cond)}", {"marker": "."}))
    if not series:
        return None
    return line_plot(path, series, "frame (k+1 of the pair)", "TAE (abs_rel between frames)",
                     "temporal alignment error per frame pair", figsize=(7.0, 3.6))
