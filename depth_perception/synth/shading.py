"""Light transport helpers shared by the condition shaders (numpy + OpenCV).

Radiance is linear; :func:`depth_perception.synth.conditions.shade` applies the display
transform. Per-sample arrays are [S,...] over the appearance samples of a
:class:`~depth_perception.synth.street.CameraGeometry`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from depth_perception.synth.materials import smoothstep

if TYPE_CHECKING:
    from depth_perception.synth.street import CameraGeometry


SUN = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])



def sky_radiance(dirs: np.ndarray, top: np.ndarray, horizon: np.ndarray) -> np.ndarray:
    """Sky radiance by ray elevation: [N,3]."""
    elevation = dirs[:, 2] / np.linalg.norm(dirs, axis=1)
    w = np.clip(elevation * 3.0, 0.0, 1.0)[:, None]
    return horizon[None, :] * (1.0 - w) + top[None, :] * w


def point_light(points, normals, light, direction=None, cos_inner=1.0, cos_outer=-1.0):
    """Irradiance factor from a point light: cos(incidence)/d^2 times a cone profile."""
    to_light = light[None, :] - points
    dist2 = np.maximum(np.einsum("ij,ij->i", to_light, to_light), 0.25)
    to_light_n = to_light / np.sqrt(dist2)[:, None]
    lambert = np.clip(np.einsum("ij,ij->i", normals, to_light_n), 0.0, None)
    if direction is not None:
        cos_angle = -to_light_n @ direction
        lambert = lambert * smoothstep(cos_outer, cos_inner, cos_angle)
    return lambert / dist2



def lambert(geom: CameraGeometry, ambient, sun, albedo=None) -> np.ndarray:
    """[S,3] albedo * (ambient + sun * max(n.l, 0))."""
    albedo = geom.surface.albedo if albedo is None else albedo
    cos_sun = np.clip(geom.normals @ SUN, 0.0, None)
    return albedo * (np.asarray(ambient)[None, :] + np.asarray(sun)[None, :] * cos_sun[:, None])


def fog(geom: CameraGeometry, radiance: np.ndarray, airlight, visibility: float):
    """Blend towards the airlight colour with distance: exp(-d / visibility)."""
    d = np.where(np.isfinite(geom.distance), geom.distance, 1e6)
    transmission = np.exp(-d / visibility)[:, None]
    return radiance * transmission + np.asarray(airlight)[None, :] * (1.0 - transmission)



def streaks(rng, height: int, width: int, density: float, length: int,
             angle_deg: float) -> np.ndarray:
    """[H,W] float: random drops convolved with a slanted line kernel (motion streaks)."""
    import cv2

    drops = np.zeros((height, width), dtype=np.float32)
    count = int(height * width * density)
    rows = rng.integers(0, height, count)
    cols = rng.integers(0, width, count)
    drops[rows, cols] = rng.uniform(0.4, 1.0, count).astype(np.float32)
    size = 2 * length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    angle = math.radians(angle_deg)
    for k in range(-length, length + 1):  # kernel of <= 2*length+1 taps, not per pixel
        r = int(round(length + k * math.sin(angle)))
        c = int(round(length + k * math.cos(angle)))
        kernel[r, c] = 1.0
    kernel /= kernel.sum() / 3.0
    return cv2.filter2D(drops, -1, kernel, borderType=cv2.BORDER_CONSTANT)

