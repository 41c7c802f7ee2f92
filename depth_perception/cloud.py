"""Costmap-ready point clouds from a depth image, in numpy (no rclpy).

What a Nav2 obstacle or voxel layer needs from a monocular depth cloud, applied to the
cloud only (the depth image is published unchanged):

1. **Flying pixels** (:func:`flying_pixels`): a network blends depth across an object's
   silhouette, leaving pixels between the foreground and the background, which mark
   phantom obstacles. A pixel is dropped when its depth exceeds that of one of its four
   neighbours by more than ``flying_jump`` times the neighbour's depth
   (``z > (1 + jump) * min(neighbours)``): the blended pixels and the first background
   pixel of a silhouette go, the foreground edge (the obstacle's true boundary) stays.
   One 3x3 cross erosion per frame.
2. **Sky cap**: depth at or beyond ``sky_depth`` is sky (a model saturates there) and
   gives no point; so do ``+inf`` (REP 117: beyond range / sky), ``-inf``, NaN, ``<= 0``.
3. **Range cap**: points farther than ``max_range`` from the camera centre (Euclidean,
   as Nav2's ``obstacle_max_range`` measures) are dropped.
4. **Confidence** (optional): pixels whose confidence is under ``min_confidence`` (the
   model's uncertainty or the temporal agreement, :mod:`depth_perception.confidence`)
   give no point: the far field and dark regions a model is confidently wrong about.
5. **Target frame** (optional): the points are moved by ``T_target_camera`` (from TF).
6. **Voxel downsampling** (optional): one point per ``voxel_size`` cube, the centroid of
   the points in it (the colour of the first one), in the frame of the published cloud.

Without a target frame and voxels the cloud stays organized (``publish_organized_cloud``);
a transformed or voxelised cloud is unorganized (height 1, only valid points).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np

from depth_perception import conversions, units
from depth_perception.camera import Intrinsics, pixel_rays

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@dataclass(frozen=True)
class CloudSettings:
    """How a depth image becomes the published cloud (see the module docstring).

    stride: every n-th pixel in u and v; max_range: [m] from the camera centre;
    sky_depth: [m] z at or beyond which a pixel is sky; flying_jump: relative depth jump
    of the flying-pixel filter (0 = off); voxel_size: [m] (0 = off); organized: H x W
    cloud with NaN points (camera frame without voxels only).
    """

    stride: int = 1
    max_range: float = math.inf
    sky_depth: float = math.inf
    flying_jump: float = 0.0
    voxel_size: float = 0.0
    organized: bool = True
    #: pixels whose confidence (:mod:`depth_perception.confidence`) is below this give
    #: no point (0 = off; applies only when a confidence image is given)
    min_confidence: float = 0.0

    def __post_init__(self):
        if int(self.stride) < 1:
            raise ValueError(f"CloudSettings: stride must be >= 1, got {self.stride}")
        for name in ("max_range", "sky_depth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CloudSettings: {name} must be > 0 [m] (inf = no cap), "
                                 f"got {getattr(self, name)}")
        for name in ("flying_jump", "voxel_size"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"CloudSettings: {name} must be finite and >= 0 (0 = off), "
                                 f"got {value}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"CloudSettings: min_confidence must be in [0, 1] (0 = off), "
                             f"got {self.min_confidence}")


def flying_pixels(depth: np.ndarray, jump: float) -> np.ndarray:
    """[H,W] bool: pixels whose depth exceeds a 4-neighbour's by more than ``jump`` times
    that neighbour's depth. Unusable neighbours (NaN, +-inf, <= 0) never cause a drop."""
    z = units.nan_outside(depth)                                     # [H,W] float32
    near = np.where(np.isnan(z), np.float32(np.inf), z)
    nearest = cv2.erode(near, _CROSS, borderType=cv2.BORDER_CONSTANT,
                        borderValue=float(np.inf))                  # min of self + 4-nbrs
    with np.errstate(invalid="ignore"):
        return z > np.float32(1.0 + jump) * nearest


@functools.lru_cache(maxsize=8)
def _ray_length(fx: float, fy: float, cx: float, cy: float, width: int,
                height: int) -> np.ndarray:
    """[H,W] float32 distance from the camera centre per metre of z-depth, read-only."""
    rays = pixel_rays(Intrinsics(fx, fy, cx, cy, width, height), 1)
    out = np.sqrt(1.0 + rays.x_per_z ** 2 + rays.y_per_z ** 2).astype(np.float32)
    out.setflags(write=False)
    return out


def ray_length(intrinsics: Intrinsics) -> np.ndarray:
    """[H,W] ``sqrt(1 + x_per_z^2 + y_per_z^2)``, cached per camera geometry."""
    i = intrinsics
    return _ray_length(float(i.fx), float(i.fy), float(i.cx), float(i.cy), int(i.width),
                       int(i.height))


def filter_depth(depth: np.ndarray, intrinsics: Intrinsics, settings: CloudSettings,
                 confidence: np.ndarray | None = None) -> np.ndarray:
    """[H,W] metres -> [H,W] float32 copy with NaN wherever the cloud gets no point:
    unusable depth, sky (``>= sky_depth``), beyond ``max_range``, flying pixels, and
    (with a [H,W] ``confidence``) confidence below ``min_confidence`` or NaN."""
    depth = np.asarray(depth)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"filter_depth: depth shape {depth.shape} does not match intrinsics "
                         f"{intrinsics.width}x{intrinsics.height} (expected [H,W])")
    z = units.nan_outside(depth)                                     # [H,W]
    drop = flying_pixels(depth, settings.flying_jump) if settings.flying_jump > 0 else None
    with np.errstate(invalid="ignore"):
        if math.isfinite(settings.sky_depth):
            drop = (z >= settings.sky_depth) if drop is None else drop | (z >= settings.sky_depth)
        if math.isfinite(settings.max_range):
            far = cv2.multiply(z, ray_length(intrinsics)) > settings.max_range
            drop = far if drop is None else drop | far
        if confidence is not None and settings.min_confidence > 0:
            confidence = np.asarray(confidence)
            if confidence.shape != depth.shape:
                raise ValueError(f"filter_depth: confidence of shape {confidence.shape} "
                                 f"does not match the depth {depth.shape}")
            unsure = ~(confidence >= settings.min_confidence)          # NaN: unsure
            drop = unsure if drop is None else drop | unsure
    if drop is not None:
        z[drop] = np.nan
    return z


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """[N,3] points, [4,4] ``T_target_source`` -> [N,3] float32 ``R @ p + t``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"transform_points: expected a finite [4,4] transform, got {T.shape}")
    points = np.asarray(points, dtype=np.float64)
    return (points @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def voxel_downsample(points: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """[N,3] finite points -> ([M,3] float32 centroids, [M] index of each voxel's first
    point), one per occupied cube ``floor(p / size)``, in ascending voxel order."""
    points = np.asarray(points, dtype=np.float64)
    if not size > 0:
        raise ValueError(f"voxel_downsample: size must be > 0 [m], got {size}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"voxel_downsample: expected points [N,3], got {points.shape}")
    if len(points) == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    cells = np.floor(points * (1.0 / size)).astype(np.int64)         # [N,3]
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"voxel_downsample: {dims.tolist()} voxels of {size} m do not fit "
                         "one int64 key; use a larger voxel_size or a range cap")
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]   # [N]
    # 1. sort by voxel (stable: the first point of a voxel keeps its place)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    new = np.empty(len(keys), bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    # 2. voxel index of every point, then sums and counts per voxel  [M]
    voxel = np.empty(len(keys), np.int64)
    voxel[order] = np.cumsum(new) - 1
    counts = np.bincount(voxel)
    sums = np.stack([np.bincount(voxel, weights=points[:, i]) for i in range(3)], axis=1)
    first = order[np.flatnonzero(new)]
    return (sums / counts[:, None]).astype(np.float32), first


def costmap_cloud(depth: np.ndarray, intrinsics: Intrinsics, header, settings: CloudSettings,
                  rgb: np.ndarray | None = None, target=None, msg_type=None,
                  confidence: np.ndarray | None = None):
    """[H,W] z-depth metres -> PointCloud2 as configured by ``settings``.

    ``target``: None (camera optical frame, the header's frame_id) or ``(frame_id,
    T_target_camera [4,4])``. ``rgb`` [H,W,3] uint8 adds the packed ``rgb`` field.
    ``confidence`` [H,W] in [0, 1]: pixels under ``settings.min_confidence`` give no point.
    """
    # 1. no point where the depth is unusable, sky, out of range, flying or unsure  [H,W]
    z = filter_depth(depth, intrinsics, settings, confidence)
    if target is None and settings.voxel_size == 0:
        return conversions.depth_to_cloud(z, intrinsics, header, rgb=rgb,
                                          stride=settings.stride,
                                          organized=settings.organized, msg_type=msg_type)
    # 2. valid strided points in the camera frame  [N,3]
    s = int(settings.stride)
    zs = z[::s, ::s]
    valid = ~np.isnan(zs)
    rays = pixel_rays(intrinsics, s)
    depth_valid = zs[valid]
    points = np.stack([rays.x_per_z[valid] * depth_valid, rays.y_per_z[valid] * depth_valid,
                       depth_valid], axis=1)
    colours = conversions.pack_rgb(rgb[::s, ::s][valid]) if rgb is not None else None
    # 3. into the target frame, then one point per voxel
    frame_id = getattr(header, "frame_id", "")
    if target is not None:
        frame_id, T = target
        points = transform_points(points, T)
    if settings.voxel_size > 0:
        points, first = voxel_downsample(points, settings.voxel_size)
        colours = colours[first] if colours is not None else None
    names = ("x", "y", "z")
    if colours is not None:
        points, names = np.column_stack([points, colours]), names + ("rgb",)
    stamp = getattr(header, "stamp", None) or SimpleNamespace(sec=0, nanosec=0)
    return conversions.points_to_cloud(points, names, SimpleNamespace(
        stamp=stamp, frame_id=str(frame_id)), msg_type=msg_type)
