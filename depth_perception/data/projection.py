"""LiDAR points -> sparse depth images, and the camera<-LiDAR transform at a stamp.

The one implementation used by the data layer (bag samples), offline evaluation, the
online evaluator node and the depth node's ``lidar_median`` scale policy, so the
reference depth a model is scored against is the same wherever it is computed.

Ego-motion compensation is decided here, once: when the world frame (``odom``) chain is
known at both stamps, a scan taken at ``scan_stamp`` is moved LiDAR(scan time) -> world
-> camera(image time), removing the vehicle's motion between the scan and the image;
when it is not, the static camera<-LiDAR chain at the scan time is used.
"""
from __future__ import annotations

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import TransformError, invert_transform

__all__ = ["points_to_depth", "project_lidar", "camera_from_lidar"]


def points_to_depth(points_cam: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """[N,3] camera-frame points -> [H,W] float32 sparse z-depth, NaN where no point.

    Points with z > 0 whose rounded pixel (the pixel whose centre is nearest) lies
    inside the image are kept; when several land on one pixel the nearest wins
    (z-buffer).
    """
    H, W = intrinsics.height, intrinsics.width
    depth = np.full((H, W), np.nan, dtype=np.float32)
    pts = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0)]
    if len(pts) == 0:
        return depth
    uv, z = intrinsics.project(pts)
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v, z = u[inside].astype(np.int64), v[inside].astype(np.int64), z[inside]
    flat = v * W + u
    order = np.lexsort((z, flat))                  # by pixel, then nearest first
    flat, z = flat[order], z[order]
    first = np.ones(len(flat), dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    depth.reshape(-1)[flat[first]] = z[first].astype(np.float32)
    return depth


def project_lidar(points_lidar: np.ndarray, T_cam_lidar: np.ndarray,
                  intrinsics: Intrinsics) -> np.ndarray:
    """Sparse depth image from LiDAR points.

    points_lidar: [N,3] in the LiDAR frame; T_cam_lidar: [4,4] maps LiDAR points into the
    camera optical frame. Returns [H,W] float32 z-depth as :func:`points_to_depth`.
    """
    T = np.asarray(T_cam_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_cam_lidar must be a 4x4 matrix, got shape {T.shape}")
    pts = np.asarray(points_lidar, dtype=np.float64).reshape(-1, 3)
    return points_to_depth(pts @ T[:3, :3].T + T[:3, 3], intrinsics)


def camera_from_lidar(tf, camera_frame: str, lidar_frame: str, image_stamp_ns: int,
                      scan_stamp_ns: int, world_frame: str = "odom",
                      motion_compensation: bool = True) -> np.ndarray:
    """[4,4] T_camera_lidar for a scan taken at ``scan_stamp_ns`` seen at the image time.

    ``tf``: anything with ``lookup(target, source, stamp_ns) -> [4,4]`` that raises
    :class:`~depth_perception.data.tf.TransformError` when it has no chain (the data
    layer's :class:`~depth_perception.data.tf.TfBuffer`, the node's TF listener). With
    ``motion_compensation`` and the world chain known at both stamps, the scan goes
    LiDAR(scan time) -> world -> camera(image time); otherwise the camera<-LiDAR chain at
    the scan time is used. Raises TransformError (a ValueError) naming the frames when no
    chain exists.
    """
    if motion_compensation:
        try:
            T_world_cam = tf.lookup(world_frame, camera_frame, int(image_stamp_ns))
            T_world_lidar = tf.lookup(world_frame, lidar_frame, int(scan_stamp_ns))
            return invert_transform(T_world_cam) @ T_world_lidar
        except TransformError:
            pass
    return tf.lookup(camera_frame, lidar_frame, int(scan_stamp_ns))
