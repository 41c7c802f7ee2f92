"""Evaluation results and the reports written from them.

:class:`EvaluationResults` collects per-frame scores of one or more models (offline or
online evaluation, several backends or checkpoints on the same bags) and
:func:`write_report` turns them into:

* ``metrics.json``: ``{"per_condition": {cond: {abs_rel, ..., "frames": n}}, "all": {...},
  "models": {name: {"per_condition", "all", "error_vs_distance"}}, "settings": {...}}``;
  the top-level ``per_condition``/``all`` are those of the first model added;
* ``per_frame.csv``: one row per (model, frame);
* ``report.md``: a table laid out like SSD Table 1 (rows = models, column groups =
  conditions with absRel sqRel RMSE RMSElog d1 d2 d3), then the per-model error against
  distance and the plots;
* plots (matplotlib, Agg backend): ``abs_rel_per_condition.png`` (bars),
  ``error_vs_distance.png`` (abs_rel binned by ground-truth depth), and per model
  ``samples_<model>.png`` (image | depth | reference overlay | error map per condition).

Scores are the mean of per-image metrics (:class:`depth_perception.metrics.MetricAccumulator`).
The error-against-distance curve pools pixels: for each ground-truth depth bin it is the
mean of ``|g - p| / g`` over all valid pixels of all frames falling in the bin.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depth_perception.evaluation import sparsification, temporal
from depth_perception.evaluation.plots import line_plot, pyplot
from depth_perception.evaluation.protocols import crop_mask
from depth_perception.metrics import (MetricAccumulator, check_range, compute_depth_metrics,
                                      fit_affine, valid_mask)

log = logging.getLogger(__name__)

#: Metrics shown in the table (SSD Table 1 columns plus rmse_log and d2, d3).
TABLE_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
#: with an image-blind prior: abs_rel over the structure pixels (prior off by > 20 %)
STRUCTURE_METRICS = ("abs_rel_structure",)
#: Metrics written to metrics.json and per_frame.csv.
JSON_METRICS = (TABLE_METRICS + STRUCTURE_METRICS
                + ("structure_fraction", "silog", "log10", "scale_ratio", "coverage")
                + ("abs_rel_moving", "moving_fraction")    # with a moving-object mask
                + sparsification.KEYS)                     # with a confidence
TABLE_HEADERS = {"abs_rel": "absRel", "sq_rel": "sqRel", "rmse": "RMSE",
                 "rmse_log": "RMSElog", "a1": "δ1", "a2": "δ2", "a3": "δ3",
                 "abs_rel_structure": "absRel struct."}
HIGHER_IS_BETTER = ("a1", "a2", "a3")
#: Column order of the known recording conditions; others follow alphabetically.
CONDITION_ORDER = ("day-clear", "night", "rain", "snow")
CONDITION_LABELS = {"day-clear": "day-clear", "night": "night", "rain": "day-rain",
                    "snow": "day-snow"}
#: Ground-truth depth bin edges [m] of the error-against-distance curve.
DEFAULT_BIN_EDGES = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0)


def order_conditions(conditions) -> list[str]:
    """Known conditions first in :data:`CONDITION_ORDER`, then the rest sorted."""
    conditions = set(conditions)
    known = [c for c in CONDITION_ORDER if c in conditions]
    return known + sorted(conditions - set(known))


@dataclass
class FrameRecord:
    """Scores of one frame of one model."""

    model: str
    bag: str
    condition: str
    index: int
    stamp_ns: int
    metrics: dict


@dataclass
class SampleFrame:
    """A frame kept for the sample figure. image [H,W,3] uint8 or None; depth, reference
    [H,W]; confidence [H,W] in [0, 1] or None (a row without one)."""

    stamp_ns: int
    image: np.ndarray | None
    depth: np.ndarray
    reference: np.ndarray
    confidence: np.ndarray | None = None


@dataclass
class ModelResults:
    """Everything collected for one model (or backend, or online/offline run)."""

    name: str
    accumulator: MetricAccumulator
    bin_edges: tuple = DEFAULT_BIN_EDGES
    frames: list = field(default_factory=list)
    #: condition -> ([n_bins] sum of |g-p|/g, [n_bins] pixel counts)
    bins: dict = field(default_factory=dict)
    #: condition -> SampleFrame (the middle-ish frame: the first one kept, then replaced
    #: once by the frame at index ``sample_index``)
    samples: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    #: temporal.TemporalRecord of each scored frame pair (TAE)
    temporal: list = field(default_factory=list)
    #: condition -> {metric: [sum of curves, sum of oracle curves, images]} (confidence)
    sparsification: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """{group: {metric: mean, "frames": n, ...}} for "all" and each condition."""
        out = {}
        for group, values in self.accumulator.summary().items():
            row = {k: float(values[k]) for k in JSON_METRICS if k in values}
            row["frames"] = int(values["n_images"])
            row["n_valid"] = int(values["n_valid"])
            out[group] = row
        return out

    def conditions(self) -> list[str]:
        return order_conditions(g for g in self.accumulator.summary() if g != "all")

    def error_vs_distance(self) -> dict:
        """{condition: {"bin_edges", "abs_rel" (None for empty bins), "pixels"}}."""
        out = {}
        for cond, (sums, counts) in self.bins.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            out[cond] = {"bin_edges": [float(e) for e in self.bin_edges],
                         "abs_rel": [None if not np.isfinite(v) else float(v) for v in mean],
                         "pixels": [int(c) for c in counts]}
        return out


class EvaluationResults:
    """Per-frame scores of several models on the same bags, with the protocol settings.

    ``add_frame`` computes the metrics with :func:`depth_perception.metrics.compute_depth_metrics`
    (valid: finite ``min_depth < gt < max_depth``; optional median scaling or alignment;
    prediction clamped to the range) and records them.
    """

    def __init__(self, min_depth: float = 0.1, max_depth: float = 80.0,
                 median_scaling: bool = False, align: str | None = None,
                 bin_edges=DEFAULT_BIN_EDGES, sample_index: int = 0,
                 reference: str = "lidar", clamp: tuple | None = None,
                 crop: tuple | None = None, protocol: str | None = None,
                 median: str = "numpy"):
        self.clamp = check_range(min_depth, max_depth, clamp)      # prediction clamp
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        #: (top, bottom, left, right) fractions of the reference image that are scored
        self.crop = None if crop is None else tuple(float(c) for c in crop)
        self.protocol = protocol
        self.median = median                                        # metrics.MEDIANS
        self.median_scaling = bool(median_scaling)
        self.align = align
        self.bin_edges = tuple(float(e) for e in bin_edges)
        if len(self.bin_edges) < 2 or np.any(np.diff(self.bin_edges) <= 0):
            raise ValueError(f"evaluation: bin edges must increase, got {self.bin_edges}")
        self.sample_index = int(sample_index)
        self.reference = reference
        self.models: dict[str, ModelResults] = {}

    # -- collecting ----------------------------------------------------------------------
    def model(self, name: str) -> ModelResults:
        """The results of model ``name`` (created on first use; insertion order = row order)."""
        if name not in self.models:
            acc = MetricAccumulator(self.min_depth, self.max_depth, self.median_scaling,
                                    self.align, clamp=self.clamp, median=self.median)
            self.models[name] = ModelResults(name, acc, self.bin_edges)
        return self.models[name]

    def settings(self) -> dict:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth,
                "median_scaling": self.median_scaling, "align": self.align,
                "reference": self.reference, "clamp": list(self.clamp),
                "crop": None if self.crop is None else list(self.crop),
                "protocol": self.protocol, "median": self.median}

    def add_frame(self, model: str, gt: np.ndarray, pred: np.ndarray, condition: str,
                  bag: str = "", index: int = -1, stamp_ns: int = 0,
                  image: np.ndarray | None = None,
                  structure: np.ndarray | None = None,
                  confidence: np.ndarray | None = None,
                  moving: np.ndarray | None = None) -> dict:
        """Score one frame. gt, pred: [H,W] metres (NaN invalid); image [H,W,3] for samples;
        structure: [H,W] bool structure pixels of an image-blind prior (adds
        ``abs_rel_structure``).

        ``+inf`` in the prediction counts as the top of the clamp and ``-inf`` as its
        bottom (REP 117: beyond range / too close); NaN predictions (no depth there) are
        not scored and lower the frame's ``coverage`` (scored / valid reference pixels).
        Only the pixels inside the protocol's ``crop`` are scored.

        Raises ValueError (from the metrics) when the frame has no valid reference pixel.
        """
        gt = np.asarray(gt, dtype=np.float32)
        # REP 117 meanings of a depth image: +inf beyond range, -inf too close; the
        # protocol clamps predictions to [min_depth, max_depth] anyway.
        pred = np.asarray(pred, dtype=np.float32)
        pred = np.where(np.isposinf(pred), self.clamp[1],
                        np.where(np.isneginf(pred), self.clamp[0], pred)).astype(np.float32)
        # Pixels where the prediction itself is invalid (NaN: no depth published there)
        # are left out and counted: coverage = scored / valid reference pixels.
        predicted = np.isfinite(pred) & (pred > 0) if self.align != "affine_disparity" \
            else np.isfinite(pred)
        reference = self.scored_mask(gt)
        n_reference = int(reference.sum())
        metrics = compute_depth_metrics(gt, pred, self.min_depth, self.max_depth,
                                        self.median_scaling, self.align,
                                        mask=predicted & reference, structure=structure,
                                        clamp=self.clamp, median=self.median)
        metrics["coverage"] = metrics["n_valid"] / max(n_reference, 1)
        res = self.model(model)
        scored = predicted & reference
        if moving is not None:                   # abs_rel on the moving objects alone
            on = scored & np.asarray(moving, bool)
            g = gt[on].astype(np.float64)
            p = self._aligned(g, pred[on].astype(np.float64), metrics)
            metrics["abs_rel_moving"] = float(np.mean(np.abs(g - p) / g)) if g.size \
                else float("nan")
            metrics["moving_fraction"] = g.size / max(metrics["n_valid"], 1)
        if confidence is not None:               # AUSE / AURG of the scored pixels
            g = gt[scored].astype(np.float64)
            values, curves = sparsification.sparsification(
                g, self._aligned(g, pred[scored].astype(np.float64), metrics),
                np.asarray(confidence)[scored])
            metrics.update(values)
            sparsification.add_curves(res.sparsification, condition, curves)
        res.accumulator.add(metrics, condition)
        res.frames.append(FrameRecord(model, str(bag), condition, int(index), int(stamp_ns),
                                      metrics))
        self._add_bins(res, gt, pred, metrics, condition)
        n_in_condition = sum(1 for f in res.frames if f.condition == condition)
        if condition not in res.samples or n_in_condition - 1 == self.sample_index:
            res.samples[condition] = SampleFrame(
                int(stamp_ns), None if image is None else np.asarray(image), pred.copy(),
                gt.copy(), None if confidence is None else np.array(confidence, np.float32))
        return metrics

    def scored_mask(self, gt: np.ndarray) -> np.ndarray:
        """[H,W] bool: valid reference pixels inside the crop."""
        valid = valid_mask(gt, self.min_depth, self.max_depth)
        if self.crop is not None:
            valid &= crop_mask(gt.shape, self.crop)
        return valid

    def _aligned(self, g: np.ndarray, p: np.ndarray, metrics: dict) -> np.ndarray:
        """The prediction [N] as the metrics saw it (after alignment and clamping)."""
        if self.median_scaling:
            p = p * metrics["scale_ratio"]
        elif self.align == "affine":
            s, t = fit_affine(p, g)
            p = s * p + t
        elif self.align == "affine_disparity":
            s, t = fit_affine(p, 1.0 / g)
            p = 1.0 / np.clip(s * p + t, 1.0 / self.clamp[1], 1.0 / self.clamp[0])
        return np.clip(p, *self.clamp)

    def _add_bins(self, res: ModelResults, gt, pred, metrics, condition) -> None:
        valid = self.scored_mask(gt) & np.isfinite(pred)
        if self.align != "affine_disparity":
            valid &= pred > 0
        g = gt[valid].astype(np.float64)
        p = self._aligned(g, pred[valid].astype(np.float64), metrics)
        err = np.abs(g - p) / g
        edges = np.asarray(self.bin_edges)
        which = np.digitize(g, edges) - 1                                # bin of each pixel
        inside = (which >= 0) & (which < len(edges) - 1)
        n_bins = len(edges) - 1
        sums = np.bincount(which[inside], weights=err[inside], minlength=n_bins)
        counts = np.bincount(which[inside], minlength=n_bins)
        if condition in res.bins:
            s0, c0 = res.bins[condition]
            sums, counts = s0 + sums, c0 + counts
        res.bins[condition] = (sums, counts)

    def absorb(self, other: "EvaluationResults", rename=None, append: bool = False) -> None:
        """Add the models of ``other`` (same protocol) under ``rename(name)``.

        ``append``: a model already here gets the other's frames added (e.g. the same
        model evaluated bag by bag); otherwise a name in both is an error.
        """
        if other.settings() != self.settings() or other.bin_edges != self.bin_edges:
            raise ValueError(f"cannot merge evaluations with different protocols: "
                             f"{self.settings()} vs {other.settings()}")
        for name, res in other.models.items():
            new = rename(name) if rename else name
            for f in res.frames:
                f.model = new
            if new not in self.models:
                res.name = new
                self.models[new] = res
                continue
            if not append:
                raise ValueError(f"cannot merge evaluations: model '{new}' is in both")
            mine = self.models[new]
            for f in res.frames:
                mine.frames.append(f)
                mine.accumulator.add(f.metrics, f.condition)
            for cond, (sums, counts) in res.bins.items():
                s0, c0 = mine.bins.get(cond, (0.0, 0))
                mine.bins[cond] = (s0 + sums, c0 + counts)
            for cond, sample in res.samples.items():
                mine.samples.setdefault(cond, sample)
            mine.temporal.extend(res.temporal)
            for cond, per in res.sparsification.items():
                for m, (model, oracle, n) in per.items():
                    sparsification.add_curves(mine.sparsification, cond, {m: (model, oracle)},
                                              n)
            mine.info.update({k: v for k, v in res.info.items() if k not in mine.info})

    # -- views ---------------------------------------------------------------------------
    def conditions(self) -> list[str]:
        conds = set()
        for res in self.models.values():
            conds.update(res.conditions())
        return order_conditions(conds)

    def to_dict(self) -> dict:
        if not self.models:
            raise ValueError("evaluation: no frame was scored; nothing to report")
        models = {}
        for name, res in self.models.items():
            summary = res.summary()
            models[name] = {"per_condition": {c: summary[c] for c in res.conditions()},
                            "all": summary["all"],
                            "error_vs_distance": res.error_vs_distance(),
                            "temporal": temporal.summary(res.temporal),
                            "info": res.info}
        first = next(iter(models.values()))
        return {"per_condition": first["per_condition"], "all": first["all"],
                "primary_model": next(iter(models)), "models": models,
                "settings": self.settings()}


# -- writers ------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if key in HIGHER_IS_BETTER:
        return f"{100.0 * value:.2f}"                       # percent, as in SSD Table 1
    return f"{value:.4f}" if key.startswith("abs_rel") else f"{value:.3f}"


def markdown_table(results: EvaluationResults) -> str:
    """SSD-Table-1-style markdown: rows = models; per condition absRel .. δ3; then "all".

    The best value of each column is bold when there are several models.
    """
    data = results.to_dict()["models"]
    conditions = results.conditions()
    groups = conditions + (["all"] if len(conditions) > 1 else [])
    sup = "*" if results.median_scaling else ("aff" if results.align else "")
    has_structure = any(m["all"].get("abs_rel_structure") is not None for m in data.values())
    metrics = TABLE_METRICS[:1] + (STRUCTURE_METRICS if has_structure else ()) + TABLE_METRICS[1:]
    head = ["Method", "sup."]
    for g in groups:
        label = CONDITION_LABELS.get(g, g)
        head += [f"{label} {TABLE_HEADERS[k]}" if i == 0 else TABLE_HEADERS[k]
                 for i, k in enumerate(metrics)]
        head.append("frames")
    best = {}
    if len(data) > 1:
        for g in groups:
            for k in metrics:
                vals = [(m["all"] if g == "all" else m["per_condition"].get(g, {})).get(k)
                        for m in data.values()]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                if vals:
                    best[(g, k)] = max(vals) if k in HIGHER_IS_BETTER else min(vals)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in data.items():
        row = [name.replace("|", "/"), sup]
        for g in groups:
            vals = m["all"] if g == "all" else m["per_condition"].get(g, {})
            for k in metrics:
                v = vals.get(k)
                cell = _fmt(k, v)
                if (g, k) in best and v is not None and v == best[(g, k)]:
                    cell = f"**{cell}**"
                row.append(cell)
            row.append(str(vals.get("frames", 0)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> Path:
    """Write via a temporary file and rename: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_metrics_json(results: EvaluationResults, path: Path) -> Path:
    return _write_atomic(path, json.dumps(results.to_dict(), indent=2) + "\n")


def write_per_frame_csv(results: EvaluationResults, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "bag", "condition", "index", "stamp_ns", *JSON_METRICS,
                         "n_valid"])
        for res in results.models.values():
            for f in res.frames:
                writer.writerow([f.model, f.bag, f.condition, f.index, f.stamp_ns,
                                 *(f"{f.metrics.get(k, float('nan')):.6g}"   # structure
                                   for k in JSON_METRICS),                    # needs a prior
                                 f.metrics["n_valid"]])
    return path


def plot_abs_rel_per_condition(results: EvaluationResults, path: Path) -> Path:
    plt = pyplot()
    conditions = results.conditions()
    names = list(results.models)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(conditions), 3.6))
    x = np.arange(len(conditions))
    for i, name in enumerate(names):
        summary = results.models[name].summary()
        vals = [summary.get(c, {}).get("abs_rel", np.nan) for c in conditions]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, [CONDITION_LABELS.get(c, c) for c in conditions])
    ax.set_ylabel("absRel (lower is better)")
    ax.set_title("abs_rel per condition")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_vs_distance(results: EvaluationResults, path: Path) -> Path:
    edges = np.asarray(results.bin_edges)
    centres = 0.5 * (edges[:-1] + edges[1:])
    series = []
    for name, res in results.models.items():
        for cond in res.conditions():
            sums, counts = res.bins.get(cond, (np.zeros(len(centres)), np.zeros(len(centres))))
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            label = f"{name} / {CONDITION_LABELS.get(cond, cond)}"
            series.append((centres, mean, label, {"marker": "o"}))
    return line_plot(path, series, "ground-truth depth [m] (bin centre)", "absRel",
                     "error against distance")


def plot_samples(results: EvaluationResults, name: str, path: Path) -> Path:
    """One row per condition: image | predicted depth | reference over the image |
    |error|/gt, and the confidence (0 black .. 1 white) when the row has one."""
    plt = pyplot()
    res = results.models[name]
    conditions = [c for c in res.conditions() if c in res.samples]
    confident = any(res.samples[c].confidence is not None for c in conditions)
    columns = 4 + confident
    fig, axes = plt.subplots(len(conditions), columns,
                             figsize=(3.5 * columns, 1.0 + 1.6 * len(conditions)), squeeze=False)
    for row, cond in zip(axes, conditions):
        s = res.samples[cond]
        h, w = s.depth.shape
        image = s.image if s.image is not None else np.zeros((h, w, 3), np.uint8)
        ref = s.reference
        valid = valid_mask(ref, results.min_depth, results.max_depth)
        # one colour scale for prediction and reference: up to the far reference depths
        vmax = float(np.percentile(ref[valid], 99)) if valid.any() else results.max_depth
        row[0].imshow(image)
        row[0].set_ylabel(CONDITION_LABELS.get(cond, cond))
        shown = np.clip(np.where(np.isfinite(s.depth), s.depth, np.nan), 0, results.max_depth)
        row[1].imshow(shown, cmap="magma_r", vmin=0, vmax=vmax)
        row[2].imshow(image)
        vv, uu = np.nonzero(valid)
        if valid.sum() > 0.3 * valid.size:                    # dense reference: show as image
            row[2].imshow(np.where(valid, ref, np.nan), cmap="magma_r", alpha=0.7)
        else:                                                 # sparse LiDAR: scatter
            row[2].scatter(uu, vv, c=ref[valid], s=1.5, cmap="magma_r", vmin=0, vmax=vmax)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.where(valid, np.abs(s.depth - ref) / ref, np.nan)
        if valid.sum() > 0.3 * valid.size:
            im = row[3].imshow(err, cmap="inferno", vmin=0, vmax=0.5)
        else:
            row[3].imshow(np.zeros((h, w)), cmap="gray", vmin=0, vmax=1)
            im = row[3].scatter(uu, vv, c=err[valid], s=2, cmap="inferno", vmin=0, vmax=0.5)
            row[3].set_xlim(0, w - 1)
            row[3].set_ylim(h - 1, 0)
        fig.colorbar(im, ax=row[3], fraction=0.025)
        if confident:
            conf = s.confidence if s.confidence is not None else np.full((h, w), np.nan)
            im = row[4].imshow(conf, cmap="gray", vmin=0, vmax=1)
            fig.colorbar(im, ax=row[4], fraction=0.025)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("image", "predicted depth", "reference depth",
                                   "|error| / reference", "confidence")):
        ax.set_title(title, fontsize=9)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: EvaluationResults, out_dir: str | Path, title: str = "Depth evaluation",
                 notes: str = "", plots: bool = True) -> dict:
    """Write per_frame.csv, the plots, report.md and (last) metrics.json into ``out_dir``.

    Returns {"metrics": path, "per_frame": path, "report": path, "plots": [paths]}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results.to_dict()                                   # fails early on an empty result
    paths = {"per_frame": write_per_frame_csv(results, out / "per_frame.csv"), "plots": []}
    if any(res.temporal for res in results.models.values()):
        temporal.write_csv(results, out / "temporal.csv")
        paths["temporal"] = out / "temporal.csv"
    if plots:
        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        paths["plots"].append(plot_abs_rel_per_condition(results, plot_dir /
                                                         "abs_rel_per_condition.png"))
        paths["plots"].append(plot_error_vs_distance(results, plot_dir / "error_vs_distance.png"))
        tae = temporal.plot_per_frame(results, plot_dir / "tae_per_frame.png",
                                      CONDITION_LABELS)
        paths["plots"] += [tae] if tae else []
        curves = sparsification.plot(results, plot_dir / "sparsification.png", CONDITION_LABELS)
        paths["plots"] += [curves] if curves else []
        for name in results.models:
            paths["plots"].append(plot_samples(results, name,
                                               plot_dir / f"samples_{_slug(name)}.png"))
    s = results.settings()
    lines = [f"# {title}", "",
             f"Reference: {s['reference']}; valid depth {s['min_depth']:g}-{s['max_depth']:g} m; "
             f"median scaling: {'yes (*)' if s['median_scaling'] else 'no'}; "
             f"alignment: {s['align'] or 'none'}. Errors are computed per frame and averaged; "
             "δ1-δ3 in percent.", ""]
    if notes:
        lines += [notes, ""]
    lines += [markdown_table(results), ""]
    lines += temporal.markdown(results, results.conditions(), CONDITION_LABELS)
    lines += sparsification.markdown(results, results.conditions(), CONDITION_LABELS)
    infos = [(name, res.info) for name, res in results.models.items() if res.info]
    if infos:
        lines += ["## Models", ""]
        for name, info in infos:
            text = ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                             for k, v in info.items())
            lines.append(f"- **{name}**: {text}")
        lines.append("")
    lines += ["## Error against distance (absRel per ground-truth depth bin)", ""]
    edges = results.bin_edges
    bin_names = [f"{edges[i]:g}-{edges[i + 1]:g} m" for i in range(len(edges) - 1)]
    lines += ["| model | condition | " + " | ".join(bin_names) + " |",
              "|" + "---|" * (len(bin_names) + 2)]
    for name, res in results.models.items():
        for cond, curve in res.error_vs_distance().items():
            cells = ["-" if v is None else f"{v:.3f}" for v in curve["abs_rel"]]
            lines.append(f"| {name} | {CONDITION_LABELS.get(cond, cond)} | " + " | ".join(cells)
                         + " |")
    lines.append("")
    if paths["plots"]:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in paths["plots"]]
        lines.append("")
    report = _write_atomic(out / "report.md", "\n".join(lines))
    paths["report"] = report
    # metrics.json last: when it appears, the whole report is there
    paths["metrics"] = write_metrics_json(results, out / "metrics.json")
    log.info("evaluation report written to %s", report)
    return paths
