"""Photometric and flip augmentation (numpy), seeded by a passed generator, no I/O.

Defaults follow monodepth2 / md4all: colour jitter with brightness, contrast and
saturation factors in [1-0.2, 1+0.2] and a hue shift in [-0.1, 0.1] (fraction of the
hue circle) in random order, with probability 0.5; Gaussian noise with sigma drawn from
[0.005, 0.05], probability 0.5; horizontal flip with probability 0.5.

:meth:`Augmenter.sample` draws the parameters for one sample so the same jitter can be
applied to the target and to its context frames; the geometric side of a flip
(intrinsics, poses) is handled by the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.5
    noise_sigma: tuple = (0.005, 0.05)
    noise_p: float = 0.5
    flip_p: float = 0.5

    def __post_init__(self):
        for name in ("jitter_p", "noise_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentConfig.hue must be in [0, 0.5], got {self.hue}")
        lo, hi = self.noise_sigma
        if not 0.0 <= lo <= hi:
            raise ValueError(f"AugmentConfig.noise_sigma must be (lo, hi) with 0 <= lo <= hi, "
                             f"got {self.noise_sigma}")


@dataclass(frozen=True)
class AugmentParams:
    """What happens to one sample."""

    flip: bool = False
    jitter: tuple = ()            # ((op, factor), ...) in application order
    noise_sigma: float = 0.0      # 0: no noise

    @property
    def identity_colour(self) -> bool:
        return not self.jitter and self.noise_sigma == 0.0


def _gray(img: np.ndarray) -> np.ndarray:
    """[H,W,3] float RGB -> [H,W,1] luma (ITU-R 601, as torchvision)."""
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])[..., None]


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(img * factor, 0.0, 1.0)


def adjust_contrast(img: np.ndarray, factor: float) -> np.ndarray:
    mean = _gray(img).mean()
    return np.clip((img - mean) * factor + mean, 0.0, 1.0)


def adjust_saturation(img: np.ndarray, factor: float) -> np.ndarray:
    gray = _gray(img)
    return np.clip((img - gray) * factor + gray, 0.0, 1.0)


def adjust_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` of a full turn (OpenCV float HSV: H in degrees)."""
    import cv2

    hsv = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)


_OPS = {"brightness": adjust_brightness, "contrast": adjust_contrast,
        "saturation": adjust_saturation, "hue": adjust_hue}


class Augmenter:
    """Draws :class:`AugmentParams` and applies their colour part to float images."""

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()

    def sample(self, rng: np.random.Generator) -> AugmentParams:
        cfg = self.config
        flip = bool(rng.random() < cfg.flip_p)
        jitter = ()
        if rng.random() < cfg.jitter_p:
            ops = []
            for name in rng.permutation(["brightness", "contrast", "saturation", "hue"]):
                amount = getattr(cfg, str(name))
                if amount <= 0:
                    continue
                if name == "hue":
                    ops.append(("hue", float(rng.uniform(-amount, amount))))
                else:
                    ops.append((str(name), float(rng.uniform(max(0.0, 1 - amount), 1 + amount))))
            jitter = tuple(ops)
        sigma = 0.0
        if rng.random() < cfg.noise_p:
            sigma = float(rng.uniform(*cfg.noise_sigma))
        return AugmentParams(flip=flip, jitter=jitter, noise_sigma=sigma)

    @staticmethod
    def apply_colour(img: np.ndarray, params: AugmentParams,
                     rng: np.random.Generator) -> np.ndarray:
        """[H,W,3] float32 RGB in [0,1] -> jittered (+ noise) copy, clipped to [0,1]."""
        out = np.asarray(img, dtype=np.float32)
        for name, value in params.jitter:
            out = _OPS[name](out, value)
        if params.noise_sigma > 0:
            out = np.clip(out + rng.normal(0.0, params.noise_sigma, out.shape), 0.0, 1.0)
        return out.astype(np.float32, copy=False)
