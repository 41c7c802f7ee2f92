"""Depth images moved between the camera poses of two frames (pure numpy, no ROS).

* :func:`forward_warp`: every pixel of a source depth image back-projected with K,
  moved by ``T_dst_src`` and projected into the destination camera (same K), the nearest
  point winning a pixel (z-buffer, :func:`~depth_perception.data.projection.points_to_depth`).
  What the temporal alignment error (:mod:`depth_perception.evaluation.temporal`)
  compares with the next frame's depth.
* :func:`camera_motion`: ``T_dst_src`` between the camera poses at two stamps from a
  TF buffer (a bag's :class:`~depth_perception.data.tf.TfBuffer` or the depth node's
  TF), through a fixed ``world_frame``.

Conventions as in :mod:`depth_perception.data.tf`: ``T_dst_src`` maps points expressed in
the source camera into the destination camera (``X_dst = T @ X_src``). A camera driving
1 m forward along its optical axis between frame k and k+1 has ``T_{k+1<-k}`` with
translation (0, 0, -1): the scene comes 1 m closer.
"""
from __future__ import annotations

import numpy as np

from depth_perception.camera import Intrinsics, pixel_rays
from depth_perception.data.projection import points_to_depth
from depth_perception.data.tf import invert_transform

__all__ = ["backproject", "camera_motion", "forward_warp"]


def _check_transform(T) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"warp: expected a finite [4,4] transform, got shape {T.shape}")
    return T


def backproject(depth: np.ndarray, intrinsics: Intrinsics,
                valid: np.ndarray | None = None) -> np.ndarray:
    """[H,W] z-depth -> [N,3] float64 camera-frame points of the usable pixels (finite,
    > 0 and in ``valid``), in row-major pixel order."""
    depth = np.asarray(depth)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"warp: depth of shape {depth.shape} does not match the camera "
                         f"{intrinsics.width}x{intrinsics.height} (expected [H,W])")
    z = depth.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != depth.shape:
            raise ValueError(f"warp: mask of shape {valid.shape} does not match the depth "
                             f"{depth.shape}")
        ok &= valid
    rays = pixel_rays(intrinsics)
    zs = z[ok]
    return np.stack([rays.x_per_z[ok] * zs, rays.y_per_z[ok] * zs, zs], axis=1)


def forward_warp(depth: np.ndarray, intrinsics: Intrinsics, T_dst_src,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """The source depth [H,W] (metres, z) seen from the destination camera.

    Each usable source pixel (finite, > 0, and in ``valid`` when given) is
    back-projected with ``intrinsics``, moved by ``T_dst_src`` and projected with the
    same intrinsics to the pixel whose centre is nearest; where several points land on
    one pixel the nearest wins (z-buffer). Returns [H,W] float32 z-depth in the
    destination camera, NaN where no point lands (disocclusions, the image border, and
    the gaps of a magnified surface: a forward warp never fills them).
    """
    T = _check_transform(T_dst_src)
    pts = backproject(depth, intrinsics, valid)
    return points_to_depth(pts @ T[:3, :3].T + T[:3, 3], intrinsics)


def camera_motion(tf, camera_frame: str, src_stamp_ns: int, dst_stamp_ns: int,
                  world_frame: str = "odom") -> np.ndarray:
    """[4,4] ``T_dst_src``: points of the camera at ``src_stamp_ns`` into the camera at
    ``dst_stamp_ns``, through ``world_frame`` (``tf``: anything with ``lookup(target,
    source, stamp_ns)`` that raises :class:`~depth_perception.data.tf.TransformError`,
    which this raises too when a pose is unknown)."""
    T_world_src = tf.lookup(world_frame, camera_frame, int(src_stamp_ns))
    T_world_dst = tf.lookup(world_frame, camera_frame, int(dst_stamp_ns))
    return invert_transform(T_world_dst) @ T_world_src
