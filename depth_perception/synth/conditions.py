"""Weather and lighting conditions: one shader per condition over shared geometry.

Conditions share geometry and trajectory and differ only in shading:

* ``day-clear``: sun + sky, no noise (photometrically consistent between frames);
* ``night``: dark ambient, headlight cones from the vehicle, street-light pools under
  the lamps, lit windows, sensor gain noise, dark sky;
* ``rain``: overcast light, darker wet road with sky reflections in puddles, fog
  (contrast loss), rain streaks, slight blur;
* ``snow``: overcast, white ground cover away from the wheel tracks, falling flakes.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from depth_perception.synth.layout import GROUND, SKY
from depth_perception.synth.materials import smoothstep, value_noise
from depth_perception.synth.shading import (fog, lambert, point_light, sky_radiance,
                                            streaks)

if TYPE_CHECKING:
    from depth_perception.synth.street import CameraGeometry, SyntheticStreet

CONDITIONS = ("day-clear", "night", "rain", "snow")


def _condition_rng(street: SyntheticStreet, frame: int, condition: str):
    return np.random.default_rng([street.config.seed & 0xFFFFFFFF, frame,
                                  CONDITIONS.index(condition)])


def shade(street: SyntheticStreet, geom: CameraGeometry, condition: str) -> np.ndarray:
    """Shade precomputed camera geometry for one condition -> [H,W,3] uint8 RGB."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    rng = _condition_rng(street, geom.frame, condition)
    shader = {"day-clear": _shade_day, "night": _shade_night, "rain": _shade_rain,
              "snow": _shade_snow}[condition]
    img = shader(street, geom, rng)  # [H,W,3] linear radiance
    # Display transform: linear -> sRGB-like gamma, 8 bit.
    img = np.clip(img, 0.0, 1.0) ** (1.0 / 2.2)
    return np.round(img * 255.0).astype(np.uint8)



def _shade_day(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    """Lambertian under sky ambient + sun; no noise (photometrically consistent)."""
    K = street.intrinsics
    sky = geom.hits.obj == SKY
    out = lambert(geom, (0.33, 0.36, 0.42), (1.0, 0.95, 0.85))
    out[sky] = sky_radiance(geom.dirs[sky], np.array([0.18, 0.32, 0.65]), np.array([0.62, 0.70, 0.80]))
    return geom.assemble(out, K.height, K.width)


def _shade_night(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    import cv2

    K = street.intrinsics
    hits, surf = geom.hits, geom.surface
    sky = hits.obj == SKY
    solid_idx = np.nonzero(~sky)[0]
    points, normals = hits.point[solid_idx], geom.normals[solid_idx]
    # 1. Dim moonlight.
    irradiance = np.repeat(np.array([[0.002, 0.0025, 0.004]]), len(hits.t), axis=0)
    lit = np.zeros((len(solid_idx), 3))
    # 2. Headlights: two cones forward from the vehicle front.
    T_base = geom.T_odom_base
    forward = T_base[:3, :3] @ np.array([1.0, 0.0, -0.04])
    forward /= np.linalg.norm(forward)
    head = np.array([0.95, 0.95, 0.90]) * 14.0
    for y_off in (-0.75, 0.75):
        pos = T_base[:3, :3] @ np.array([3.7, y_off, 0.65]) + T_base[:3, 3]
        e = point_light(points, normals, pos, forward,
                         cos_inner=math.cos(math.radians(12.0)),
                         cos_outer=math.cos(math.radians(30.0)))
        lit += e[:, None] * head[None, :]
    # 3. Street lights: sodium-like pools under each lamp head (a lamp 6.7 m up with
    #    a 70 deg cone lights a pool of radius < 20 m).
    lamp_colour = np.array([1.0, 0.78, 0.45]) * 40.0
    down = np.array([0.0, 0.0, -1.0])
    cam_x = geom.T_odom_camera[0, 3]
    lamps = street.scene.lamps
    ahead = np.nonzero((lamps[:, 0] > cam_x - 25.0) & (lamps[:, 0] < cam_x + 150.0))[0]
    for j in ahead:
        pool = np.nonzero(np.abs(points[:, 0] - lamps[j, 0]) < 20.0)[0]
        e = point_light(points[pool], normals[pool], lamps[j], down,
                         cos_inner=math.cos(math.radians(35.0)),
                         cos_outer=math.cos(math.radians(70.0)))
        lit[pool] += e[:, None] * lamp_colour[None, :]
    irradiance[solid_idx] += lit
    # 4. Emitters (lit windows, lamp heads, oncoming headlights) and a dark sky.
    out = surf.albedo * irradiance + surf.night_emission
    out[sky] = sky_radiance(geom.dirs[sky], np.array([0.0015, 0.0018, 0.0035]),
                    np.array([0.010, 0.008, 0.006]))
    img = geom.assemble(out, K.height, K.width)
    # 5. Sensor: glow around bright lights, high gain -> shot + read noise.
    glow = cv2.GaussianBlur(np.clip(img - 0.8, 0.0, None).astype(np.float32), (0, 0), 3.0)
    img = (img + 0.5 * glow) * 1.5
    noise_sigma = np.sqrt(0.0004 * np.clip(img, 0.0, None) + 0.004 ** 2)
    return img + noise_sigma * rng.standard_normal(img.shape)


def _shade_rain(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    import cv2

    K = street.intrinsics
    hits, surf = geom.hits, geom.surface
    sky = hits.obj == SKY
    sky_top, sky_horizon = np.array([0.35, 0.37, 0.40]), np.array([0.50, 0.52, 0.55])
    # 1. Overcast light; wet surfaces are darker.
    wet_albedo = surf.albedo * (1.0 - 0.45 * surf.wetness)[:, None]
    out = lambert(geom, (0.55, 0.57, 0.60), (0.15, 0.15, 0.15), wet_albedo)
    # 2. Puddles and wet asphalt mirror the overcast sky (Schlick Fresnel).
    ground = np.nonzero(hits.obj == GROUND)[0]
    d = geom.dirs[ground]
    cos_i = np.abs(d[:, 2]) / np.linalg.norm(d, axis=1)  # ground normal is +z
    fresnel = 0.04 + 0.96 * (1.0 - cos_i) ** 5
    puddle = smoothstep(0.55, 0.7, value_noise(hits.point[ground, 0], hits.point[ground, 1],
                                                2.5, street.scene.seed * 31 + 9))
    reflect = (surf.wetness[ground] * (0.3 + 0.7 * puddle) * fresnel)[:, None]
    out[ground] = out[ground] * (1.0 - reflect) + reflect * sky_horizon[None, :]
    out[sky] = sky_radiance(geom.dirs[sky], sky_top, sky_horizon)
    # 3. Fog: contrast falls with distance.
    out = fog(geom, out, sky_horizon, visibility=70.0)
    img = geom.assemble(out, K.height, K.width)
    # 4. Streaks: sparse drops smeared along the fall direction; lens blur, flare, noise.
    img = img + 0.35 * streaks(rng, K.height, K.width, density=1.0 / 120.0,
                                length=max(5, K.height // 12), angle_deg=75.0)[..., None]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8).astype(np.float64)
    img = 0.85 * img + 0.15 * img.mean()
    return img + 0.006 * rng.standard_normal(img.shape)


def _shade_snow(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    K = street.intrinsics
    sky = geom.hits.obj == SKY
    horizon = np.array([0.70, 0.72, 0.75])
    # 1. Snow cover on the ground (not in the wheel tracks) and on tops; overcast light.
    snow = geom.surface.snow_cover[:, None]
    snowy = geom.surface.albedo * (1.0 - snow) + 0.85 * snow
    out = lambert(geom, (0.60, 0.62, 0.66), (0.2, 0.2, 0.2), snowy)
    out[sky] = sky_radiance(geom.dirs[sky], np.array([0.55, 0.57, 0.60]), horizon)
    # 2. Haze and falling flakes.
    out = fog(geom, out, horizon, visibility=90.0)
    img = geom.assemble(out, K.height, K.width)
    img = img + 0.6 * streaks(rng, K.height, K.width, density=1.0 / 300.0, length=3,
                               angle_deg=80.0)[..., None]
    return img + 0.006 * rng.standard_normal(img.shape)


