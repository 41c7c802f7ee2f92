"""DepthEstimator: the one path from an RGB frame to a metric depth image.

``estimate(rgb [H,W,3] uint8, intrinsics, reference_depth=None) -> DepthResult``:

1. check the frame against the intrinsics (ValueError on a mismatch),
2. :class:`~depth_perception.runtime.processing.Preprocessor` -> [1,3,h,w],
3. the backend (named tensors in/out),
4. refuse a non-finite output (RuntimeError "model output contains NaN ..."),
5. :func:`~depth_perception.runtime.processing.postprocess` back to [H,W],
6. the scale policy (relative models, or metric ones corrected by LiDAR),
7. REP 117 range meanings (+inf beyond max_depth, -inf below min_depth, NaN invalid).

The ROS node, evaluation and export parity checks all go through this class; stamps
and frames are not its business.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend
from depth_perception.runtime.geometry import InputPlan, check_focal_policy, plan_input
from depth_perception.runtime.processing import (UPSAMPLE_MODES, Prepared, Preprocessor,
                                                 check_rgb, postprocess)
from depth_perception.runtime.scale import ScalePolicy, make_scale_policy
from depth_perception.units import mark_out_of_range

logger = logging.getLogger(__name__)

PREPROCESSOR_OPTIONS = ("short_side", "max_pixels", "keep_aspect", "upsample", "focal_policy")


@dataclass
class DepthResult:
    """``depth``: [H,W] float32 metres at camera resolution (NaN invalid, +inf beyond
    range, -inf too close); ``intrinsics``: camera resolution; ``scale`` and
    ``scale_source``: the factor applied and the policy; ``scale_valid``: this frame
    produced a scale measurement; ``timings``: preprocess_ms, inference_ms,
    postprocess_ms; ``backend``/``precision``: what ran."""

    depth: np.ndarray
    intrinsics: Intrinsics
    scale: float
    scale_source: str
    timings: dict
    backend: str
    precision: str
    scale_valid: bool = True
    prepared: Prepared | None = field(default=None, repr=False)


class DepthEstimator:
    """RGB frames -> metric depth with one backend, its metadata and a scale policy.

    ``scale_policy``: a :class:`ScalePolicy`, a policy name (parameters in
    ``scale_params``) or None ('model' for metric models; relative models must be given
    a policy that can scale them). Preprocessing options: ``short_side`` (dynamic
    models; None = as the model was trained, see :mod:`depth_perception.runtime.geometry`),
    ``focal_policy`` ('as_trained' or 'canonical'), ``max_pixels`` (dynamic models),
    ``keep_aspect`` (fixed-size models), ``upsample`` ('bilinear' or 'nearest', see
    :mod:`depth_perception.runtime.processing`). ``input_plan`` is the geometry chosen for
    the last camera seen (logged once per camera geometry).
    """

    def __init__(self, backend: Backend, metadata: ModelMetadata,
                 scale_policy: ScalePolicy | str | None = None, *,
                 scale_params: dict | None = None,
                 short_side: int | None = None, max_pixels: int | None = None,
                 keep_aspect: bool = False, upsample: str = "bilinear",
                 focal_policy: str = "as_trained"):
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
        self.scale_policy = scale_policy          # validated by the property setter
        self.set_input_options(short_side=short_side, max_pixels=max_pixels,
                               keep_aspect=keep_aspect, upsample=upsample,
                               focal_policy=focal_policy)
        self._input_dtype = backend.inputs[metadata.input_name].dtype

    @property
    def scale_policy(self) -> ScalePolicy:
        return self._scale_policy

    @scale_policy.setter
    def scale_policy(self, policy: ScalePolicy) -> None:
        """Swap the policy live (e.g. a node parameter change); checked like at start."""
        if not isinstance(policy, ScalePolicy):
            raise ValueError(f"scale policy must be a ScalePolicy, got {type(policy).__name__}")
        if not self.metadata.is_metric and not policy.handles_relative:
            raise ValueError(f"scale policy '{policy.name}' keeps the model's own scale, but "
                             f"the model outputs {self.metadata.output_kind}; use "
                             "'ground_plane', 'lidar_median' or 'fixed'")
        self._scale_policy = policy

    def set_input_options(self, short_side: int | None = None,
                          max_pixels: int | None = None, keep_aspect: bool = False,
                          upsample: str = "bilinear", focal_policy: str = "as_trained") -> None:
        """Change the preprocessing/upsampling options; the next frame uses them."""
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {sorted(UPSAMPLE_MODES)}, got "
                             f"'{upsample}'")
        check_focal_policy(focal_policy, self.metadata)
        self.preprocessor = Preprocessor(self.metadata, short_side=short_side,
                                         max_pixels=max_pixels, keep_aspect=keep_aspect)
        self.upsample = upsample
        self.short_side, self.focal_policy = short_side, focal_policy
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
                 reference_depth: np.ndarray | None = None) -> DepthResult:
        """rgb: [H,W,3] uint8 matching ``intrinsics``; reference_depth: [H,W] sparse
        metric depth (NaN where none) for reference-based policies."""
        if not isinstance(intrinsics, Intrinsics):
            raise ValueError(f"intrinsics must be an Intrinsics, got {type(intrinsics).__name__}")
        check_rgb(rgb, intrinsics)
        if reference_depth is not None and np.shape(reference_depth) != rgb.shape[:2]:
            raise ValueError(f"reference depth shape {np.shape(reference_depth)} does not "
                             f"match the image {rgb.shape[:2]}")
        t0 = time.perf_counter()
        plan = self.plan(intrinsics)
        self.preprocessor.short_side = plan.short_side
        if getattr(self.backend, "runs_frames_on_device", False):
            depth, prepared, t1, t2 = self._estimate_on_device(rgb, intrinsics)
        else:
            depth, prepared, t1, t2 = self._estimate_on_host(rgb, intrinsics)
        if plan.canonical:                       # canonical camera: depth x f_in / f_train
            depth *= np.float32(plan.depth_factor(prepared.intrinsics_model))
        # 4. metric scale and REP 117 meanings
        est = self._scale_policy.update(depth, intrinsics, reference_depth)
        if math.isfinite(est.scale) and est.scale > 0:
            depth = depth * np.float32(est.scale)
        else:  # no scale known yet: nothing metric to report
            depth = np.full_like(depth, np.nan)
        depth = mark_out_of_range(depth, self.metadata.min_depth, self.metadata.max_depth)
        t3 = time.perf_counter()
        timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                   "postprocess_ms": (t3 - t2) * 1e3}
        return DepthResult(depth, intrinsics, float(est.scale), est.source, timings,
                           self.backend.name, self.backend.precision, bool(est.valid), prepared)

    def _estimate_on_host(self, rgb, intrinsics):
        """numpy/cv2 pre- and post-processing around ``backend.run`` (CPU backends,
        onnxruntime, TensorRT)."""
        # 1. preprocess                                                  [1,3,h,w]
        prepared = self.preprocessor.prepare(rgb, intrinsics)
        feed = prepared.tensor.astype(self._input_dtype, copy=False)
        # 2. inference                                                   [1,1,h,w]
        t1 = time.perf_counter()
        output = self.backend.run({self.metadata.input_name: feed})[self.metadata.output_name]
        t2 = time.perf_counter()
        bad = ~np.isfinite(output)
        if bad.any():
            raise RuntimeError(f"model output contains NaN or inf ({int(bad.sum())} of "
                               f"{bad.size} values) from the {self.backend.name} backend "
                               f"({self.backend.precision}); frame skipped (FP16 overflow in "
                               "LayerNorm/attention is a common cause: keep those in FP32)")
        # 3. back to camera resolution                                   [H,W]
        depth = postprocess(output, prepared, self.metadata, upsample=self.upsample)
        return depth, prepared, t1, t2

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
