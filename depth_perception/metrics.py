"""Depth evaluation metrics (numpy only): used by training validation and evaluation.

Protocol (Eigen et al. / monodepth2 family):

* valid pixels: ``gt`` finite and ``min_depth < gt < max_depth``;
* optional alignment of the prediction to the ground truth over the valid pixels:
  per-image median scaling (``median(gt) / median(pred)``) for relative models, or a
  least-squares affine fit in depth (``align="affine"``) or in disparity
  (``align="affine_disparity"``, where ``pred`` is an affine-invariant disparity);
* the prediction is then clamped to ``[min_depth, max_depth]``;
* errors are computed per image; a dataset score is the mean of per-image scores
  (:class:`MetricAccumulator`), overall and per condition.

Definitions (g = ground truth, p = prediction, both metres, over valid pixels)::

    abs_rel  = mean(|g - p| / g)            sq_rel = mean((g - p)^2 / g)
    rmse     = sqrt(mean((g - p)^2))         rmse_log = sqrt(mean((ln g - ln p)^2))
    a_k      = mean(max(g/p, p/g) < 1.25^k)  log10 = mean(|log10 g - log10 p|)
    silog    = 100 * sqrt(mean(d^2) - mean(d)^2),  d = ln p - ln g  (KITTI benchmark)

``scale_ratio`` is always reported: ``median(g) / median(p)`` of the prediction as it
was given (before any alignment), so ``|scale_ratio - 1|`` is the metric-scale error
of a model evaluated *without* median scaling.

An honest floor: :func:`depth_prior` is an image-blind predictor, the per-pixel median
of reference depths (e.g. of the training bags). Given ``structure`` (the pixels where
that prior's relative error exceeds :data:`STRUCTURE_THRESHOLD`, from
:func:`structure_mask`), the metrics add ``abs_rel_structure``: abs_rel over those
pixels only, the part of the task the prior cannot do (NaN when there is none).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

#: Keys of the dictionary returned by :func:`compute_depth_metrics`.
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog",
               "log10", "scale_ratio", "n_valid")
#: prior relative error above which a pixel is a "structure pixel"
STRUCTURE_THRESHOLD = 0.2
#: Error metrics for which lower is better (the rest: a1..a3 higher is better).
LOWER_IS_BETTER = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10")

ALIGN_MODES = (None, "affine", "affine_disparity")


def valid_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0) -> np.ndarray:
    """Boolean mask [H,W] of pixels with finite ``min_depth < gt < max_depth``."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)


def depth_prior(depths, min_depth: float = 1e-3, max_depth: float = 80.0) -> np.ndarray:
    """Image-blind depth prior: the per-pixel median of reference depth maps.

    depths: [N,H,W] (or a list of [H,W]) metres, invalid = NaN / out of range. Pixels
    never valid take the median of their row, then the median of everything (a prior
    must predict every pixel). Returns [H,W] float32 metres.
    """
    stack = np.asarray(list(depths) if not isinstance(depths, np.ndarray) else depths,
                       dtype=np.float32)
    if stack.ndim != 3 or len(stack) == 0:
        raise ValueError(f"depth prior: expected [N,H,W] depth maps, got shape {stack.shape}")
    stack = np.where(valid_mask(stack, min_depth, max_depth), stack, np.nan)
    if not np.isfinite(stack).any():
        raise ValueError(f"depth prior: no valid reference pixel in {len(stack)} maps "
                         f"(need {min_depth} < depth < {max_depth})")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN pixels / rows
        prior = np.nanmedian(stack, axis=0)                      # [H,W]
        rows = np.nanmedian(prior, axis=1, keepdims=True)        # [H,1]
    prior = np.where(np.isfinite(prior), prior, rows)
    prior = np.where(np.isfinite(prior), prior, np.nanmedian(stack))
    return prior.astype(np.float32)


def structure_mask(prior: np.ndarray, gt: np.ndarray,
                   threshold: float = STRUCTURE_THRESHOLD) -> np.ndarray:
    """[H,W] bool: pixels where the prior's relative error |prior - gt| / gt > threshold."""
    prior = np.asarray(prior, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if prior.shape != gt.shape:
        raise ValueError(f"structure mask: prior {prior.shape} and reference {gt.shape} differ")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.isfinite(gt) & (gt > 0) & (np.abs(prior - gt) / gt > threshold)


MEDIANS = ("numpy", "lower")


def _median(x: np.ndarray, rule: str) -> float:
    """Median of [N] values: ``numpy`` or ``lower`` (torch.median: the lower middle)."""
    if rule == "numpy":
        return float(np.median(x))
    if rule == "lower":
        return float(np.partition(x, (x.size - 1) // 2)[(x.size - 1) // 2])
    raise ValueError(f"depth metrics: median must be one of {MEDIANS}, got {rule!r}")


def check_range(min_depth: float, max_depth: float,
                clamp: tuple | None = None) -> tuple[float, float]:
    """The prediction clamp (lo, hi) of a protocol, checked: ``0 <= min_depth <
    max_depth`` and ``0 < lo < hi < inf``; ``clamp`` None means (min_depth, max_depth)."""
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"depth metrics: need 0 <= min_depth < max_depth, got "
                         f"{min_depth}, {max_depth}")
    lo, hi = (min_depth, max_depth) if clamp is None else (float(clamp[0]), float(clamp[1]))
    if not 0 < lo < hi < math.inf:
        raise ValueError(f"depth metrics: the prediction clamp must be finite with "
                         f"0 < lo < hi, got ({lo}, {hi}) (give clamp= when the valid range "
                         "starts at 0 or has no upper bound)")
    return lo, hi


def fit_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` minimising ``sum((scale * x + shift - y)^2)``.

    x, y: [N] float. Raises ValueError when x is constant (the fit is undetermined).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("affine alignment needs at least two distinct prediction values "
                         "over the valid pixels (the prediction is constant)")
    A = np.stack([x, np.ones_like(x)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(scale), float(shift)


def compute_depth_metrics(gt: np.ndarray, pred: np.ndarray, min_depth: float = 1e-3,
                          max_depth: float = 80.0, median_scaling: bool = False,
                          align: str | None = None, mask: np.ndarray | None = None,
                          structure: np.ndarray | None = None,
                          clamp: tuple | None = None, median: str = "numpy") -> dict:
    """Errors of one predicted depth map against ground truth.

    Args:
        gt: [H,W] ground-truth depth in metres; NaN/inf/0 or out of range = invalid.
        pred: [H,W] predicted depth in metres (or, with ``align="affine_disparity"``, an
            affine-invariant disparity map: larger = closer).
        min_depth, max_depth: valid ground-truth range, exclusive (metres; ``max_depth``
            may be inf), and the prediction clamp unless ``clamp`` is given.
        median_scaling: multiply the prediction by ``median(gt) / median(pred)`` first.
        align: None, ``"affine"`` (least squares ``s * pred + t`` to gt in depth) or
            ``"affine_disparity"`` (least squares ``s * pred + t`` to ``1 / gt``, then
            inverted to depth).
        mask: optional extra [H,W] boolean mask (e.g. a crop) ANDed with the valid mask.
        structure: optional [H,W] boolean structure-pixel mask (:func:`structure_mask`):
            adds ``abs_rel_structure`` (NaN when no valid pixel is in it) and
            ``structure_fraction`` (of the valid pixels).
        clamp: (lo, hi) the prediction is clamped to, when it differs from the valid
            range (monodepth2's eigen_benchmark: every gt > 0, prediction in [1e-3, 80]).
        median: the median of median scaling and ``scale_ratio``: ``numpy`` (mean of
            the two middle values of an even count) or ``lower`` (the lower one, as
            ``torch.median``, which md4all's evaluation uses).

    Returns:
        dict with :data:`METRIC_KEYS` (floats; ``n_valid`` an int).

    Raises:
        ValueError: shape mismatch, unknown ``align``, no valid pixel, or a non-finite
            / non-positive prediction inside the valid region.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(f"depth metrics: expected gt and pred of the same [H,W] shape, got "
                         f"gt {gt.shape} and pred {pred.shape}")
    if align not in ALIGN_MODES:
        raise ValueError(f"depth metrics: align must be one of {ALIGN_MODES}, got {align!r}")
    if median_scaling and align is not None:
        raise ValueError("depth metrics: use either median_scaling or align, not both")
    lo, hi = check_range(min_depth, max_depth, clamp)

    # 1. Valid pixels.
    valid = valid_mask(gt, min_depth, max_depth)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f"depth metrics: mask shape {mask.shape} != depth shape {gt.shape}")
        valid &= mask
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError(f"depth metrics: no valid ground-truth pixel (need finite "
                         f"{min_depth} < gt < {max_depth} m; {gt.size} pixels, "
                         f"{int(np.isfinite(gt).sum())} finite)")
    g, p = gt[valid], pred[valid]                                       # [N], [N]
    if structure is not None:
        structure = np.asarray(structure, dtype=bool)
        if structure.shape != gt.shape:
            raise ValueError(f"depth metrics: structure mask shape {structure.shape} != depth "
                             f"shape {gt.shape}")
        structure = structure[valid]                                    # [N]
    bad = ~np.isfinite(p) if align == "affine_disparity" else ~(np.isfinite(p) & (p > 0))
    if bad.any():
        raise ValueError(f"depth metrics: prediction has {int(bad.sum())} non-finite or "
                         f"non-positive values where the ground truth is valid")

    # 2. Scale diagnostic of the prediction as given.
    if align == "affine_disparity":
        scale_ratio = float("nan")
    else:
        scale_ratio = float(_median(g, median) / _median(p, median))

    # 3. Alignment.
    if median_scaling:
        p = p * scale_ratio
    elif align == "affine":
        s, t = fit_affine(p, g)
        p = s * p + t
    elif align == "affine_disparity":
        s, t = fit_affine(p, 1.0 / g)
        disp = np.clip(s * p + t, 1.0 / hi, 1.0 / lo)
        p = 1.0 / disp
    p = np.clip(p, lo, hi)

    # 4. Errors.
    thresh = np.maximum(g / p, p / g)
    diff = g - p
    log_diff = np.log(p) - np.log(g)
    extra = {}
    if structure is not None:
        rel = np.abs(diff[structure]) / g[structure]
        extra = {"abs_rel_structure": float(rel.mean()) if rel.size else float("nan"),
                 "structure_fraction": float(structure.mean())}
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff ** 2 / g)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
        "silog": float(100.0 * np.sqrt(max(np.mean(log_diff ** 2) - np.mean(log_diff) ** 2,
                                           0.0))),
        "log10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "scale_ratio": scale_ratio,
        "n_valid": n_valid,
        **extra,
    }


@dataclass
class MetricAccumulator:
    """Mean of per-image metrics, overall and per condition.

    >>> acc = MetricAccumulator()
    >>> acc.update(gt, pred, condition="night")      # or acc.add(metrics_dict, "night")
    >>> acc.summary()["all"]["abs_rel"]
    """

    min_depth: float = 1e-3
    max_depth: float = 80.0
    median_scaling: bool = False
    align: str | None = None
    clamp: tuple | None = None             # prediction clamp; None: (min_depth, max_depth)
    median: str = "numpy"                  # MEDIANS: the median of median scaling
    _sums: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    _counts: dict = field(default_factory=lambda: defaultdict(int))
    #: images that gave a finite value, per key (NaN values, e.g. abs_rel_structure of
    #: an image without structure pixels, are left out of that key's mean)
    _key_counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def update(self, gt: np.ndarray, pred: np.ndarray, condition: str | None = None,
               mask: np.ndarray | None = None, structure: np.ndarray | None = None) -> dict:
        """Compute one image's metrics (gt, pred: [H,W]) and add them; returns them."""
        m = compute_depth_metrics(gt, pred, self.min_depth, self.max_depth,
                                  self.median_scaling, self.align, mask, structure,
                                  self.clamp, self.median)
        self.add(m, condition)
        return m

    def add(self, metrics: dict, condition: str | None = None) -> None:
        """Add one image's metrics (from :func:`compute_depth_metrics`)."""
        groups = ["all"] if condition in (None, "all") else ["all", str(condition)]
        for group in groups:
            self._counts[group] += 1
            for key, value in metrics.items():
                if value is None or not math.isfinite(float(value)):
                    self._sums[group].setdefault(key, 0.0)   # reported as NaN if never finite
                    continue
                self._sums[group][key] += float(value)
                self._key_counts[group][key] += 1

    @property
    def count(self) -> int:
        """Number of images added."""
        return self._counts.get("all", 0)

    def summary(self) -> dict:
        """{group: {metric: mean over images, "n_images": count}}; groups "all" + conditions.

        ``n_valid`` is the total number of valid pixels, not a mean.
        """
        out = {}
        for group, n in self._counts.items():
            sums, counts = self._sums[group], self._key_counts[group]
            out[group] = {k: (v if k == "n_valid" else v / counts[k] if counts[k] else math.nan)
                          for k, v in sums.items()}
            out[group]["n_valid"] = int(sums.get("n_valid", 0))
            out[group]["n_images"] = n
        return out

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()
        self._key_counts.clear()


def format_metrics(summary: dict, keys: tuple = ("abs_rel", "sq_rel", "rmse", "rmse_log",
                                                  "a1", "a2", "a3", "scale_ratio")) -> str:
    """A fixed-width text table of :meth:`MetricAccumulator.summary` (one row per group)."""
    header = f"{'group':<12}" + "".join(f"{k:>12}" for k in keys) + f"{'images':>8}"
    rows = [header]
    for group in sorted(summary, key=lambda g: (g != "all", g)):
        vals = summary[group]
        rows.append(f"{group:<12}" + "".join(f"{vals.get(k, float('nan')):>12.4f}"
                                              for k in keys) + f"{vals['n_images']:>8d}")
    return "\n".join(rows)


#: ground-truth range bins [m] of :func:`range_breakdown`
RANGE_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)


def range_breakdown(pairs, edges=RANGE_EDGES, min_depth: float = 1e-3) -> list[dict]:
    """Where the error is: pixel-pooled figures per ground-truth range bin.

    pairs: iterable of (gt, pred) [H,W] metres (NaN/non-positive gt = no reference).
    Returns one dict per bin ``[lo, hi)``: ``share`` of all valid pixels,
    ``median_ratio`` = median(p / g) (1: right on average in that bin; the metric-scale
    error of a model, split by range) and ``abs_rel`` over the bin's pixels (NaN when
    empty). Valid pixels: finite ``gt`` in ``(min_depth, edges[-1])``, finite positive
    ``pred``.
    """
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"range_breakdown: edges must increase, got {edges.tolist()}")
    ratios: list[list[np.ndarray]] = [[] for _ in range(len(edges) - 1)]
    for gt, pred in pairs:
        g, p = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
        if g.shape != p.shape:
            raise ValueError(f"range_breakdown: gt {g.shape} and pred {p.shape} differ")
        ok = np.isfinite(g) & (g > min_depth) & (g < edges[-1]) & np.isfinite(p) & (p > 0)
        g, r = g[ok], p[ok] / g[ok]
        index = np.searchsorted(edges, g, side="right") - 1
        for b in range(len(edges) - 1):
            ratios[b].append(r[index == b])
    pooled = [np.concatenate(r) if r else np.zeros(0) for r in ratios]
    total = sum(len(r) for r in pooled)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]),
             "share": len(r) / total if total else math.nan,
             "median_ratio": float(np.median(r)) if len(r) else math.nan,
             "abs_rel": float(np.mean(np.abs(r - 1.0))) if len(r) else math.nan}
            for b, r in enumerate(pooled)]
