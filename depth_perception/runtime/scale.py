"""Metric scale policies: turn a relative (or slightly off) depth map into metres.

Every policy has ``update(depth [H,W], intrinsics, reference=None) -> ScaleEstimate``
(``depth`` is the prediction at camera resolution, NaN/inf invalid; ``reference`` is
a sparse metric depth [H,W], NaN where none, e.g. LiDAR projected into the image) and
``reset()`` to forget its smoothing state. Metric depth = ``scale * depth``.

* ``model``: the model is metric, factor 1.
* ``fixed``: a known factor.
* ``lidar_median``: per frame, median of ``reference / depth`` over the pixels that
  have both; smoothed over the last ``window`` accepted frames (median or EMA).
* ``ground_plane``: from the known camera height above the road: RANSAC plane fit to
  the back-projected lower image part, the plane normal within ``normal_tolerance_deg``
  of the expected up direction (optical -y rotated by ``pitch_deg``, positive = camera
  looking down); estimated height = distance from the camera centre to the plane,
  scale = ``camera_height / estimated``; smoothed over time.

A frame without enough support is not valid and the last smoothed scale is held
(``nan`` until the first accepted frame).
"""
from __future__ import annotations

import collections
import inspect
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from depth_perception.camera import Intrinsics

logger = logging.getLogger(__name__)

SMOOTHING = ("median", "ema")


@dataclass(frozen=True)
class ScaleEstimate:
    """``scale``: smoothed factor to multiply depth by (nan if none yet); ``source``:
    policy name; ``valid``: this frame contributed a measurement; ``measurement``: this
    frame's raw factor (nan if none); ``info``: counts and reasons for diagnostics."""

    scale: float
    source: str
    valid: bool
    measurement: float = math.nan
    info: dict = field(default_factory=dict)


class Smoother:
    """Median over the last ``window`` values, or an EMA with weight ``alpha``."""

    def __init__(self, method: str = "median", window: int = 10, alpha: float = 0.3):
        if method not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got '{method}'")
        if window < 1 or not 0 < alpha <= 1:
            raise ValueError(f"need window >= 1 and 0 < alpha <= 1, got {window}, {alpha}")
        self.method, self.window, self.alpha = method, int(window), float(alpha)
        self.reset()

    def reset(self) -> None:
        self._values = collections.deque(maxlen=self.window)
        self._ema = math.nan

    @property
    def value(self) -> float:
        if self.method == "ema":
            return self._ema
        return float(np.median(self._values)) if self._values else math.nan

    def add(self, x: float) -> float:
        self._values.append(float(x))
        self._ema = x if math.isnan(self._ema) else self.alpha * x + (1 - self.alpha) * self._ema
        return self.value


class ScalePolicy:
    """Base class: see the module docstring for the contract."""

    name = "policy"
    #: needs a metric reference depth every frame (``reference=``)
    needs_reference = False
    #: can make a relative model metric
    handles_relative = True

    def update(self, depth: np.ndarray, intrinsics: Intrinsics,
               reference: np.ndarray | None = None) -> ScaleEstimate:
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def reset(self) -> None:
        """Forget all smoothing state."""

    @staticmethod
    def _check(depth: np.ndarray, intrinsics: Intrinsics, reference=None) -> None:
        if not isinstance(depth, np.ndarray) or depth.shape != (intrinsics.height,
                                                                  intrinsics.width):
            raise ValueError(f"depth must be a [H,W] array of the intrinsics size "
                             f"{intrinsics.height}x{intrinsics.width}, got "
                             f"{getattr(depth, 'shape', type(depth).__name__)}")
        if reference is not None and np.shape(reference) != depth.shape:
            raise ValueError(f"reference depth shape {np.shape(reference)} does not match the "
                             f"depth shape {depth.shape}; project the LiDAR into the camera "
                             "image at the camera resolution")


class ModelScale(ScalePolicy):
    """The model is metric: factor 1 (cannot make a relative model metric)."""

    name = "model"
    handles_relative = False

    def update(self, depth, intrinsics, reference=None) -> ScaleEstimate:
        return ScaleEstimate(1.0, self.name, True, 1.0)


class FixedScale(ScalePolicy):
    """A known constant factor."""

    name = "fixed"

    def __init__(self, factor: float = 1.0):
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"fixed scale factor must be positive and finite, got {factor}")
        self.factor = float(factor)

    def update(self, depth, intrinsics, reference=None) -> ScaleEstimate:
        return ScaleEstimate(self.factor, self.name, True, self.factor)


class LidarMedianScale(ScalePolicy):
    """Median ratio of sparse metric reference depth to the prediction.

    ``min_points``: fewer common valid pixels -> frame not valid, scale held.
    ``max_range``: reference points beyond it are ignored (LiDAR noise far away).
    """

    name = "lidar_median"
    needs_reference = True

    def __init__(self, min_points: int = 20, window: int = 10, smoothing: str = "median",
                 alpha: float = 0.3, max_range: float = math.inf):
        if min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {min_points}")
        self.min_points = int(min_points)
        self.max_range = float(max_range)
        self.smoother = Smoother(smoothing, window, alpha)

    def reset(self) -> None:
        self.smoother.reset()

    def _hold(self, reason: str, **info) -> ScaleEstimate:
        return ScaleEstimate(self.smoother.value, self.name, False, math.nan,
                             {"reason": reason, **info})

    def update(self, depth, intrinsics, reference=None) -> ScaleEstimate:
        self._check(depth, intrinsics, reference)
        if reference is None:
            return self._hold("no reference depth for this frame")
        ref = np.asarray(reference, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(ref) & (ref > 0) & (ref <= self.max_range)
                  & np.isfinite(depth) & (depth > 0))
        n = int(ok.sum())
        if n < self.min_points:
            return self._hold(f"{n} reference points on valid depth, need {self.min_points}",
                              points=n)
        ratio = float(np.median(ref[ok].astype(np.float64) / depth[ok]))
        return ScaleEstimate(self.smoother.add(ratio), self.name, True, ratio, {"points": n})


def expected_up(pitch_deg: float) -> np.ndarray:
    """World up in the camera optical frame for a camera pitched down by ``pitch_deg``:
    ``(0, -cos p, -sin p)`` (optical y points down, z forward)."""
    p = math.radians(pitch_deg)
    return np.array([0.0, -math.cos(p), -math.sin(p)])


def fit_plane_ransac(points: np.ndarray, up: np.ndarray, threshold: float,
                     max_angle_deg: float, iterations: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, float, np.ndarray] | None:
    """RANSAC plane ``n . X + d = 0`` (``|n| = 1``, ``n . up > 0``) through [N,3] points.

    Hypotheses from random triples, all scored at once; only normals within
    ``max_angle_deg`` of ``up`` count. The best one is refined by least squares (SVD)
    on its inliers. Returns (n [3], d, inlier mask [N]) or None.
    """
    n_pts = len(points)
    if n_pts < 3:
        return None
    cos_max = math.cos(math.radians(max_angle_deg))
    idx = rng.integers(0, n_pts, size=(iterations, 3))
    p0, p1, p2 = points[idx[:, 0]], points[idx[:, 1]], points[idx[:, 2]]   # [K,3]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    good = norms > 1e-12
    normals = normals[good] / norms[good, None]
    p0 = p0[good]
    normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]              # orient up
    keep = normals @ up >= cos_max
    normals, p0 = normals[keep], p0[keep]
    if len(normals) == 0:
        return None
    d = -np.einsum("kj,kj->k", normals, p0)                                # [K]
    dist = np.abs(points @ normals.T + d[None, :])                         # [N,K]
    counts = (dist < threshold).sum(axis=0)
    best = int(np.argmax(counts))
    inliers = dist[:, best] < threshold
    # least-squares refinement on the inliers
    sel = points[inliers]
    centroid = sel.mean(axis=0)
    _, _, vt = np.linalg.svd(sel - centroid, full_matrices=False)
    n = vt[-1]
    n = n if n @ up >= 0 else -n
    if n @ up < cos_max:
        n = normals[best]
        centroid = p0[best]
    d_ref = float(-n @ centroid)
    inliers = np.abs(points @ n + d_ref) < threshold
    return n, d_ref, inliers


class GroundPlaneScale(ScalePolicy):
    """Scale from the known camera height above a flat road in front of the camera.

    ``camera_height``: metres from the camera centre down to the road.
    ``pitch_deg``: camera pitch below the horizon. ``lower_fraction``: fraction of the
    image rows (from the bottom) searched for road. ``inlier_threshold``: plane distance
    for inliers, relative to the median distance of the candidate points (the depth
    scale is unknown). ``min_inliers`` / ``min_inlier_ratio``: below either the frame is
    rejected.
    """

    name = "ground_plane"

    def __init__(self, camera_height: float, pitch_deg: float = 0.0,
                 normal_tolerance_deg: float = 10.0, lower_fraction: float = 0.4,
                 max_points: int = 3000, iterations: int = 200,
                 inlier_threshold: float = 0.01, min_inliers: int = 200,
                 min_inlier_ratio: float = 0.2, window: int = 15, smoothing: str = "median",
                 alpha: float = 0.3, seed: int = 0):
        if not (math.isfinite(camera_height) and camera_height > 0):
            raise ValueError(f"camera_height must be positive metres, got {camera_height}")
        if not 0 < lower_fraction <= 1:
            raise ValueError(f"lower_fraction must be in (0, 1], got {lower_fraction}")
        if not 0 < normal_tolerance_deg < 90:
            raise ValueError(f"normal_tolerance_deg must be in (0, 90), got "
                             f"{normal_tolerance_deg}")
        self.camera_height = float(camera_height)
        self.pitch_deg = float(pitch_deg)
        self.normal_tolerance_deg = float(normal_tolerance_deg)
        self.lower_fraction = float(lower_fraction)
        self.max_points = int(max_points)
        self.iterations = int(iterations)
        self.inlier_threshold = float(inlier_threshold)
        self.min_inliers = int(min_inliers)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.seed = seed
        self.smoother = Smoother(smoothing, window, alpha)
        self.reset()

    def reset(self) -> None:
        self.smoother.reset()
        self._rng = np.random.default_rng(self.seed)

    def _hold(self, reason: str, **info) -> ScaleEstimate:
        return ScaleEstimate(self.smoother.value, self.name, False, math.nan,
                             {"reason": reason, **info})

    def update(self, depth, intrinsics, reference=None) -> ScaleEstimate:
        self._check(depth, intrinsics)
        # 1. candidate road points: lower image part, valid depth        [N,3]
        H = intrinsics.height
        v0 = int(H * (1.0 - self.lower_fraction))
        pts = intrinsics.backproject(depth)[v0:].reshape(-1, 3).astype(np.float64)
        with np.errstate(invalid="ignore"):
            pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0)]
        if len(pts) > self.max_points:
            pts = pts[self._rng.choice(len(pts), self.max_points, replace=False)]
        if len(pts) < self.min_inliers:
            return self._hold(f"{len(pts)} valid points in the lower image, need "
                              f"{self.min_inliers}", points=len(pts))
        # 2. RANSAC with the expected-up constraint
        up = expected_up(self.pitch_deg)
        thr = self.inlier_threshold * float(np.median(np.linalg.norm(pts, axis=1)))
        fit = fit_plane_ransac(pts, up, thr, self.normal_tolerance_deg, self.iterations,
                               self._rng)
        if fit is None:
            return self._hold("no plane hypothesis within the normal tolerance",
                              points=len(pts))
        n, d, inliers = fit
        count = int(inliers.sum())
        info = {"points": len(pts), "inliers": count,
                "normal_angle_deg": math.degrees(math.acos(min(1.0, float(n @ up))))}
        # 3. reject weak or implausible fits
        if count < self.min_inliers or count < self.min_inlier_ratio * len(pts):
            return self._hold(f"{count} plane inliers of {len(pts)} points, need "
                              f"{self.min_inliers} and {self.min_inlier_ratio:.0%}", **info)
        if d <= 0:  # n points up, so a road below the camera has n . X = -d < 0
            return self._hold("fitted plane is not below the camera", **info)
        # 4. scale = known height / estimated height, smoothed
        measured = self.camera_height / d
        return ScaleEstimate(self.smoother.add(measured), self.name, True, measured,
                             {**info, "estimated_height": d})


POLICIES = {cls.name: cls for cls in (ModelScale, FixedScale, LidarMedianScale,
                                      GroundPlaneScale)}


def make_scale_policy(name: str, **params) -> ScalePolicy:
    """Policy by name ('model', 'fixed', 'lidar_median', 'ground_plane'); unknown names
    or parameters are refused with the accepted ones listed."""
    if name not in POLICIES:
        raise ValueError(f"unknown scale policy '{name}'; choose one of {sorted(POLICIES)}")
    cls = POLICIES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"scale policy '{name}' has no parameter(s) {unknown}; it accepts "
                         f"{accepted}")
    try:
        return cls(**params)
    except TypeError as exc:  # a required parameter is missing
        raise ValueError(f"scale policy '{name}': {exc}") from exc
