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

__all__ = ["points_to_depth", "project_lidar", "camera_from_lidar", "LIDAR_RULES"]

#: how a scan becomes a sparse depth image (:func:`project_lidar`):
#: ``nearest``: the package's rule (camera z, pixel whose centre is nearest, nearest
#: point wins); ``kitti``: monodepth2 ``kitti_utils.generate_depth_map(vel_depth=True)``
#: (the ground truth of the KITTI Eigen split); ``nuscenes``: the nuScenes devkit's
#: ``map_pointcloud_to_image`` drawn as md4all's ``generate_image_from_points``
LIDAR_RULES = ("nearest", "kitti", "nuscenes")
#: the devkit's ``min_dist``: points closer to the camera plane are dropped (metres)
NUSCENES_MIN_DIST = 1.0


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
                  intrinsics: Intrinsics, rule: str = "nearest") -> np.ndarray:
    """Sparse depth image from LiDAR points.

    points_lidar: [N,3] in the LiDAR frame (in the order of the scan: the ``nuscenes``
    rule keeps the last point drawn on a pixel); T_cam_lidar: [4,4] maps LiDAR points
    into the camera optical frame; rule: one of :data:`LIDAR_RULES`. Returns [H,W]
    float32 depth, NaN where no point (``nearest``: as :func:`points_to_depth`).
    """
    T = np.asarray(T_cam_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_cam_lidar must be a 4x4 matrix, got shape {T.shape}")
    pts = np.asarray(points_lidar, dtype=np.float64).reshape(-1, 3)
    if rule == "nearest":
        return points_to_depth(pts @ T[:3, :3].T + T[:3, 3], intrinsics)
    if rule == "kitti":
        return _kitti_depth(pts, T, intrinsics)
    if rule == "nuscenes":
        return _nuscenes_depth(pts, T, intrinsics)
    raise ValueError(f"unknown LiDAR rule {rule!r}; expected one of {', '.join(LIDAR_RULES)}")


def _kitti_depth(pts: np.ndarray, T: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """monodepth2 ``generate_depth_map(..., vel_depth=True)`` (kitti_utils.py).

    Points with velodyne x >= 0 are projected with K [R|t] (= P_rect R_rect velo2cam),
    the pixel is ``round(u) - 1, round(v) - 1`` (numpy rounds half to even), the depth
    is the velodyne x (forward), and the nearest point wins a pixel. The reference's
    duplicate search (``sub2ind`` with ``n - 1`` columns) also merges the last column of
    a row with the first of the next; that touches only the image's first and last
    columns, which every KITTI crop leaves out, and is not reproduced.
    """
    H, W = intrinsics.height, intrinsics.width
    depth = np.full((H, W), np.nan, dtype=np.float32)
    pts = pts[pts[:, 0] >= 0]                                     # [N,3] velodyne frame
    cam = pts @ T[:3, :3].T + T[:3, 3]                            # [N,3] camera frame
    uvw = cam @ intrinsics.K.T                                    # [N,3]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(uvw[:, 0] / uvw[:, 2]) - 1
        v = np.round(uvw[:, 1] / uvw[:, 2]) - 1
    inside = (u >= 0) & (v >= 0) & (u < W) & (v < H)
    u, v, z = u[inside].astype(np.int64), v[inside].astype(np.int64), pts[inside, 0]
    flat = v * W + u
    best = np.full(H * W, np.inf)
    np.minimum.at(best, flat, z)
    hit = np.isfinite(best) & (best > 0)                          # depth <= 0: no depth
    depth.reshape(-1)[hit] = best[hit].astype(np.float32)
    return depth


def _nuscenes_depth(pts: np.ndarray, T: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """nuScenes devkit ``NuScenesExplorer.map_pointcloud_to_image`` (``min_dist`` 1 m)
    drawn by md4all ``NuScenesDataset.generate_image_from_points``.

    Camera-frame points with z > 1 m whose projection lies strictly inside
    ``1 < u < W - 1``, ``1 < v < H - 1`` are drawn at ``(int(u), int(v))`` (truncation);
    where several land on one pixel the one drawn last (latest in the scan) stays.
    """
    H, W = intrinsics.height, intrinsics.width
    depth = np.full((H, W), np.nan, dtype=np.float32)
    cam = pts @ T[:3, :3].T + T[:3, 3]                            # [N,3] camera frame
    z = cam[:, 2]
    uvw = cam @ intrinsics.K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[:, 0] / z, uvw[:, 1] / z
    keep = (z > NUSCENES_MIN_DIST) & (u > 1) & (u < W - 1) & (v > 1) & (v < H - 1)
    depth[v[keep].astype(np.int32), u[keep].astype(np.int32)] = z[keep].astype(np.float32)
    return depth


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
