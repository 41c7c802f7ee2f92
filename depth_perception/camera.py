"""Pinhole intrinsics, kept consistent through resize and crop.

Pixel convention everywhere in the package: pixel (u, v) has its centre at integer
coordinates, u along the width (columns), v along the height (rows), as in OpenCV and
``sensor_msgs/CameraInfo``. A resize by factors (sx, sy) with ``cv2.resize`` maps pixel
centres as ``u' = sx * (u + 0.5) - 0.5``, hence ``cx' = sx * (cx + 0.5) - 0.5``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    """'640x192' -> (width, height); ValueError unless WIDTHxHEIGHT with positive sizes."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"image size {text!r}: expected WIDTHxHEIGHT, e.g. 640x192") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image size {text!r}: width and height must be positive")
    return w, h


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera: focal lengths and principal point in pixels, image size."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all()
                and self.fx > 0 and self.fy > 0):
            raise ValueError(
                f"invalid intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}: "
                "focal lengths must be positive and finite (is the CameraInfo K all zero? "
                "the camera is probably not calibrated)")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"invalid image size {self.width}x{self.height}")

    @classmethod
    def from_matrix(cls, K, width: int, height: int) -> "Intrinsics":
        """From a 3x3 matrix (or its 9 row-major values)."""
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   int(width), int(height))

    @property
    def K(self) -> np.ndarray:
        """[3,3] float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    def resized(self, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the same camera after resizing the image to ``width x height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, sx * (self.cx + 0.5) - 0.5,
                          sy * (self.cy + 0.5) - 0.5, int(width), int(height))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Intrinsics":
        """Intrinsics after cropping ``image[y0:y0+height, x0:x0+width]``."""
        if x0 < 0 or y0 < 0 or x0 + width > self.width or y0 + height > self.height:
            raise ValueError(
                f"crop ({x0},{y0},{width}x{height}) outside image {self.width}x{self.height}")
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, int(width), int(height))

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N,3] camera-frame points (optical: x right, y down, z forward) -> ([N,2] uv, [N] z)."""
        points = np.asarray(points, dtype=np.float64)
        z = points[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * points[:, 0] / z + self.cx
            v = self.fy * points[:, 1] / z + self.cy
        return np.stack([u, v], axis=1), z

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """[H,W] z-depth -> [H,W,3] camera-frame points (float32)."""
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} does not match intrinsics "
                             f"{self.width}x{self.height}")
        u = (np.arange(self.width, dtype=np.float32) - np.float32(self.cx)) / np.float32(self.fx)
        v = (np.arange(self.height, dtype=np.float32) - np.float32(self.cy)) / np.float32(self.fy)
        return np.stack([depth * u[None, :], depth * v[:, None], depth], axis=-1)


@dataclass(frozen=True)
class PixelRays:
    """Viewing rays of the pixels a strided sampling visits, for one camera geometry.

    ``x_per_z[i, j] = (u_j - cx) / fx`` and ``y_per_z[i, j] = (v_i - cy) / fy`` with
    ``u_j = j * stride`` (column) and ``v_i = i * stride`` (row) in original pixel
    coordinates: the point at z-depth ``z`` seen by that pixel is
    ``(x_per_z * z, y_per_z * z, z)``. ``zeros``: a zero plane of the same shape.
    All ``[ceil(H/stride), ceil(W/stride)]`` float32, read-only.
    """

    x_per_z: np.ndarray
    y_per_z: np.ndarray
    zeros: np.ndarray


def pixel_rays(intrinsics: Intrinsics, stride: int = 1) -> PixelRays:
    """:class:`PixelRays` of ``intrinsics`` sampled every ``stride`` pixels, computed once
    per (K, image size, stride) and cached: a change of any of them gives new rays."""
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    i = intrinsics
    return _pixel_rays(float(i.fx), float(i.fy), float(i.cx), float(i.cy), int(i.width),
                       int(i.height), int(stride))


@functools.lru_cache(maxsize=8)
def _pixel_rays(fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                stride: int) -> PixelRays:
    u = np.arange(0, width, stride, dtype=np.float32)                      # [w]
    v = np.arange(0, height, stride, dtype=np.float32)                     # [h]
    shape = (v.size, u.size)
    x = np.broadcast_to((u - np.float32(cx)) / np.float32(fx), shape).copy()          # [h,w]
    y = np.broadcast_to(((v - np.float32(cy)) / np.float32(fy))[:, None], shape).copy()
    planes = (x, y, np.zeros(shape, np.float32))
    for plane in planes:
        plane.setflags(write=False)
    return PixelRays(*planes)
