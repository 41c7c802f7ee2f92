"""Marigold as a pseudo-label teacher, least-squares alignment, MetricGold log depth.

* :class:`MarigoldTeacher`: diffusers ``MarigoldDepthPipeline`` (``prs-eth/marigold-
  depth-v1-1`` or a local folder); ``predict(rgb)`` -> affine-invariant depth [H,W] in
  [0, 1], the pipeline's own ensembling over ``ensemble`` noise samples (median after
  aligning the members), DDIM with the checkpoint's default steps unless ``steps``.
* :func:`fit_affine` / :func:`align_depth`: least-squares scale and shift of a relative
  prediction to a reference (LiDAR or a metric teacher) over valid pixels, in depth or in
  disparity; ``disparity_then_depth`` is the Re-Depth Anything evaluation protocol (fit
  in disparity, invert, fit again in depth).
* :func:`log_depth_normalize` / :func:`log_depth_denormalize`: MetricGold's log-depth
  representation, n = 2 (ln d - ln d_min) / (ln d_max - ln d_min) - 1 in [-1, 1], which
  gives indoor (0.1-10 m) and outdoor (1-80 m) ranges the same resolution per octave.
"""
from __future__ import annotations

import numpy as np

from depth_perception import metrics
from depth_perception.hub import load_pretrained

__all__ = ["MarigoldTeacher", "fit_affine", "align_depth", "log_depth_normalize",
           "log_depth_denormalize", "ALIGN_SPACES"]

ALIGN_SPACES = ("depth", "disparity", "disparity_then_depth")


def fit_affine(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
               ) -> tuple[float, float]:
    """(scale, shift) minimising sum over valid pixels of (scale * pred + shift - target)^2.

    Valid: finite ``pred`` and ``target`` (and ``mask`` when given).
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"fit_affine: prediction {pred.shape} and target {target.shape} differ")
    valid = np.isfinite(pred) & np.isfinite(target)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    return metrics.fit_affine(pred[valid], target[valid])


def align_depth(pred: np.ndarray, reference: np.ndarray, space: str = "depth",
                pred_is_disparity: bool = False, min_depth: float = 1e-3,
                max_depth: float | None = None) -> tuple[np.ndarray, dict]:
    """Align a relative prediction [H,W] to a metric ``reference`` depth [H,W] (NaN/0 invalid).

    ``pred_is_disparity``: ``pred`` is an (affine) disparity instead of an (affine) depth.
    space: ``depth`` (fit pred-as-depth to the reference depth), ``disparity`` (fit
    pred-as-disparity to 1/reference, then invert), ``disparity_then_depth`` (both, in
    that order). Returns (depth [H,W] float32 clipped to [min_depth, max_depth], fit dict).
    """
    if space not in ALIGN_SPACES:
        raise ValueError(f"align_depth: space must be one of {ALIGN_SPACES}, got {space!r}")
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(reference, np.float64)
    valid = np.isfinite(ref) & (ref > 0)
    fit: dict = {"space": space}
    if space == "depth":
        depth_like = 1.0 / np.maximum(pred, 1e-6) if pred_is_disparity else pred
        s, b = fit_affine(depth_like, ref, valid)
        out = s * depth_like + b
        fit.update(scale=s, shift=b)
    else:
        disp_like = pred if pred_is_disparity else 1.0 / np.maximum(pred, 1e-6)
        inv_ref = np.where(valid, 1.0 / np.where(valid, ref, 1.0), np.nan)
        s, b = fit_affine(disp_like, inv_ref, valid)
        out = 1.0 / np.maximum(s * disp_like + b, 1e-6)
        fit.update(disparity_scale=s, disparity_shift=b)
        if space == "disparity_then_depth":
            s2, b2 = fit_affine(out, ref, valid)
            out = s2 * out + b2
            fit.update(scale=s2, shift=b2)
    out = np.clip(out, min_depth, max_depth if max_depth is not None else np.inf)
    return out.astype(np.float32), fit


def log_depth_normalize(depth, min_depth: float, max_depth: float):
    """MetricGold: metres -> [-1, 1] in log space (depth clipped to [min, max] first).

    Works on numpy arrays and torch tensors alike.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"log_depth_normalize: need 0 < min_depth < max_depth, got "
                         f"{min_depth}, {max_depth}")
    lo, hi = np.log(min_depth), np.log(max_depth)
    d = depth.clip(min_depth, max_depth)
    log = d.log() if hasattr(d, "log") else np.log(d)
    return 2.0 * (log - lo) / (hi - lo) - 1.0


def log_depth_denormalize(normalized, min_depth: float, max_depth: float):
    """Inverse of :func:`log_depth_normalize`: [-1, 1] -> metres."""
    if not 0 < min_depth < max_depth:
        raise ValueError(f"log_depth_denormalize: need 0 < min_depth < max_depth, got "
                         f"{min_depth}, {max_depth}")
    lo, hi = np.log(min_depth), np.log(max_depth)
    x = (normalized + 1.0) / 2.0 * (hi - lo) + lo
    return x.exp() if hasattr(x, "exp") else np.exp(x)


class MarigoldTeacher:
    """Affine-invariant depth from a ``MarigoldDepthPipeline`` with seed ensembling."""

    def __init__(self, pipeline, ensemble: int = 10, steps: int | None = None,
                 processing_resolution: int | None = 768, seed: int = 0,
                 reduction: str = "median"):
        if ensemble < 1:
            raise ValueError(f"MarigoldTeacher: ensemble must be >= 1, got {ensemble}")
        if reduction not in ("median", "mean"):
            raise ValueError(f"MarigoldTeacher: reduction must be median or mean, got {reduction!r}")
        self.pipeline, self.ensemble, self.steps = pipeline, int(ensemble), steps
        self.processing_resolution, self.seed, self.reduction = processing_resolution, seed, reduction
        self.pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(cls, name_or_path: str, local_files_only: bool | None = None,
                        device: str = "cpu", **kwargs) -> "MarigoldTeacher":
        from diffusers import MarigoldDepthPipeline
        pipe = load_pretrained(MarigoldDepthPipeline.from_pretrained, name_or_path,
                               "Marigold depth pipeline", local_files_only)
        return cls(pipe.to(device), **kwargs)

    def predict(self, rgb: np.ndarray, seed: int | None = None) -> np.ndarray:
        """[H,W,3] uint8 RGB -> affine-invariant depth [H,W] float32 (0 near, 1 far)."""
        import torch
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"MarigoldTeacher.predict: expected [H,W,3] uint8 RGB, got "
                             f"{rgb.shape} {rgb.dtype}")
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        out = self.pipeline(rgb, num_inference_steps=self.steps, ensemble_size=self.ensemble,
                            processing_resolution=self.processing_resolution,
                            match_input_resolution=True, generator=generator,
                            ensembling_kwargs={"reduction": self.reduction},
                            output_type="np")
        return np.asarray(out.prediction[0, ..., 0], np.float32)
