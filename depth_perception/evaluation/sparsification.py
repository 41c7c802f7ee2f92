"""Sparsification curves of a per-pixel confidence: AUSE and AURG (pure numpy).

The protocol of Poggi et al., "On the uncertainty of self-supervised monocular depth
estimation" (CVPR 2020; ``compute_aucs`` of mattpoggi/mono-uncertainty ``evaluate.py``),
per image:

* the pixels are removed in order of decreasing uncertainty (increasing confidence), in
  ``intervals`` (50) steps of 2 %: at step t the pixels whose confidence is at least
  its ``100 t / intervals`` percentile remain (ties stay), and the curve is the metric of
  the remaining pixels; a final 0 at "everything removed";
* the oracle removes them in order of their true error (for abs_rel ``|g - p| / g``,
  for RMSE ``(g - p)^2``);
* AUSE = area under the curve - area under the oracle (trapezoids over the removed
  fraction 0..1): 0 for a confidence that orders the pixels as their errors do;
* AURG = metric of all pixels (the random ordering's flat curve) - area under the
  curve: > 0 when the confidence beats chance, about 0 for a random one (the final 0
  of the curve makes it 1/(2 intervals) of the metric, 0.01 x, for any ordering).

The scores of an evaluation are the means of the per-image values, as in the paper. The
Nav2 view of the same ranking, per image: the share of pixels more than 10 % off the
reference among all, and among the 80 % most confident (``outliers_10``,
``outliers_10_kept80``).
"""
from __future__ import annotations

import numpy as np

INTERVALS = 50
METRICS = ("abs_rel", "rmse")
#: per-frame keys (frame metrics, metrics.json, per_frame.csv)
KEYS = ("ause_abs_rel", "aurg_abs_rel", "ause_rmse", "aurg_rmse", "outliers_10",
        "outliers_10_kept80")


def _pixel_errors(g: np.ndarray, p: np.ndarray) -> dict:
    return {"abs_rel": np.abs(g - p) / g, "rmse": (g - p) ** 2}


def _reduce(metric: str, mean: np.ndarray) -> np.ndarray:
    return np.sqrt(mean) if metric == "rmse" else mean


def _ranked(values: np.ndarray) -> np.ndarray:
    """[N] float64 ranking values; NaN (no confidence) below everything, removed first."""
    return np.nan_to_num(np.asarray(values, np.float64), nan=-1e30)


def curve(order_by: np.ndarray, errors: np.ndarray, metric: str,
          intervals: int = INTERVALS) -> np.ndarray:
    """[intervals + 1] metric of the pixels that remain after removing the least
    ``order_by`` ones in ``intervals`` steps (ties at a threshold remain), then 0."""
    c = _ranked(order_by)
    thresholds = np.percentile(c, 100.0 / intervals * np.arange(intervals))   # [T]
    ascending = np.sort(c)
    kept = len(c) - np.searchsorted(ascending, thresholds, side="left")       # [T]
    order = np.argsort(-c, kind="stable")                  # most confident first
    sums = np.cumsum(np.asarray(errors, np.float64)[order])
    values = _reduce(metric, sums[kept - 1] / kept)
    return np.append(values, 0.0)


def _area(y: np.ndarray) -> float:
    x = np.linspace(0.0, 1.0, len(y))
    return float(np.trapezoid(y, x))


def sparsification(g: np.ndarray, p: np.ndarray, confidence: np.ndarray,
                   intervals: int = INTERVALS) -> tuple[dict, dict]:
    """One image: g, p, confidence [N] (reference depth, prediction as scored, confidence
    of the scored pixels). Returns (``{KEYS: value}``, ``{metric: (curve, oracle)}``
    with the [intervals + 1] curves)."""
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    c = np.asarray(confidence, np.float64)
    if not (g.shape == p.shape == c.shape) or g.ndim != 1 or len(g) == 0:
        raise ValueError(f"sparsification: expected three [N] arrays (N > 0), got shapes "
                         f"{g.shape}, {p.shape}, {c.shape}")
    errors = _pixel_errors(g, p)
    values, curves = {}, {}
    for m in METRICS:
        model = curve(c, errors[m], m, intervals)
        oracle = curve(-errors[m], errors[m], m, intervals)
        full = float(_reduce(m, errors[m].mean()))
        values[f"ause_{m}"] = _area(model) - _area(oracle)
        values[f"aurg_{m}"] = full - _area(model)
        curves[m] = (model, oracle)
    bad = errors["abs_rel"] > 0.1
    ranked = _ranked(c)
    kept = ranked >= np.percentile(ranked, 20.0)
    values["outliers_10"] = float(bad.mean())
    values["outliers_10_kept80"] = float(bad[kept].mean())
    return values, curves


def add_curves(store: dict, condition: str, curves: dict, images: int = 1) -> None:
    """Add the curves of ``images`` images (``{metric: (model curve, oracle curve)}``,
    summed over those images) into ``store`` ({condition: {metric: [sum of curves, sum
    of oracle curves, images]}}), whose means the plot shows."""
    per = store.setdefault(condition, {})
    for m, (model, oracle) in curves.items():
        if m in per:
            per[m][0] = per[m][0] + model
            per[m][1] = per[m][1] + oracle
            per[m][2] += images
        else:
            per[m] = [np.array(model, np.float64), np.array(oracle, np.float64), images]


def markdown(results, conditions, labels) -> list[str]:
    """Report lines: AUSE / AURG (abs_rel, RMSE) and the outlier shares per model with a
    confidence, per condition."""
    rows = [(name, res.summary()) for name, res in results.models.items()
            if res.sparsification]
    if not rows:
        return []
    lines = ["## Confidence: sparsification (AUSE / AURG)", "",
             "Pixels removed from the least confident on, 2 % at a time (Poggi et al., "
             "CVPR 2020): AUSE is the area between the curve and the oracle (removing by "
             "true error; lower is better, 0 is perfect), AURG the area gained over random "
             "removal (higher is better, > 0 beats chance); per image, averaged. Outliers: "
             "the share of pixels more than 10 % off the reference, of all / of the 80 % "
             "most confident.", "",
             "| model | condition | AUSE absRel | AURG absRel | AUSE RMSE | AURG RMSE | "
             "outliers > 10 % (all / kept 80 %) |", "|---|---|---|---|---|---|---|"]
    for name, summary in rows:
        for c in conditions:
            v = summary.get(c, {})
            if v.get("ause_abs_rel") is None:
                continue
            lines.append(f"| {name.replace('|', '/')} | {labels.get(c, c)} | "
                         f"{v['ause_abs_rel']:.4f} | {v['aurg_abs_rel']:.4f} | "
                         f"{v['ause_rmse']:.3f} | {v['aurg_rmse']:.3f} | "
                         f"{100 * v['outliers_10']:.1f} % / "
                         f"{100 * v['outliers_10_kept80']:.1f} % |")
    return lines + [""]


def plot(results, path, labels):
    """Mean sparsification curves (abs_rel) with their oracles, per model and condition."""
    from depth_perception.evaluation.plots import line_plot

    series = []
    for name, res in results.models.items():
        for cond, per in res.sparsification.items():
            model, oracle, n = per["abs_rel"]
            x = np.linspace(0.0, 1.0, len(model))
            label = f"{name} / {labels.get(cond, cond)}"
            series.append((x, model / n, label, {"marker": "."}))
            series.append((x, oracle / n, f"{label} (oracle)", {"linestyle": "--"}))
    if not series:
        return None
    return line_plot(path, series, "fraction of pixels removed (least confident first)",
                     "absRel of the remaining pixels", "sparsification curves")
