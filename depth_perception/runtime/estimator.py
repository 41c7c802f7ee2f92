"""DepthEstimator: the one path from an RGB frame to a metric depth image.

``estimate(rgb [H,W,3] uint8, intrinsics, reference_depth=None) -> DepthResult``:

1. check the frame against the intrinsics (ValueError on a mismatch),
2. :class:`~depth_perception.runtime.processing.Preprocessor` -> [1,3,h,w] (a raw
   image with its rectifier: rectified straight to the model input in one remap),
3. the backend (named tensors in/out),
4. refuse a non-finite output (RuntimeError "model output contains NaN ..."),
5. :func:`~depth_perception.runtime.processing.postprocess` back to [H,W],
6. the scale policy (relative models, or metric ones corrected by LiDAR),
7. REP 117 range meanings (+inf beyond max_depth, -inf below min_depth, NaN invalid):
   the model's range, narrowed by the ``min_depth`` / ``max_depth`` options (the depth
   node's parameters); the one place range marking is applied.

``estimate_batch(frames)`` does the same for frames of several cameras at once: steps
2-3 run as one batch for the frames whose model inputs have the same shape, where the
backend takes a batch (``Backend.max_batch``: onnxruntime graphs exported with a
dynamic batch dimension, torch), else one call per frame; steps 4-7 run per frame,
each with its own camera's scale policy.

``fuse(fusion, result, T_cur_prev)`` runs a camera's temporal fusion
(:mod:`depth_perception.runtime.fusion`) on the model's own grid, where the depth was
predicted (the camera-resolution depth is an interpolation of it), and brings the fused
depth and its confidence to camera resolution as step 5 does, with step 7's range
meanings.

The ROS node, evaluation and export parity checks all go through this class; stamps
and frames are not its business.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.confidence import from_log_variance, uncertainty_output
from depth_perception.metadata import ModelMetadata
from depth_perception.rectify import Rectifier
from depth_perception.runtime.backends.base import Backend
from depth_perception.runtime.geometry import InputPlan, check_focal_policy, plan_input
from depth_perception.runtime.fusion import FusionResult, TemporalFusion
from depth_perception.runtime.processing import (UPSAMPLE_MODES, Prepared, Preprocessor,
                                                 check_rgb, output_to_depth, postprocess,
                                                 to_camera)
from depth_perception.runtime.scale import ScalePolicy, make_scale_policy
from depth_perception.units import mark_out_of_range

logger = logging.getLogger(__name__)

PREPROCESSOR_OPTIONS = ("short_side", "max_pixels", "keep_aspect", "upsample", "focal_policy",
                        "min_depth", "max_depth")


@dataclass
class DepthResult:
    """``depth``: [H,W] float32 metres at camera resolution (NaN invalid, +inf beyond
    range, -inf too close); ``intrinsics``: camera resolution; ``scale`` and
    ``scale_source``: the factor applied and the policy; ``scale_valid``: this frame
    produced a scale measurement; ``timings``: preprocess_ms, inference_ms,
    postprocess_ms, rectify_ms (the part of preprocess_ms spent rectifying a raw image);
    ``backend``/``precision``: what ran."""

    depth: np.ndarray
    intrinsics: Intrinsics
    scale: float
    scale_source: str
    timings: dict
    backend: str
    precision: str
    scale_valid: bool = True
    prepared: Prepared | None = field(default=None, repr=False)
    batch: int = 1                      # frames in the backend call (inference_ms is its time)
    #: the model's uncertainty output as a confidence (see :attr:`confidence`): an
    #: array, or what computes it when first asked for; None for a model without one
    _confidence: object = field(default=None, repr=False)
    #: the model's depth output on its own grid ([h,w], as the backend returned it) and
    #: the factor that made ``depth`` metric from it (canonical focal x scale): what
    #: :meth:`DepthEstimator.fuse` fuses; None where the output never left the device
    model_output: np.ndarray | None = field(default=None, repr=False)
    model_factor: float = 1.0

    @property
    def has_confidence(self) -> bool:
        """The model gave an uncertainty output for this frame (nothing computed)."""
        return self._confidence is not None

    @property
    def confidence(self) -> np.ndarray | None:
        """[H,W] float32 confidence in [0, 1] from the model's uncertainty output
        (:mod:`depth_perception.confidence`), at camera resolution, computed when first
        asked for (the node publishes it only while subscribed); None for a model
        without one."""
        c = self._confidence
        if c is not None and not isinstance(c, np.ndarray):
            c = self._confidence = c()
        return c

    @confidence.setter
    def confidence(self, value) -> None:
        """An array, a zero-argument callable that returns one, or None."""
        self._confidence = value


@dataclass
class FrameInput:
    """One frame of :meth:`DepthEstimator.estimate_batch`: ``rgb`` [H,W,3] uint8 matching
    ``intrinsics``, an optional sparse metric ``reference_depth`` [H,W], the scale
    policy of its camera (None: the estimator's own), and the ``rectifier`` of a raw
    ``rgb`` (None: ``rgb`` is already the image of ``intrinsics``; else ``intrinsics`` is
    the rectifier's camera and the model input is resampled from the raw image in one
    remap, :meth:`~depth_perception.rectify.Rectifier.resample`)."""

    rgb: np.ndarray
    intrinsics: Intrinsics
    reference_depth: np.ndarray | None = None
    scale_policy: ScalePolicy | None = None
    rectifier: Rectifier | None = None


class DepthEstimator:
    """RGB frames -> metric depth with one backend, its metadata and a scale policy.

    ``scale_policy``: a :class:`ScalePolicy`, a policy name (parameters in
    ``scale_params``) or None ('model' for metric models; relative models must be given
    a policy that can scale them). Preprocessing options: ``short_side`` (dynamic
    models; None = as the model was trained, see :mod:`depth_perception.runtime.geometry`),
    ``focal_policy`` ('as_trained' or 'canonical'), ``max_pixels`` (dynamic models),
    ``keep_aspect`` (fixed-size models), ``upsample`` ('bilinear' or 'nearest', see
    :mod:`depth_perception.runtime.processing`). Output range: ``min_depth`` /
    ``max_depth`` [m] narrow the model's range (None or 0: the model's own); depth
    outside ``depth_range`` is marked -inf / +inf. ``input_plan`` is the geometry chosen
    for the last camera seen (logged once per camera geometry).
    """

    def __init__(self, backend: Backend, metadata: ModelMetadata,
                 scale_policy: ScalePolicy | str | None = None, *,
                 scale_params: dict | None = None,
                 short_side: int | None = None, max_pixels: int | None = None,
                 keep_aspect: bool = False, upsample: str = "bilinear",
                 focal_policy: str = "as_trained", min_depth: float | None = None,
                 max_depth: float | None = None):
        metadata.validate()
        if metadata.input_name not in backend.inputs:
            raise ValueError(f"backend inputs {sorted(backend.inputs)} lack the metadata input "
                             f"'{metadata.input_name}'")
        if metadata.output_name not in backend.outputs:
            raise ValueError(f"backend outputs {sorted(backend.outputs)} lack the metadata "
                             f"output '{metadata.output_name}'")
        if scale_policy is None:
            if not metadata.is_metric:
                raise ValueError(f"the model outputs {metadata.output_kind} (no metric scale): "
                                 "give a scale policy that can make it metric: "
                                 "'ground_plane' (camera_height), 'lidar_median' or 'fixed'")
            scale_policy = "model"
        if isinstance(scale_policy, str):
            scale_policy = make_scale_policy(scale_policy, **(scale_params or {}))
        elif scale_params:
            raise ValueError("scale_params only apply when scale_policy is given by name")
        self.backend = backend
        self.metadata = metadata
        #: the output carrying the model's per-pixel uncertainty (log-variance), or None
        self.uncertainty_output = uncertainty_output(backend.outputs, metadata.output_name)
        self.scale_policy = scale_policy          # validated by the property setter
        self.set_input_options(short_side=short_side, max_pixels=max_pixels,
                               keep_aspect=keep_aspect, upsample=upsample,
                               focal_policy=focal_policy, min_depth=min_depth,
                               max_depth=max_depth)
        self._input_dtype = backend.inputs[metadata.input_name].dtype

    @property
    def scale_policy(self) -> ScalePolicy:
        return self._scale_policy

    @scale_policy.setter
    def scale_policy(self, policy: ScalePolicy) -> None:
        """Swap the policy live (e.g. a node parameter change); checked like at start."""
        self.check_scale_policy(policy)
        self._scale_policy = policy

    def check_scale_policy(self, policy: ScalePolicy) -> None:
        """ValueError unless ``policy`` is a ScalePolicy that can make this model metric."""
        if not isinstance(policy, ScalePolicy):
            raise ValueError(f"scale policy must be a ScalePolicy, got {type(policy).__name__}")
        if not self.metadata.is_metric and not policy.handles_relative:
            raise ValueError(f"scale policy '{policy.name}' keeps the model's own scale, but "
                             f"the model outputs {self.metadata.output_kind}; use "
                             "'ground_plane', 'lidar_median' or 'fixed'")

    def set_input_options(self, short_side: int | None = None,
                          max_pixels: int | None = None, keep_aspect: bool = False,
                          upsample: str = "bilinear", focal_policy: str = "as_trained",
                          min_depth: float | None = None,
                          max_depth: float | None = None) -> None:
        """Change the preprocessing/upsampling options and the output range; the next
        frame uses them."""
        meta = self.metadata
        lo = max(meta.min_depth, min_depth) if min_depth else meta.min_depth
        hi = min(meta.max_depth, max_depth) if max_depth else meta.max_depth
        if not lo < hi:
            raise ValueError(f"depth range min_depth {min_depth} / max_depth {max_depth} "
                             f"leaves nothing of the model's {meta.min_depth}-"
                             f"{meta.max_depth} m")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {sorted(UPSAMPLE_MODES)}, got "
                             f"'{upsample}'")
        check_focal_policy(focal_policy, self.metadata)
        self.preprocessor = Preprocessor(self.metadata, short_side=short_side,
                                         max_pixels=max_pixels, keep_aspect=keep_aspect)
        self.upsample = upsample
        self.short_side, self.focal_policy = short_side, focal_policy
        self.depth_range = (float(lo), float(hi))
        self._plans: dict[tuple, InputPlan] = {}
        self.input_plan: InputPlan | None = None

    def plan(self, intrinsics: Intrinsics) -> InputPlan:
        """The input geometry for this camera (decided once per geometry, logged)."""
        key = (intrinsics.width, intrinsics.height, intrinsics.fx, intrinsics.fy)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_input(self.metadata, intrinsics, self.short_side, self.focal_policy)
            self._plans[key] = plan
            logger.info("camera %dx%d: %s", intrinsics.width, intrinsics.height, plan.reason)
        self.input_plan = plan
        return plan

    @classmethod
    def load(cls, model, backend: str = "auto", scale_policy: ScalePolicy | str | None = None,
             **options) -> "DepthEstimator":
        """Open ``model`` with :func:`load_backend`; preprocessing options and
        ``scale_params`` go to the estimator, the rest to the backend."""
        from depth_perception.runtime.backends import load_backend

        mine = {k: options.pop(k) for k in (*PREPROCESSOR_OPTIONS, "scale_params")
                if k in options}
        if "engine_builder" not in options:
            from depth_perception.runtime.engine import ensure_engine

            options["engine_builder"] = ensure_engine   # .onnx on TensorRT: build once, cache
        opened, metadata = load_backend(model, backend, **options)
        try:
            return cls(opened, metadata, scale_policy, **mine)
        except Exception:
            opened.close()
            raise

    def estimate(self, rgb: np.ndarray, intrinsics: Intrinsics,
                 reference_depth: np.ndarray | None = None,
                 rectifier: Rectifier | None = None) -> DepthResult:
        """rgb: [H,W,3] uint8 matching ``intrinsics``; reference_depth: [H,W] sparse
        metric depth (NaN where none) for reference-based policies; ``rectifier``: of a
        raw ``rgb`` (see :class:`FrameInput`)."""
        result = self.estimate_batch([FrameInput(rgb, intrinsics, reference_depth,
                                                 rectifier=rectifier)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def estimate_batch(self, frames: list[FrameInput]) -> list[DepthResult | Exception]:
        """One result per frame, in order: a :class:`DepthResult`, or the exception that
        frame raised (ValueError: bad input; RuntimeError: non-finite model output) while
        the other frames go on.

        Frames whose model inputs have the same shape go through the backend together,
        in chunks of ``backend.max_batch`` (None: all of them); a backend fixed at batch
        1 gets one call per frame, with the same results.
        """
        results: list = [None] * len(frames)
        on_device = getattr(self.backend, "runs_frames_on_device", False)
        # 1.-2. check and preprocess each frame                          [1,3,h,w] each
        ready = []                                   # (index, plan, prepared, t0, t1)
        for i, frame in enumerate(frames):
            try:
                t0 = time.perf_counter()
                plan = self._plan_frame(frame)
                if on_device:             # the device resizes: rectify on the host first
                    rgb, tic = frame.rgb, time.perf_counter()
                    if frame.rectifier is not None:
                        rgb = frame.rectifier.apply(rgb)
                    rectify_ms = (time.perf_counter() - tic) * 1e3
                    depth, prepared, t1, t2 = self._estimate_on_device(rgb, frame.intrinsics)
                    prepared = replace(prepared, rectify_ms=rectify_ms)
                    results[i] = self._finish(frame, plan, depth, prepared, (t1 - t0) * 1e3,
                                              (t2 - t1) * 1e3, t2, 1)
                    continue
                prepared = self.preprocessor.prepare(frame.rgb, frame.intrinsics,
                                                     frame.rectifier)
                ready.append((i, plan, prepared, t0, time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - that frame's result
                results[i] = exc
        # 3. inference, batched by model input shape                    [B,1,h,w]
        groups: dict[tuple, list] = {}
        for item in ready:
            groups.setdefault(item[2].tensor.shape, []).append(item)
        limit = self.backend.max_batch(self.metadata.input_name) or max(1, len(ready))
        for group in groups.values():
            for start in range(0, len(group), limit):
                chunk = group[start:start + limit]
                t1 = time.perf_counter()
                try:
                    outputs = self._infer([prepared.tensor for _, _, prepared, _, _ in chunk])
                except Exception as exc:  # noqa: BLE001 - every frame of the call failed
                    for item in chunk:
                        results[item[0]] = exc
                    continue
                t2 = time.perf_counter()
                # 4.-7. each frame back to camera resolution, scaled by its own policy
                for (i, plan, prepared, t0, t_prep), (output, extra) in zip(chunk, outputs):
                    try:
                        t3 = time.perf_counter()
                        bounds = self._check_finite(output)
                        depth = postprocess(output, prepared, self.metadata,
                                            upsample=self.upsample, bounds=bounds)
                        results[i] = self._finish(frames[i], plan, depth, prepared,
                                                  (t_prep - t0) * 1e3, (t2 - t1) * 1e3, t3,
                                                  len(chunk), bounds)
                        results[i].model_output = output
                        if extra is not None:         # the model's log-variance
                            results[i].confidence = self._confidence_of(extra, prepared)
                    except Exception as exc:  # noqa: BLE001 - that frame's result
                        results[i] = exc
        return results

    def _confidence_of(self, log_variance: np.ndarray, prepared: Prepared):
        """What computes the camera-resolution confidence of a model-grid log-variance."""
        return lambda: from_log_variance(to_camera(log_variance, prepared, self.upsample))

    def _plan_frame(self, frame: FrameInput) -> InputPlan:
        """Check one frame (ValueError naming what was expected) and set its geometry."""
        if not isinstance(frame.intrinsics, Intrinsics):
            raise ValueError(f"intrinsics must be an Intrinsics, got "
                             f"{type(frame.intrinsics).__name__}")
        check_rgb(frame.rgb, frame.intrinsics)
        if (frame.reference_depth is not None
                and np.shape(frame.reference_depth) != frame.rgb.shape[:2]):
            raise ValueError(f"reference depth shape {np.shape(frame.reference_depth)} does "
                             f"not match the image {frame.rgb.shape[:2]}")
        if frame.scale_policy is not None:
            self.check_scale_policy(frame.scale_policy)
        plan = self.plan(frame.intrinsics)
        self.preprocessor.short_side = plan.short_side
        return plan

    def _infer(self, tensors: list[np.ndarray]) -> list[tuple]:
        """[1,3,h,w] tensors of one shape -> their ([1,1,h,w] depth output, [1,1,h,w]
        uncertainty output or None), in one backend call."""
        feed = tensors[0] if len(tensors) == 1 else np.concatenate(tensors, axis=0)
        feed = feed.astype(self._input_dtype, copy=False)
        outputs = self.backend.run({self.metadata.input_name: feed})
        output = outputs[self.metadata.output_name]
        extra = outputs.get(self.uncertainty_output) if self.uncertainty_output else None
        if np.shape(output)[0] != len(tensors) or (
                extra is not None and np.shape(extra)[0] != len(tensors)):
            raise RuntimeError(f"the {self.backend.name} backend returned {np.shape(output)[0]} "
                               f"outputs for a batch of {len(tensors)} frames")
        return [(output[k:k + 1], None if extra is None else extra[k:k + 1])
                for k in range(len(tensors))]

    def _check_finite(self, output: np.ndarray) -> tuple[float, float] | None:
        """RuntimeError if the output holds NaN or inf; else the range its depth takes:
        ``(min, max)`` of an output used as depth (the upsampled depth's values lie
        within it), None for other output kinds."""
        lo, hi = (float(output.min()), float(output.max())) if output.size else (0.0, 0.0)
        if math.isfinite(lo) and math.isfinite(hi):          # NaN propagates to both
            return (lo, hi) if self.metadata.output_kind in ("metric_depth",
                                                              "relative_depth") else None
        bad = ~np.isfinite(output)
        raise RuntimeError(f"model output contains NaN or inf ({int(bad.sum())} of "
                           f"{bad.size} values) from the {self.backend.name} backend "
                           f"({self.backend.precision}); frame skipped (FP16 overflow in "
                           "LayerNorm/attention is a common cause: keep those in FP32)")

    def _finish(self, frame: FrameInput, plan: InputPlan, depth: np.ndarray,
                prepared: Prepared, preprocess_ms: float, inference_ms: float,
                post_start: float, batch: int,
                bounds: tuple[float, float] | None = None) -> DepthResult:
        """Depth at camera resolution -> metric depth with REP 117 meanings
        (``inference_ms``: the whole backend call of ``batch`` frames; ``bounds``: the
        range of the model-resolution depth, see :meth:`_check_finite`)."""
        factor = 1.0
        if plan.canonical:                       # canonical camera: depth x f_in / f_train
            factor = plan.depth_factor(prepared.intrinsics_model)
            depth *= np.float32(factor)
        policy = frame.scale_policy or self._scale_policy
        est = policy.update(depth, frame.intrinsics, frame.reference_depth)
        if math.isfinite(est.scale) and est.scale > 0:
            factor *= est.scale
            if est.scale != 1.0:
                depth *= np.float32(est.scale)             # postprocess's own array
        else:  # no scale known yet: nothing metric to report
            depth, bounds, factor = np.full_like(depth, np.nan), None, math.nan
        lo, hi = self.depth_range
        # upsampling interpolates between model values: a scaled model range inside the
        # depth range (with room for rounding) leaves nothing to mark at full size
        if not (bounds is not None and bounds[0] * factor >= lo * (1 + 1e-5)
                and bounds[1] * factor <= hi * (1 - 1e-5)):
            depth = mark_out_of_range(depth, lo, hi, copy=False)       # our own array
        timings = {"preprocess_ms": preprocess_ms, "inference_ms": inference_ms,
                   "postprocess_ms": (time.perf_counter() - post_start) * 1e3,
                   "rectify_ms": prepared.rectify_ms}      # within preprocess_ms
        return DepthResult(depth, frame.intrinsics, float(est.scale), est.source, timings,
                           self.backend.name, self.backend.precision, bool(est.valid),
                           prepared, batch, model_factor=factor)

    def fuse(self, fusion: TemporalFusion, result: DepthResult,
             T_cur_prev: np.ndarray | None) -> FusionResult:
        """``result`` through one camera's temporal ``fusion`` (``T_cur_prev``: the camera
        motion since the frame it fused last, None: unknown), on the model's grid with
        the model's camera (``prepared.intrinsics_model``); the fused depth comes back to
        camera resolution as :func:`postprocess` brings the single-frame depth, with the
        same range meanings, and so does its confidence (when asked for). A result
        without the model's grid (depth made on the device) is fused at camera
        resolution."""
        if result.model_output is None or result.prepared is None:
            return fusion.update(result.depth, result.intrinsics, T_cur_prev)
        prepared = result.prepared
        with np.errstate(invalid="ignore"):
            grid = output_to_depth(result.model_output, self.metadata)
            grid *= np.float32(result.model_factor)            # NaN factor: no depth
        out = fusion.update(grid, prepared.intrinsics_model, T_cur_prev)
        lo, hi = self.depth_range
        depth = mark_out_of_range(to_camera(out.depth, prepared, self.upsample), lo, hi,
                                  copy=False)
        return out.resampled(depth, lambda grid: to_camera(grid, prepared, self.upsample))

    def _estimate_on_device(self, rgb, intrinsics):
        """The backend pre-processes, runs and post-processes on its device (CUDA); the
        depth leaves the device once. Same geometry as the host path."""
        (x0, y0, cw, ch), (mw, mh) = self.preprocessor.geometry(intrinsics)
        t1 = time.perf_counter()
        crop_depth = self.backend.run_frame(rgb, (x0, y0, cw, ch), (mw, mh), self.upsample)
        t2 = time.perf_counter()
        W, H = intrinsics.width, intrinsics.height
        depth = crop_depth
        if (x0, y0, cw, ch) != (0, 0, W, H):
            depth = np.full((H, W), np.nan, np.float32)
            depth[y0:y0 + ch, x0:x0 + cw] = crop_depth
        # the input tensor never exists on the host: a zero-stride view carries its shape
        placeholder = np.broadcast_to(np.float32(0.0), (1, 3, mh, mw))
        k_model = intrinsics.cropped(x0, y0, cw, ch).resized(mw, mh)
        return depth, Prepared(placeholder, intrinsics, k_model, (x0, y0, cw, ch)), t1, t2

    def reset(self) -> None:
        """Forget the scale policy's smoothing (e.g. after a bag jump)."""
        self._scale_policy.reset()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
