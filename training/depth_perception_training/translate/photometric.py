"""Classical night / rain / snow synthesis: the GPU-free baseline translator.

Every function maps a [H,W,3] uint8 RGB frame to another of the same size (so the
camera's K and the frame's depth still hold) and draws its randomness from the
``numpy.random.Generator`` it is given (same seed, same image). Intensities are
handled in linear light (sRGB decoded) where physics is additive: exposure, glare,
sensor noise. Lengths in the configuration are in pixels at 640 px width and scale
with the frame.
"""
from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """[H,W] Rec. 601 luma in [0, 1] of a uint8 RGB image."""
    return (rgb.astype(np.float64) / 255.0) @ np.array([0.299, 0.587, 0.114])


def darken_to_mean_luma(rgb: np.ndarray, target_mean: float) -> np.ndarray:
    """Scale linear intensity so the mean sRGB luma becomes about ``target_mean``; only
    ever darkens (SD's nights come out too bright, SSD Sec. 4.1)."""
    lin = srgb_to_linear(rgb.astype(np.float64) / 255.0)
    current = float(luma(rgb).mean())
    if current <= target_mean or current <= 0:
        return rgb.copy()
    lo, hi = 0.0, 1.0
    for _ in range(30):          # bisection on the gain (luma is monotone in it)
        gain = 0.5 * (lo + hi)
        mean = float((linear_to_srgb(lin * gain) @ np.array([0.299, 0.587, 0.114])).mean())
        lo, hi = (gain, hi) if mean < target_mean else (lo, gain)
    return _to_uint8(linear_to_srgb(lin * 0.5 * (lo + hi)))


def _sensor_noise(lin: np.ndarray, rng, shot: float, read: float) -> np.ndarray:
    sigma = np.sqrt((shot ** 2) * np.clip(lin, 0, None) + read ** 2)
    return lin + sigma * rng.standard_normal(lin.shape)


def night(rgb: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """Low exposure, cooler tint, crushed shadows, point lights with glare, sensor noise."""
    import cv2

    H, W = rgb.shape[:2]
    scale = W / 640.0
    lin = srgb_to_linear(rgb.astype(np.float64) / 255.0) * cfg.night_exposure
    lin = lin * np.asarray(cfg.night_tint, dtype=np.float64)
    glare = np.zeros((H, W), dtype=np.float64)
    for _ in range(int(cfg.night_lights)):
        u, v = rng.uniform(0, W), rng.uniform(0.15 * H, 0.6 * H)
        cv2.circle(glare, (int(u), int(v)), max(int(round(1.5 * scale)), 1), 1.0, -1)
    sigma = max(cfg.glare_sigma * scale, 0.5)
    glare = cv2.GaussianBlur(glare, (0, 0), sigma) * (2 * np.pi * sigma ** 2) / 20.0
    warm = np.array([1.0, 0.85, 0.6])
    lin = lin + cfg.glare_strength * np.clip(glare, 0, 1)[..., None] * warm
    lin = _sensor_noise(lin, rng, cfg.shot_noise, cfg.read_noise)
    out = linear_to_srgb(lin) ** cfg.night_gamma
    return _to_uint8(out)


def _streaks(H: int, W: int, rng, count: int, length: float, angle_deg: float,
             thickness: int = 1) -> np.ndarray:
    import cv2

    layer = np.zeros((H, W), dtype=np.float64)
    a = np.deg2rad(angle_deg + rng.normal(0, 3, size=count))
    lengths = length * rng.uniform(0.5, 1.5, size=count)
    x0, y0 = rng.uniform(0, W, size=count), rng.uniform(-length, H, size=count)
    for x, y, ang, ln, b in zip(x0, y0, a, lengths, rng.uniform(0.4, 1.0, size=count)):
        x1, y1 = x + np.sin(ang) * ln, y + np.cos(ang) * ln
        cv2.line(layer, (int(x), int(y)), (int(x1), int(y1)), float(b), thickness,
                 lineType=cv2.LINE_AA)
    return layer


def rain(rgb: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """Grey veil, lower contrast, slight defocus, bright motion-blurred streaks, noise."""
    import cv2

    H, W = rgb.shape[:2]
    scale = W / 640.0
    x = rgb.astype(np.float64) / 255.0
    if cfg.rain_blur_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), cfg.rain_blur_sigma * max(scale, 0.25))
    veil = np.array([0.62, 0.64, 0.66])
    x = (1 - cfg.rain_haze) * x + cfg.rain_haze * veil
    count = max(int(cfg.rain_streaks * scale * (H / (0.3 * W))), 1)
    streaks = _streaks(H, W, rng, count, cfg.rain_length * scale, cfg.rain_angle_deg)
    streaks = cv2.GaussianBlur(streaks, (0, 0), 0.6)
    x = x + cfg.rain_strength * streaks[..., None] * (1.0 - x)
    lin = _sensor_noise(srgb_to_linear(np.clip(x, 0, 1)), rng, 0.5 * cfg.shot_noise,
                        0.5 * cfg.read_noise)
    return _to_uint8(linear_to_srgb(lin))


def snow(rgb: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """Bright veil and soft flakes of several sizes."""
    import cv2

    H, W = rgb.shape[:2]
    scale = W / 640.0
    x = rgb.astype(np.float64) / 255.0
    x = (1 - cfg.snow_haze) * x + cfg.snow_haze * np.array([0.85, 0.87, 0.9])
    flakes = np.zeros((H, W), dtype=np.float64)
    count = max(int(cfg.snow_flakes * scale * (H / (0.3 * W))), 1)
    for u, v, r in zip(rng.uniform(0, W, count), rng.uniform(0, H, count),
                       rng.uniform(0.6, 2.5, count) * max(scale, 0.25)):
        cv2.circle(flakes, (int(u), int(v)), max(int(round(r)), 1), 1.0, -1,
                   lineType=cv2.LINE_AA)
    flakes = cv2.GaussianBlur(flakes, (0, 0), 0.8)
    x = x + 0.8 * np.clip(flakes, 0, 1)[..., None] * (1.0 - x)
    return _to_uint8(x)


SYNTHESIS = {"night": night, "rain": rain, "snow": snow}


def synthesize(rgb: np.ndarray, condition: str, seed: int, cfg) -> np.ndarray:
    """The ``condition`` rendering of a day-clear frame (same seed, same output)."""
    if condition not in SYNTHESIS:
        raise ValueError(f"photometric translation has no '{condition}' synthesis; expected "
                         f"one of {', '.join(SYNTHESIS)}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H,W,3] uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
    return SYNTHESIS[condition](rgb, np.random.default_rng(seed), cfg)
