"""Blinn-Phong re-lighting of an image by the normals of its predicted depth (Eq. 4).

I_hat = tau(beta1 max(N.l, 0) * tau^-1(I) + beta2 max(N.h, 0)^alpha), clamped to
[1e-3, 1], with tau(x) = x^(1/gamma) (gamma 2.2): the input, made linear, is the albedo,
the specular highlight is colourless, and shading happens in linear RGB. l is the
direction towards the light, v = (0, 0, 1) the direction towards the viewer and
h = normalize(l + v), all in the OpenGL camera frame of :mod:`.normals`.

Per optimisation step :func:`sample_lighting` draws l = normalize(U(-1,1), U(-1,1), 1),
(beta1, beta2) ~ U(0,1) normalised to sum 1 and alpha = 2^k with k ~ U{2..8}.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Lighting", "sample_lighting", "relight", "gamma_to_linear", "linear_to_gamma"]

VIEW = (0.0, 0.0, 1.0)


@dataclass
class Lighting:
    """One light and material: direction towards the light [3] (unit), weights, exponent."""

    direction: torch.Tensor
    diffuse: float
    specular: float
    shininess: float

    @property
    def halfway(self) -> torch.Tensor:
        """h = normalize(l + v) [3]."""
        v = torch.tensor(VIEW, dtype=self.direction.dtype, device=self.direction.device)
        h = self.direction + v
        return h / torch.linalg.vector_norm(h).clamp_min(1e-8)


def sample_lighting(generator: torch.Generator | None = None, light_range: float = 1.0,
                    shininess_exponents: tuple[int, int] = (2, 8),
                    dtype=torch.float32) -> Lighting:
    """Random light and material as in Re-Depth Anything (see the module doc).

    ``shininess_exponents`` (k_min, k_max) are inclusive.
    """
    xy = (torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 1) * light_range
    l = torch.cat([xy, torch.ones(1, dtype=torch.float64)])
    l = (l / torch.linalg.vector_norm(l)).to(dtype)
    beta = torch.rand(2, generator=generator, dtype=torch.float64)
    beta = beta / beta.sum().clamp_min(1e-12)
    k_lo, k_hi = shininess_exponents
    k = int(torch.randint(k_lo, k_hi + 1, (1,), generator=generator))
    return Lighting(direction=l, diffuse=float(beta[0]), specular=float(beta[1]),
                    shininess=float(2 ** k))


def gamma_to_linear(image: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """tau^-1: x^gamma (image in [0,1]); a plain power law, not the exact sRGB curve of
    :func:`depth_perception_training.translate.photometric.srgb_to_linear`."""
    return image.clamp_min(0.0) ** gamma


def linear_to_gamma(image: torch.Tensor, gamma: float = 2.2, floor: float = 1e-8) -> torch.Tensor:
    """tau: x^(1/gamma); ``floor`` keeps the gradient finite at 0."""
    return image.clamp_min(floor) ** (1.0 / gamma)


def relight(image: torch.Tensor, normals: torch.Tensor, lighting: Lighting,
            gamma: float = 2.2, clamp: tuple[float, float] = (1e-3, 1.0)) -> torch.Tensor:
    """Eq. 4. image [B,3,H,W] in [0,1], normals [B,3,H,W] unit -> re-lit image [B,3,H,W].

    Differentiable in ``normals``; values in ``clamp`` (default [1e-3, 1]).
    """
    if image.shape[0] != normals.shape[0] or image.shape[-2:] != normals.shape[-2:]:
        raise ValueError(f"relight: image {tuple(image.shape)} and normals "
                         f"{tuple(normals.shape)} differ in batch or size")
    l = lighting.direction.to(normals).view(1, 3, 1, 1)
    h = lighting.halfway.to(normals).view(1, 3, 1, 1)
    diffuse = (normals * l).sum(1, keepdim=True).clamp_min(0.0)                    # [B,1,H,W]
    specular = (normals * h).sum(1, keepdim=True).clamp_min(0.0) ** lighting.shininess
    linear = lighting.diffuse * diffuse * gamma_to_linear(image, gamma) + lighting.specular * specular
    return linear_to_gamma(linear, gamma).clamp(*clamp)
