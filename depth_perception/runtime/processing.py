"""Model input preparation and output decoding, vectorised with numpy and cv2.

Input: an RGB uint8 frame ``[H,W,3]`` with its camera :class:`Intrinsics` (or the raw
image of a lens with its :class:`~depth_perception.rectify.Rectifier`: rectified, cropped
and resized in one remap, the intrinsics those of the rectified camera).
:class:`Preprocessor` resizes it to the model's input size (dynamic models: keep the
aspect ratio, both sides a multiple of ``size_multiple``; fixed-size models: resize to
that size, optionally after a centre crop that keeps the aspect), normalises it with
the metadata mean/std and returns the intrinsics at model resolution with it.

Output: :func:`postprocess` turns the network output ``[1,1,h,w]`` into a depth image
``[H,W]`` at camera resolution:

* ``metric_depth``: metres as is; ``disparity``: the sigmoid output through
  :func:`disp_to_depth`; ``relative_depth``: as is (unknown scale);
  ``relative_disparity``: ``1 / output`` (relative depth, unknown scale).
* Non-finite or non-positive values are invalid (NaN).
* Resizing back to camera resolution is bilinear by default (smooth surfaces, but a
  pixel next to an invalid one becomes NaN and depth edges get interpolated values)
  or nearest (``upsample="nearest"``: no invented depths between objects, blocky).
  With a centre crop, pixels outside the crop have no prediction: NaN.
* Range meanings (REP 117: ``> max_depth`` -> +inf, ``< min_depth`` -> -inf) are not
  applied here: the estimator applies them once, after the scale policy.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.rectify import Rectifier, crop_resize
from depth_perception.runtime.geometry import DEFAULT_SHORT_SIDE

logger = logging.getLogger(__name__)

UPSAMPLE_MODES = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def disp_to_depth(disp: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Sigmoid disparity in [0, 1] -> depth in [min_depth, max_depth] (monodepth2-style).

    ``scaled = 1/max + (1/min - 1/max) * disp``; ``depth = 1 / scaled``: disp 0 gives
    ``max_depth``, disp 1 gives ``min_depth``.
    """
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * np.asarray(disp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 / scaled).astype(np.float32)


def choose_input_size(width: int, height: int, multiple: int = 14,
                      short_side: int | None = DEFAULT_SHORT_SIDE,
                      max_pixels: int | None = None) -> tuple[int, int]:
    """Model input ``(width, height)`` for a dynamic model, keeping the camera aspect.

    The short side goes to ``short_side`` (``None``: the camera's own size), rounded to
    a multiple of ``multiple``; the long side follows from the rounded short side, so
    the aspect ratio is kept within half a multiple. ``max_pixels`` caps ``w*h``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if short_side is not None and short_side < multiple:
        raise ValueError(f"short_side {short_side} is smaller than the size multiple {multiple}")
    short, long_ = (height, width) if height <= width else (width, height)
    target = float(short if short_side is None else short_side)
    if max_pixels is not None:
        if max_pixels < multiple * multiple:
            raise ValueError(f"max_pixels {max_pixels} below one {multiple}x{multiple} patch")
        # largest short side whose rounded size fits the budget
        target = min(target, math.sqrt(max_pixels * short / long_))

    def sides(t: float, rounding) -> tuple[int, int]:
        s = max(multiple, int(rounding(t / multiple)) * multiple)
        lg = max(multiple, int(round(s * long_ / short / multiple)) * multiple)
        return s, lg

    s, lg = sides(target, round)
    while max_pixels is not None and s * lg > max_pixels and s > multiple:
        s, lg = sides(s - multiple, round)
    return (lg, s) if height <= width else (s, lg)


@dataclass(frozen=True)
class Prepared:
    """A frame ready for the network, and what is needed to map the output back.

    ``tensor``: [1,3,h,w] float32, normalised. ``intrinsics``: camera resolution.
    ``intrinsics_model``: K at model resolution (h, w). ``crop``: (x0, y0, w, h) of the
    camera image that the model sees (the whole image unless centre-cropped).
    """

    tensor: np.ndarray
    intrinsics: Intrinsics
    intrinsics_model: Intrinsics
    crop: tuple[int, int, int, int]
    rectify_ms: float = 0.0             # the raw image's remap to the model input, if any

    @property
    def original_size(self) -> tuple[int, int]:
        """Camera ``(width, height)``."""
        return self.intrinsics.width, self.intrinsics.height

    @property
    def model_size(self) -> tuple[int, int]:
        """Model input ``(width, height)``."""
        return int(self.tensor.shape[3]), int(self.tensor.shape[2])


class Preprocessor:
    """RGB frame -> normalised model input with consistent intrinsics.

    ``short_side`` / ``max_pixels``: input size of dynamic models (see
    :func:`choose_input_size`; ``short_side=None`` keeps the camera size, rounded).
    ``keep_aspect``: for fixed-size models, centre-crop the frame to the model aspect
    before resizing (otherwise the image is stretched and K follows the stretch).
    """

    def __init__(self, metadata: ModelMetadata, short_side: int | None = DEFAULT_SHORT_SIDE,
                 max_pixels: int | None = None, keep_aspect: bool = False):
        self.metadata = metadata
        self.short_side = short_side
        self.max_pixels = max_pixels
        self.keep_aspect = bool(keep_aspect)
        # normalisation folded into one multiply-add on uint8 values
        std = np.asarray(metadata.std, np.float64)
        self._scale = [float(v) for v in 1.0 / (255.0 * std)]
        self._offset = [float(v) for v in -np.asarray(metadata.mean, np.float64) / std]

    def geometry(self, intrinsics: Intrinsics) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """Crop ``(x0, y0, w, h)`` in the camera image and model size ``(w, h)``."""
        W, H = intrinsics.width, intrinsics.height
        fixed = self.metadata.fixed_size
        if fixed is None:
            size = choose_input_size(W, H, self.metadata.size_multiple, self.short_side,
                                     self.max_pixels)
            return (0, 0, W, H), size
        mh, mw = fixed
        if not self.keep_aspect:
            return (0, 0, W, H), (mw, mh)
        if W * mh > H * mw:  # camera wider than the model: crop columns
            cw = min(W, max(1, int(round(H * mw / mh))))
            return ((W - cw) // 2, 0, cw, H), (mw, mh)
        ch = min(H, max(1, int(round(W * mh / mw))))
        return (0, (H - ch) // 2, W, ch), (mw, mh)

    def prepare(self, rgb: np.ndarray, intrinsics: Intrinsics,
                rectifier: Rectifier | None = None) -> Prepared:
        """rgb: [H,W,3] uint8 matching ``intrinsics`` -> :class:`Prepared` ([1,3,h,w]).

        ``rectifier``: ``rgb`` is the raw image of a lens whose rectified camera is
        ``intrinsics`` (:func:`depth_perception.rectify.rectifier`): crop and resize are
        done from the raw image in one remap (:meth:`Rectifier.resample`), its time in
        ``Prepared.rectify_ms``. Without one (or an identity one) ``rgb`` is the image
        of ``intrinsics`` and is cropped and resized as it is.
        """
        check_rgb(rgb, intrinsics)
        crop, (mw, mh) = self.geometry(intrinsics)
        rectify_ms = 0.0
        if rectifier is not None and not rectifier.identity:
            if rectifier.intrinsics != intrinsics:
                raise ValueError(f"the rectifier's camera {rectifier.intrinsics} is not the "
                                 f"frame's {intrinsics}")
            tic = time.perf_counter()
            image = rectifier.resample(rgb, crop, (mw, mh))             # [h,w,3] uint8
            rectify_ms = (time.perf_counter() - tic) * 1e3
        else:
            image = crop_resize(rgb, crop, (mw, mh))                    # [h,w,3] uint8
        # layout change and normalisation fused: split into uint8 planes, then one
        # uint8 -> float32 multiply-add per plane written straight into the planar
        # [1,3,h,w] tensor (no [h,w,3] float temporaries, no transpose copy)
        tensor = np.empty((1, 3, mh, mw), dtype=np.float32)
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(image))):   # [h,w] uint8
            cv2.addWeighted(plane, self._scale[c], plane, 0.0, self._offset[c],
                            dst=tensor[0, c], dtype=cv2.CV_32F)
        k_model = intrinsics.cropped(*crop).resized(mw, mh)
        return Prepared(tensor, intrinsics, k_model, crop, rectify_ms)


def check_rgb(rgb: np.ndarray, intrinsics: Intrinsics) -> None:
    """ValueError unless ``rgb`` is a [H,W,3] uint8 array of the intrinsics' size."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected an RGB image as numpy array [H,W,3] uint8, got "
                         f"{type(rgb).__name__}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H,W,3] uint8, got shape {rgb.shape} "
                         f"dtype {rgb.dtype}")
    if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but the intrinsics "
                         f"(CameraInfo) are for {intrinsics.width}x{intrinsics.height}")


def output_to_depth(output: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Network output (any of [1,1,h,w], [1,h,w], [h,w]) -> [h,w] float32 depth.

    Metric kinds give metres, relative kinds relative depth (unknown scale).
    Non-finite and non-positive values become NaN.
    """
    out = _squeeze(output).astype(np.float32, copy=False)
    kind = metadata.output_kind
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "disparity":
            depth = disp_to_depth(out, metadata.min_depth, metadata.max_depth)
            depth[~((out >= 0) & (out <= 1))] = np.nan   # not a sigmoid value
        elif kind == "relative_disparity":
            depth = np.where(out > 0, 1.0 / out, np.nan).astype(np.float32)
        else:  # metric_depth, relative_depth
            depth = out.copy()
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def _squeeze(output: np.ndarray) -> np.ndarray:
    """[1,1,h,w], [1,h,w] or [h,w] -> [h,w] (a view); ValueError for other shapes."""
    out = np.asarray(output)
    while out.ndim > 2 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"expected a model output [1,1,h,w], [1,h,w] or [h,w], got shape "
                         f"{np.shape(output)}")
    return out


def _all_valid_depth(out: np.ndarray, metadata: ModelMetadata,
                     bounds: tuple[float, float] | None = None) -> bool:
    """The output of a depth kind (metric or relative, used as is) is positive and finite
    everywhere: its min and max (``bounds``, or computed; NaN propagates through both)."""
    if metadata.output_kind not in ("metric_depth", "relative_depth") or out.size == 0:
        return False
    lo, hi = bounds if bounds is not None else (float(out.min()), float(out.max()))
    return 0.0 < lo and math.isfinite(hi)


def postprocess(output: np.ndarray, prepared: Prepared, metadata: ModelMetadata,
                upsample: str = "bilinear",
                bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Network output -> depth [H,W] float32 at camera resolution.

    Metric kinds: metres; relative kinds: relative depth (needs a scale policy); NaN
    invalid. The REP 117 range meanings (+inf/-inf) are applied once, after scaling, by
    :class:`~depth_perception.runtime.estimator.DepthEstimator`. ``bounds``: the
    output's (min, max) when the caller has them (saves a pass over it).
    """
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {sorted(UPSAMPLE_MODES)}, got '{upsample}'")
    x0, y0, cw, ch = prepared.crop
    out = _squeeze(output)                                                 # [h,w]
    if out.shape != (ch, cw) and _all_valid_depth(out, metadata, bounds):
        # every value a usable depth: resize the output itself (the copy and the
        # validity masks of output_to_depth would change nothing)
        depth = cv2.resize(out.astype(np.float32, copy=False), (cw, ch),
                           interpolation=UPSAMPLE_MODES[upsample])
    else:
        depth = output_to_depth(out, metadata)
        if depth.shape != (ch, cw):
            depth = cv2.resize(depth, (cw, ch), interpolation=UPSAMPLE_MODES[upsample])
    W, H = prepared.original_size
    if (x0, y0, cw, ch) != (0, 0, W, H):
        full = np.full((H, W), np.nan, np.float32)
        full[y0:y0 + ch, x0:x0 + cw] = depth
        depth = full
    return depth
