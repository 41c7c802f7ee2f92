"""Normals, re-lighting and the smoothness term of Re-Depth Anything against closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from depth_perception_training.refine.normals import (laplacian_smoothness, normals_from_depth,
                                                      pixel_grid)
from depth_perception_training.refine.relight import Lighting, relight, sample_lighting


def _unit(*v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def test_tilted_plane_orthographic_normal_is_constant_and_analytic():
    H, W = 30, 50
    u, v = pixel_grid(H, W, torch.float64)
    a, b, c = 0.4, -0.7, 5.0
    depth = (a * u + b * v + c)[None, None]          # z = -(a u + b v + c)
    n = normals_from_depth(depth)
    expected = _unit(a, b, 1.0)                       # gradient of z + a x + b y + c
    assert torch.allclose(n[0].permute(1, 2, 0), expected.expand(H, W, 3), atol=1e-10)


def test_fronto_parallel_plane_faces_the_camera():
    n = normals_from_depth(torch.full((1, 1, 8, 12), 3.0))
    assert torch.allclose(n[0, :, 4, 6], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


def test_tilted_plane_perspective_normal_is_analytic():
    H, W = 24, 40
    K = torch.tensor([[30.0, 0, 19.5], [0, 30.0, 11.5], [0, 0, 1]], dtype=torch.float64)
    n_cv = _unit(0.3, -0.2, -1.0)                     # OpenCV frame, facing the camera
    d = float(n_cv @ torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    rays = torch.linalg.inv(K) @ torch.stack([xs, ys, torch.ones_like(xs)]).reshape(3, -1)
    depth = (d / (n_cv @ rays)).reshape(1, 1, H, W)   # z-depth of the plane along each ray
    assert (depth > 0).all()
    n = normals_from_depth(depth, "perspective", K)
    expected = torch.stack([n_cv[0], -n_cv[1], -n_cv[2]])   # OpenCV -> OpenGL
    assert torch.allclose(n[0].permute(1, 2, 0), expected.expand(H, W, 3), atol=1e-9)


def test_sphere_orthographic_normals_are_analytic():
    H, W, r, c = 201, 201, 0.8, 4.0
    u, v = pixel_grid(H, W, torch.float64)
    inside = u ** 2 + v ** 2 < r ** 2
    cap = torch.sqrt(torch.clamp(r ** 2 - u ** 2 - v ** 2, min=0.0))
    depth = torch.where(inside, c - cap, torch.full_like(u, c))[None, None]
    n = normals_from_depth(depth)[0]
    expected = torch.stack([u, v, cap]) / r
    core = (u ** 2 + v ** 2 < (0.8 * r) ** 2)
    cos = (n * expected).sum(0)[core]
    assert math.degrees(torch.acos(cos.clamp(max=1.0)).max()) < 1.0
    # the sign convention would show up here: left half looks left, top half looks up
    assert (n[0][core & (u < -0.1)] < 0).all() and (n[1][core & (v > 0.1)] > 0).all()


def test_invalid_depth_gets_a_camera_facing_normal():
    depth = torch.full((1, 1, 5, 5), 2.0)
    depth[0, 0, 2, 2] = float("nan")
    n = normals_from_depth(depth)
    assert torch.equal(n[0, :, 2, 2], torch.tensor([0.0, 0.0, 1.0]))


def test_relight_plane_facing_the_light_matches_eq4():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 6, 9)
    normals = normals_from_depth(torch.full((1, 1, 6, 9), 2.0))
    light = Lighting(direction=torch.tensor([0.0, 0.0, 1.0]), diffuse=0.7, specular=0.3,
                     shininess=16.0)
    out = relight(image, normals, light)
    # n.l = n.h = 1: I_hat = (0.7 * I^2.2 + 0.3)^(1/2.2)
    expected = (0.7 * image ** 2.2 + 0.3) ** (1 / 2.2)
    assert torch.allclose(out, expected.clamp(1e-3, 1.0), atol=1e-6)


def test_relight_tilted_plane_by_hand():
    H, W = 6, 9
    u, v = pixel_grid(H, W)
    normals = normals_from_depth((0.5 * u + 3.0)[None, None])     # n = (0.5, 0, 1)/|.|
    l = _unit(-1.0, 0.0, 1.0).float()
    light = Lighting(direction=l, diffuse=1.0, specular=0.0, shininess=4.0)
    image = torch.full((1, 3, H, W), 0.5)
    n_dot_l = float((torch.tensor([0.5, 0.0, 1.0]) / math.sqrt(1.25)) @ l)
    expected = (n_dot_l * 0.5 ** 2.2) ** (1 / 2.2)
    assert torch.allclose(relight(image, normals, light), torch.full_like(image, expected), atol=1e-6)


def test_relight_values_stay_in_range_and_lighting_is_sampled_as_published():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 16, 20, generator=gen)
    depth = 1.0 + 5 * torch.rand(2, 1, 16, 20, generator=gen)
    normals = normals_from_depth(depth)
    for _ in range(50):
        light = sample_lighting(gen)
        assert abs(float(light.direction.norm()) - 1) < 1e-6 and light.direction[2] > 0
        assert abs(light.diffuse + light.specular - 1) < 1e-9
        assert light.shininess in [2.0 ** k for k in range(2, 9)]
        out = relight(image, normals, light)
        assert out.min() >= 1e-3 and out.max() <= 1.0


def test_laplacian_smoothness_is_the_mean_absolute_laplacian_with_zero_padding():
    """Worked by hand. The ramp d = [[0, .5, 1]] x 3 rows, 5-point Laplacian
    up + down + left + right - 4 centre, zeros outside the image:

        row 0: (0,0) .5 ; (0,1) .5+0+1-2 = -.5 ; (0,2) 1+.5+0-4 = -2.5
        row 1: (1,0) .5 ; (1,1) .5+.5+0+1-2 = 0 ; (1,2) 1+1+.5+0-4 = -1.5
        row 2: as row 0

    sum |L| = 3.5 + 2 + 3.5 = 9 over 9 pixels: 1.0. (The squared form with replicate
    padding, each row [.5, 0, -.5], would give 6 x .25 / 9 = 1/6.)"""
    d = torch.tensor([[0.0, 0.5, 1.0]] * 3)
    # per-image min-max normalisation: an affine copy of the ramp scores the same
    batch = torch.stack([2.0 + 4.0 * d, 10.0 + 0.1 * d])[:, None]        # [2,1,3,3]
    assert float(laplacian_smoothness(batch)) == pytest.approx(1.0, abs=1e-6)
    assert float(laplacian_smoothness(batch[:1])) == pytest.approx(1.0, abs=1e-6)
    # a single bump on 9x9: |-4| at the peak and 1 at its four neighbours: 8 / 81
    bump = torch.zeros(1, 1, 9, 9)
    bump[0, 0, 4, 4] = 1.0
    assert float(laplacian_smoothness(bump)) == pytest.approx(8 / 81, abs=1e-7)
    # the same bump on the border: the zero padding adds nothing (zeros outside a 0
    # border), the corner peak has 2 neighbours in the image: (4 + 2) / 81
    corner = torch.zeros(1, 1, 9, 9)
    corner[0, 0, 0, 0] = 1.0
    assert float(laplacian_smoothness(corner)) == pytest.approx(6 / 81, abs=1e-7)
    # the gradient lowers the loss of a noisy ramp
    noisy = (torch.linspace(0, 1, 32).expand(1, 1, 16, 32)
             + 0.2 * torch.rand(1, 1, 16, 32, generator=torch.Generator().manual_seed(0)))
    noisy = noisy.clone().requires_grad_(True)
    loss = laplacian_smoothness(noisy)
    loss.backward()
    with torch.no_grad():
        assert float(laplacian_smoothness(noisy - 0.01 * noisy.grad)) < float(loss)
