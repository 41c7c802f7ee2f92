"""Helpers of the ROS nodes that are neither QoS (:mod:`.qos`) nor diagnostics
(:mod:`.diagnostics`): optional imports of ROS packages missing from PyPI, the sparse
LiDAR reference of the scale policies and the colourised depth image.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)


# -- optional packages ------------------------------------------------------------------
def optional_import(name: str):
    """The module ``name`` or None when it is not installed (logged at debug level)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("optional module %s not available: %s", name, exc)
        return None


def import_diagnostic_updater():
    """``diagnostic_updater`` (a ROS 2 installation) or None (pip-only ROS 2)."""
    return optional_import("diagnostic_updater")


# -- pure array helpers used by the node --------------------------------------------------
def lidar_depth_image(points, T_camera_lidar, intrinsics):
    """Sparse reference depth for LiDAR scale policies.

    points: [N,3] float (lidar frame); T_camera_lidar: [4,4] mapping lidar points to the
    camera optical frame; returns [H,W] float32 z-depth in metres, NaN where no point
    projects (the nearest point wins where several do).
    """
    import numpy as np

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_camera_lidar must be 4x4, got {T.shape}")
    cam = points @ T[:3, :3].T + T[:3, 3]                       # [N,3] optical frame
    cam = cam[np.isfinite(cam).all(axis=1) & (cam[:, 2] > 0)]
    uv, z = intrinsics.project(cam)                              # [N,2], [N]
    u, v = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
    u, v, z = u[inside], v[inside], z[inside]
    order = np.argsort(-z)                                       # far first, near overwrites
    depth = np.full((intrinsics.height, intrinsics.width), np.nan, dtype=np.float32)
    depth[v[order], u[order]] = z[order]
    return depth
