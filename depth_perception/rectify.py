"""Lens distortion: from a driver's calibration to the rectified camera the model sees.

A camera driver publishes ``image_raw`` (distorted) with a ``sensor_msgs/CameraInfo``
holding ``distortion_model``, ``D``, ``K``, ``R``, ``P``, binning and ROI (REP 104).
image_proc rectifies such an image with ``cv2.initUndistortRectifyMap(K, D, R, P[:3,:3],
size)`` once per calibration and ``cv2.remap`` per frame (``cv2.fisheye.*`` for
``equidistant``); the rectified image is described by ``P`` with ``D`` = 0, ``R`` = I.
This module is that one implementation, without ROS, used by the depth node
(:mod:`depth_perception.ros.camera_pipeline`), ``evaluate`` and the samples of a bag
(:mod:`depth_perception.data.samples`), so online and offline see the same pixels:

* :class:`Calibration` holds the CameraInfo fields (hashable; :meth:`Calibration.problem`
  says what is wrong with a bad one: unknown model, ``D`` of the wrong length, ``P``
  all zero while ``D`` distorts);
* :func:`rectifier` gives the cached :class:`Rectifier` of a calibration and the kind
  of input image (:data:`INPUT_IMAGES`; the node's ``input_image`` parameter): ``raw``
  (a driver's ``image_raw``: rectified with ``D``, ``R``, ``P``; a no-op when nothing
  distorts), ``rectified`` (``image_rect``:
  described by ``P``, used as it is) or ``ignore_distortion`` (``K`` on the raw image,
  wrong toward the edges of a real lens: for comparisons only);
* :meth:`Rectifier.resample` goes from the raw image straight to a model input (the
  rectified image cropped and resized, one ``cv2.remap``: the estimator's preprocessing
  with a rectifier, so the node and ``evaluate`` feed the model the same pixels);
* :func:`distortion_maps` goes the other way (a pinhole render -> the distorted image a
  lens with this calibration records), for synthetic lenses.

Binning and ROI (REP 104) as image_geometry does: the maps of the full-resolution
calibration scaled by the binning (``K``, ``P`` rows 0/1 divided), cut to the ROI
(offsets divided by the binning) with the ROI offset taken out of the map values, which
are the maps from ``K`` to ``P`` both binned and shifted by the ROI offset; the output
camera is ``P`` binned and shifted by the ROI offset.
Pixel convention: as :mod:`depth_perception.camera` (centres at integer coordinates).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from depth_perception.camera import Intrinsics

#: distortion_model -> the lengths of ``D`` it accepts (an empty ``D`` = no distortion)
DISTORTION_MODELS = {"plumb_bob": (5,), "rational_polynomial": (8,), "equidistant": (4,)}
#: what the input image is (the node parameter input_image); see the module docstring
INPUT_IMAGES = ("raw", "rectified", "ignore_distortion")


@dataclass(frozen=True)
class Calibration:
    """The calibration fields of a CameraInfo (full-resolution, before binning/ROI).

    ``K`` (9), ``R`` (9), ``P`` (12) row-major tuples; ``D`` its coefficients; ``roi``
    (x_offset, y_offset, width, height) in full-resolution pixels, (0, 0, 0, 0) = none;
    ``binning_x``/``binning_y`` 0 or 1 = none. ``width``/``height`` as the message says
    (the full-resolution size). Hashable: the key of the rectification cache.
    """

    width: int
    height: int
    distortion_model: str
    D: tuple
    K: tuple
    R: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    P: tuple = (0.0,) * 12
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple = (0, 0, 0, 0)

    @classmethod
    def pinhole(cls, intrinsics: Intrinsics, distortion_model: str = "plumb_bob",
                D=(), tx_ty: tuple[float, float] = (0.0, 0.0)) -> "Calibration":
        """A camera whose rectified geometry is ``intrinsics`` (K = P[:3,:3], R = I);
        ``tx_ty``: P's (Tx, Ty), e.g. (-fx B, 0) for the second camera of a stereo pair
        with baseline B (see :meth:`tx_ty`)."""
        K = tuple(float(v) for v in intrinsics.K.reshape(-1))
        tx, ty = (float(v) for v in tx_ty)
        P = (K[0], K[1], K[2], tx, K[3], K[4], K[5], ty, K[6], K[7], K[8], 0.0)
        return cls(int(intrinsics.width), int(intrinsics.height), str(distortion_model),
                   tuple(float(v) for v in D), K, P=P)

    # -- checks ---------------------------------------------------------------------------
    @property
    def distorts(self) -> bool:
        """The lens bends rays: a non-zero coefficient, or any ``equidistant`` D (a
        fisheye's r = f theta is no pinhole even with k1..k4 = 0); an empty D never."""
        return any(float(v) != 0.0 for v in self.D) or (
            self.distortion_model == "equidistant" and len(self.D) > 0)

    def problem(self) -> str:
        """'' for a usable calibration, else the reason (one sentence)."""
        if self.width <= 0 or self.height <= 0:
            return f"image size {self.width}x{self.height}, expected width and height > 0"
        if len(self.K) != 9 or not any(self.K):
            return (f"K is {list(self.K)}, expected a calibrated 3x3 camera matrix (all zero "
                    "means the camera is not calibrated)")
        if self.distortion_model not in DISTORTION_MODELS:
            if self.distorts or self.distortion_model:
                return (f"distortion_model '{self.distortion_model}' is not one of "
                        f"{sorted(DISTORTION_MODELS)}: the image cannot be rectified")
        elif self.D and len(self.D) not in DISTORTION_MODELS[self.distortion_model]:
            want = " or ".join(str(n) for n in DISTORTION_MODELS[self.distortion_model])
            return (f"D has {len(self.D)} coefficients, distortion_model "
                    f"'{self.distortion_model}' takes {want}")
        if not all(math.isfinite(float(v)) for v in (*self.D, *self.K, *self.R, *self.P)):
            return "D, K, R or P holds a non-finite value"
        if len(self.R) != 9 or len(self.P) != 12:
            return f"R has {len(self.R)} values and P {len(self.P)}, expected 9 and 12"
        if self.distorts and not any(self.P):
            return ("P is all zero while D distorts: the rectified camera is unknown (a "
                    "calibration publishes P; image_proc cannot rectify this either)")
        return ""

    # -- geometry -----------------------------------------------------------------------
    @property
    def binning(self) -> tuple[int, int]:
        return max(int(self.binning_x), 1), max(int(self.binning_y), 1)

    def _roi(self) -> tuple[int, int, int, int] | None:
        x, y, w, h = (int(v) for v in self.roi)
        if w <= 0 or h <= 0 or (x, y, w, h) == (0, 0, self.width, self.height):
            return None
        return x, y, w, h

    def image_size(self) -> tuple[int, int]:
        """(width, height) of the published image (after ROI and binning)."""
        bx, by = self.binning
        roi = self._roi()
        w, h = (roi[2], roi[3]) if roi else (self.width, self.height)
        return w // bx, h // by

    def intrinsics(self, matrix: str = "K") -> Intrinsics:
        """The pinhole camera of the published image described by ``K`` or ``P[:3,:3]``,
        with binning and ROI applied (REP 104)."""
        full = (np.reshape(self.K, (3, 3)) if matrix == "K"
                else np.reshape(self.P, (3, 4))[:, :3])
        intr = Intrinsics.from_matrix(full, self.width, self.height)
        roi = self._roi()
        if roi is not None:
            intr = intr.cropped(*roi)
        bx, by = self.binning
        if bx > 1 or by > 1:
            intr = Intrinsics(intr.fx / bx, intr.fy / by, intr.cx / bx, intr.cy / by,
                              intr.width // bx, intr.height // by)
        return intr

    def tx_ty(self) -> tuple[float, float]:
        """P's fourth column (Tx, Ty) for the published image: 0 for a monocular camera;
        (-fx B, 0) for the right camera of a stereo pair with baseline B (the left
        camera's optical centre in its frame, times the focal length). Binning divides
        them as it divides fx and fy, the ROI leaves them (image_geometry's
        ``fromCameraInfo``). Rectification ignores them (image_proc's maps take
        P[:3,:3]), and so does a cloud in the camera's own frame (depth_image_proc's
        ``x = (u - cx) z / fx``, rviz's DepthCloud): they only say where the other camera
        is, so the depth CameraInfo carries them on."""
        bx, by = self.binning
        P = np.reshape(self.P, (3, 4))
        return float(P[0, 3]) / bx, float(P[1, 3]) / by

    def is_pinhole(self) -> bool:
        """Nothing to rectify: no distortion, R = I, and P (when set) equals K."""
        if self.distorts or not np.allclose(np.reshape(self.R, (3, 3)), np.eye(3)):
            return False
        P3 = np.reshape(self.P, (3, 4))[:, :3]
        return not np.any(P3) or np.allclose(P3, np.reshape(self.K, (3, 3)))

    def check(self) -> "Calibration":
        """Self, or ValueError with :meth:`problem`."""
        why = self.problem()
        if why:
            raise ValueError(why)
        return self


class Rectifier:
    """Raw image -> the image of ``intrinsics`` (:meth:`apply`), or straight to a model
    input (:meth:`resample`).

    ``calibration`` None (:attr:`identity`): the image is used as it is (no distortion,
    an ``image_rect`` input, or ``ignore_distortion``). Else maps from the raw image to
    each output geometry asked for are computed on first use and kept (fixed-point
    CV_16SC2, 1/32 px, as image_geometry uses). ``apply`` and ``resample`` take [H,W]
    or [H,W,C] of the published size.
    """

    def __init__(self, intrinsics: Intrinsics, geometry: str,
                 calibration: Calibration | None = None,
                 tx_ty: tuple[float, float] = (0.0, 0.0)):
        self.intrinsics = intrinsics
        self.geometry = geometry
        self.calibration = calibration
        self.tx_ty = tx_ty                      # P's (Tx, Ty) of the output camera
        self._maps: dict = {}                   # output camera -> maps, at most 8

    @property
    def identity(self) -> bool:
        return self.calibration is None

    def maps_to(self, camera: Intrinsics) -> tuple:
        """The (map1, map2) from the raw image to the pinhole ``camera`` (cached)."""
        maps = self._maps.get(camera)
        if maps is None:
            maps = _camera_maps(self.calibration, camera, cv2.CV_16SC2)
            if len(self._maps) >= 8:
                self._maps.clear()
            self._maps[camera] = maps
        return maps

    def _check(self, image: np.ndarray) -> None:
        size = (self.intrinsics.width, self.intrinsics.height)
        if image.shape[1::-1] != size:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the calibration "
                             f"says {size[0]}x{size[1]}")

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The rectified image at the published size (image_proc's rectify)."""
        self._check(image)
        if self.identity:
            return image
        return _remap(image, self.maps_to(self.intrinsics), interpolation)

    def resample(self, image: np.ndarray, crop: tuple[int, int, int, int],
                 size: tuple[int, int]) -> np.ndarray:
        """``cv2.resize(self.apply(image)[y0:y0+h, x0:x0+w], size)`` in one ``cv2.remap``
        from the raw image: [H,W,C] -> [size[1],size[0],C].

        The geometry is that of the resize (pixel centres as in
        :meth:`~depth_perception.camera.Intrinsics.resized`): output pixel (u', v')
        samples the rectified pixel ((u' + 0.5) w / W' - 0.5 + x0, ...); the maps are
        those of the rectified camera cropped and resized. Shrinking by more than 2x
        (where the resize averages areas) remaps to ``s`` x the size (s = ceil of the
        shrink) and averages s x s blocks. Without a calibration (:attr:`identity`) it
        is the crop and the resize (:func:`crop_resize`).
        """
        self._check(image)
        x0, y0, w, h = (int(v) for v in crop)
        size = (int(size[0]), int(size[1]))
        if self.identity:
            return crop_resize(image, (x0, y0, w, h), size)
        s = math.ceil(max(w / size[0], h / size[1])) if _shrinks(size, w, h) else 1
        camera = self.intrinsics.cropped(x0, y0, w, h).resized(size[0] * s, size[1] * s)
        out = _remap(image, self.maps_to(camera), cv2.INTER_LINEAR)
        if s > 1:                     # an s x s block average: the area resize's geometry
            out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
        return out


def _shrinks(size: tuple[int, int], width: int, height: int) -> bool:
    """A resize of ``width`` x ``height`` to ``size`` shrinks by more than 2x (aliasing:
    area averaging needed)."""
    return size[0] * 2 < width or size[1] * 2 < height


def crop_resize(image: np.ndarray, crop: tuple[int, int, int, int],
                size: tuple[int, int]) -> np.ndarray:
    """``image[y0:y0+h, x0:x0+w]`` resized to ``size`` = (W', H'): area averaging where
    it shrinks by more than 2x, bilinear otherwise (4x cheaper at 1280x720 -> 924x518);
    the image itself when nothing changes."""
    x0, y0, w, h = (int(v) for v in crop)
    image = image[y0:y0 + h, x0:x0 + w]
    if (w, h) == tuple(size):
        return image
    interp = cv2.INTER_AREA if _shrinks(size, w, h) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), tuple(size), interpolation=interp)


def _remap(image: np.ndarray, maps: tuple, interpolation: int) -> np.ndarray:
    return cv2.remap(image, maps[0], maps[1], interpolation,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def rectifier(calibration: Calibration, geometry: str = "raw") -> Rectifier:
    """The cached :class:`Rectifier` of ``calibration`` for an input image of kind
    ``geometry`` (one of :data:`INPUT_IMAGES`); ValueError (the reason) for a bad
    calibration."""
    if geometry not in INPUT_IMAGES:
        raise ValueError(f"input image {geometry!r}: expected one of {INPUT_IMAGES}")
    return _rectifier(calibration, geometry)


@functools.lru_cache(maxsize=16)
def _rectifier(calibration: Calibration, geometry: str) -> Rectifier:
    cal = calibration.check()
    if geometry == "ignore_distortion":                   # K of the raw image: no stereo P
        return Rectifier(cal.intrinsics("K"), geometry)
    if geometry == "raw" and cal.is_pinhole():            # K = P[:3,:3]
        return Rectifier(cal.intrinsics("K"), geometry, tx_ty=cal.tx_ty())
    if geometry == "rectified":
        # image_rect: described by P (K when P is unset and nothing distorts)
        return Rectifier(cal.intrinsics("P" if any(cal.P) else "K"), geometry,
                         tx_ty=cal.tx_ty())
    return Rectifier(cal.intrinsics("P"), geometry, cal, cal.tx_ty())   # maps on first use


def _camera_maps(cal: Calibration, camera: Intrinsics, m1type: int):
    """Maps (``m1type``: CV_16SC2 fixed point, as image_geometry uses, or CV_32FC1) from
    the published raw image (binning and ROI applied) to the pinhole ``camera`` (any size):
    for each of its pixels the raw pixel it samples. With ``camera`` = P binned and cut to
    the ROI these are image_proc's maps of the full-resolution calibration, binned, then
    cut; any other ``camera`` (the rectified one cropped and resized) goes straight from
    the raw image to that geometry."""
    K = cal.intrinsics("K").K                # the raw camera in published pixels
    R = np.reshape(cal.R, (3, 3)).astype(np.float64)
    D = np.asarray(cal.D if cal.D else [0.0] * 5, np.float64)
    if cal.distortion_model == "equidistant":
        return cv2.fisheye.initUndistortRectifyMap(K, D[:4], R, camera.K, camera.size, m1type)
    return cv2.initUndistortRectifyMap(K, D, R, camera.K, camera.size, m1type)


def distortion_maps(calibration: Calibration,
                    supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """([H*s,W*s] x, [H*s,W*s] y) float32, s = ``supersample``: for each pixel (or each of
    its s x s sub-pixel centres) of the raw (distorted) image, where it lies in the
    rectified image of ``P``. ``cv2.remap(rectified, x, y, ...)`` renders what the lens
    records (then an s x s area average, :func:`render_distorted`); full resolution, no
    binning/ROI; the inverse of :func:`rectifier`."""
    cal = calibration.check()
    if cal._roi() is not None or cal.binning != (1, 1):
        raise ValueError("distortion_maps: full-resolution calibrations only (no ROI/binning)")
    s = int(supersample)
    u, v = np.meshgrid((np.arange(cal.width * s, dtype=np.float64) + 0.5) / s - 0.5,
                       (np.arange(cal.height * s, dtype=np.float64) + 0.5) / s - 0.5)
    pts = np.stack([u.ravel(), v.ravel()], axis=1)[:, None, :]           # [N,1,2]
    K = np.reshape(cal.K, (3, 3)).astype(np.float64)
    R = np.reshape(cal.R, (3, 3)).astype(np.float64)
    P = np.reshape(cal.P, (3, 4)).astype(np.float64)[:, :3] if any(cal.P) else K
    D = np.asarray(cal.D if cal.D else [0.0] * 5, np.float64)
    if cal.distortion_model == "equidistant":
        out = cv2.fisheye.undistortPoints(pts, K, D[:4], R=R, P=P)
    else:
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
        if hasattr(cv2, "undistortPointsIter"):                           # OpenCV 4
            out = cv2.undistortPointsIter(pts, K, D, R, P, crit)
        else:                                                             # OpenCV 5
            out = cv2.undistortPoints(pts, K, D, R=R, P=P, criteria=crit)
    xy = out.reshape(cal.height * s, cal.width * s, 2).astype(np.float32)
    return np.ascontiguousarray(xy[..., 0]), np.ascontiguousarray(xy[..., 1])


def render_distorted(rectified: np.ndarray, maps: tuple, size: tuple[int, int]) -> np.ndarray:
    """What the lens records of a ``rectified`` (pinhole) image: ``maps`` from
    :func:`distortion_maps` (supersampled s x s), each raw pixel the area average of its
    sub-pixel samples (a pixel integrates light; point samples alias where the lens
    squeezes the scene). Rays outside the rectified view repeat its border."""
    fine = cv2.remap(rectified, maps[0], maps[1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    if fine.shape[1::-1] == tuple(size):
        return fine
    return cv2.resize(fine, tuple(size), interpolation=cv2.INTER_AREA)


def parse_distortion(text: str) -> tuple[str, tuple[float, ...]]:
    """'plumb_bob:-0.3,0.08,0,0,0' -> ('plumb_bob', (-0.3, 0.08, 0, 0, 0)); a model's
    missing trailing coefficients are zero. ValueError for an unknown model or too many
    coefficients."""
    model, _, coeffs = str(text).partition(":")
    model = model.strip()
    if model not in DISTORTION_MODELS:
        raise ValueError(f"distortion {text!r}: model must be one of "
                         f"{sorted(DISTORTION_MODELS)} (MODEL:c1,c2,...)")
    try:
        values = [float(c) for c in coeffs.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"distortion {text!r}: coefficients must be numbers") from None
    n = max(DISTORTION_MODELS[model])
    if len(values) > n:
        raise ValueError(f"distortion {text!r}: {model} takes at most {n} coefficients")
    return model, tuple(values + [0.0] * (n - len(values)))
