"""Geometry with known answers: shifts, round trips, a rendered plane, pose inversion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depth_perception_training import geometry
from depth_perception.camera import Intrinsics

H, W = 24, 32
FX, FY, CX, CY = 50.0, 48.0, 15.3, 11.7


def _K(batch: int = 1) -> torch.Tensor:
    K = torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1]], dtype=torch.float64)
    return K.expand(batch, 3, 3).clone()


def _T(R=None, t=(0.0, 0.0, 0.0), batch: int = 1) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64)
    if R is not None:
        T[:3, :3] = torch.as_tensor(R, dtype=torch.float64)
    T[:3, 3] = torch.as_tensor(t, dtype=torch.float64)
    return T.expand(batch, 4, 4).clone()


def _to_pixels(pix: torch.Tensor, h: int = H, w: int = W) -> torch.Tensor:
    """[B,H,W,2] normalised -> pixel coordinates (align_corners=True convention)."""
    return torch.stack([(pix[..., 0] + 1) / 2 * (w - 1), (pix[..., 1] + 1) / 2 * (h - 1)], -1)


def test_backproject_matches_camera_module():
    depth = torch.rand(1, 1, H, W, dtype=torch.float64) * 10 + 1
    pts = geometry.backproject(depth, torch.linalg.inv(_K()))            # [1,3,H,W]
    ref = Intrinsics(FX, FY, CX, CY, W, H).backproject(depth[0, 0].numpy())  # [H,W,3]
    np.testing.assert_allclose(pts[0].permute(1, 2, 0).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_identity_round_trip_returns_every_pixel():
    torch.manual_seed(0)
    B = 3
    depth = torch.rand(B, 1, H, W, dtype=torch.float64) * 50 + 0.5
    K = _K(B)
    K[1, 0, 2] = 3.0  # per-sample intrinsics
    K[2, 1, 1] = 80.0
    pts = geometry.backproject(depth, torch.linalg.inv(K))
    pix = _to_pixels(geometry.project(pts, K, _T(batch=B)))
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                          torch.arange(W, dtype=torch.float64), indexing="ij")
    assert pix.shape == (B, H, W, 2)
    assert (pix[..., 0] - u).abs().max() < 1e-4
    assert (pix[..., 1] - v).abs().max() < 1e-4
    # the flat [B,3,N] layout gives the same answer
    pix_flat = _to_pixels(geometry.project(pts.flatten(2), K, None, height=H, width=W))
    assert torch.allclose(pix, pix_flat)


def test_sideways_translation_shifts_plane_by_f_t_over_z():
    # The source camera sits tx metres to the RIGHT of the target camera (optical x right).
    # Points are then seen further LEFT in the source: u_src = u_tgt - fx * tx / Z.
    Z, tx = 5.0, 0.5
    depth = torch.full((1, 1, H, W), Z, dtype=torch.float64)
    T_src_tgt = _T(t=(-tx, 0.0, 0.0))  # X_src = X_tgt - C_src, C_src = (tx, 0, 0)
    pts = geometry.backproject(depth, torch.linalg.inv(_K()))
    pix = _to_pixels(geometry.project(pts, _K(), T_src_tgt))
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                          torch.arange(W, dtype=torch.float64), indexing="ij")
    shift = FX * tx / Z  # 5 px
    assert shift == pytest.approx(5.0)
    assert torch.allclose(pix[0, ..., 0], u - shift, atol=1e-6)
    assert torch.allclose(pix[0, ..., 1], v, atol=1e-6)


def test_warp_of_shifted_image_and_valid_mask():
    # Source image = target content seen 5 px further left; warping must undo it.
    Z, tx = 5.0, 0.5
    g = torch.Generator().manual_seed(1)
    tgt = torch.rand(1, 3, H, W, generator=g, dtype=torch.float64)
    src = torch.zeros_like(tgt)
    src[..., : W - 5] = tgt[..., 5:]  # u_src = u_tgt - 5
    depth = torch.full((1, 1, H, W), Z, dtype=torch.float64)
    warped, valid = geometry.warp(src, depth, _K(), _T(t=(-tx, 0.0, 0.0)))
    assert warped.shape == tgt.shape and valid.shape == (1, 1, H, W)
    # target columns u >= 5 land inside the source; columns 0..4 land left of it
    assert torch.all(valid[..., 5:] == 1) and torch.all(valid[..., :5] == 0)
    assert torch.allclose(warped[..., 5:], tgt[..., 5:], atol=1e-6)
    # the wrong sign of the translation does not reproduce the target
    warped_bad, _ = geometry.warp(src, depth, _K(), _T(t=(tx, 0.0, 0.0)))
    assert (warped_bad[..., 5:-5] - tgt[..., 5:-5]).abs().mean() > 0.1


def test_points_behind_source_camera_are_invalid():
    depth = torch.full((1, 1, H, W), 2.0, dtype=torch.float64)
    src = torch.rand(1, 1, H, W, dtype=torch.float64)
    _, valid = geometry.warp(src, depth, _K(), _T(t=(0.0, 0.0, -3.0)))
    assert valid.sum() == 0


def _texture(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Smooth colour texture on the plane (metres) -> [...,3] in [0,1]."""
    return np.stack([0.5 + 0.4 * np.sin(3.0 * X + 1.0) * np.cos(2.0 * Y),
                     0.5 + 0.4 * np.cos(2.5 * X - 2.0 * Y),
                     0.5 + 0.3 * np.sin(1.7 * Y + 0.5)], -1)


def test_known_warp_of_textured_plane_reproduces_target():
    """Render a fronto-parallel textured plane from two poses; warping recovers the target."""
    Z0 = 4.0
    K = _K()[0].numpy()
    ang = math.radians(3.0)  # yaw about the camera y axis plus a translation
    R = np.array([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    t = np.array([0.3, -0.1, 0.4])
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], -1)  # [H,W,3]
    # target image: texture at the plane point of each target pixel
    tgt = _texture(rays[..., 0] * Z0, rays[..., 1] * Z0)
    # source image: intersect each source ray with the plane Z = Z0 of the target frame
    origin = -R.T @ t                                   # source centre in the target frame
    dirs = rays @ R                                     # R^T d for each ray
    lam = (Z0 - origin[2]) / dirs[..., 2]
    P = origin + lam[..., None] * dirs
    src = _texture(P[..., 0], P[..., 1])
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    depth = torch.full((1, 1, H, W), Z0, dtype=torch.float64)
    warped, valid = geometry.warp(to_t(src), depth, _K(), _T(R, t))
    err = (warped - to_t(tgt)).abs().mean(1, keepdim=True)[valid.bool()]
    assert valid.mean() > 0.6
    assert err.max() < 0.01 and err.mean() < 0.003
    # the inverse pose (a typical convention slip) does not
    warped_bad, valid_bad = geometry.warp(to_t(src), depth, _K(), geometry.invert_pose(_T(R, t)))
    assert (warped_bad - to_t(tgt)).abs().mean(1, keepdim=True)[valid_bad.bool()].mean() > 0.05


def test_axis_angle_known_rotations():
    R = geometry.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))
    assert torch.allclose(R[0] @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1.0, 0], dtype=torch.float64), atol=1e-12)
    aa = torch.randn(5, 3, dtype=torch.float64)
    R = geometry.axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(R @ aa.unsqueeze(-1), aa.unsqueeze(-1), atol=1e-12)  # axis is fixed
    zero = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    R0 = geometry.axis_angle_to_matrix(zero)
    assert torch.equal(R0.detach(), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    R0.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_pose_inversion_rule():
    torch.manual_seed(3)
    aa = torch.randn(4, 1, 3, dtype=torch.float64) * 0.2
    t = torch.randn(4, 1, 3, dtype=torch.float64)
    M = geometry.pose_vec_to_matrix(aa, t, invert=False)
    M_inv = geometry.pose_vec_to_matrix(aa, t, invert=True)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    assert torch.allclose(M @ M_inv, eye, atol=1e-12)
    assert torch.allclose(M_inv @ M, eye, atol=1e-12)
    assert torch.allclose(M_inv, torch.linalg.inv(M), atol=1e-12)
    # non-inverted: X' = R X + t
    assert torch.allclose(M[:, :3, 3], t[:, 0])
    assert torch.allclose(M[:, :3, :3], geometry.axis_angle_to_matrix(aa[:, 0]))
    # [B,3] inputs are accepted too
    assert torch.allclose(geometry.pose_vec_to_matrix(aa[:, 0], t[:, 0]), M)


def test_ordered_pair_gives_T_src_tgt():
    """A pose net that outputs the true T_later_earlier yields T_src_tgt for both offsets."""
    tgt, src = torch.zeros(1), torch.ones(1)
    aa = torch.tensor([[0.0, 0.05, 0.0]], dtype=torch.float64)
    tr = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)
    T_later_earlier = geometry.pose_vec_to_matrix(aa, tr)
    # offset -1: source is earlier -> want T_src_tgt = T_earlier_later = inv(T_later_earlier)
    a, b, invert = geometry.ordered_pair(tgt, src, -1)
    assert a is src and b is tgt and invert
    assert torch.allclose(geometry.pose_vec_to_matrix(aa, tr, invert), torch.linalg.inv(T_later_earlier))
    # offset +1: source is later -> T_src_tgt = T_later_earlier as is
    a, b, invert = geometry.ordered_pair(tgt, src, 1)
    assert a is tgt and b is src and not invert
    with pytest.raises(ValueError):
        geometry.ordered_pair(tgt, src, 0)


def test_disp_to_depth_range_and_inverse():
    disp = torch.tensor([0.0, 0.5, 1.0])
    scaled, depth = geometry.disp_to_depth(disp, 0.1, 80.0)
    assert depth[0].item() == pytest.approx(80.0) and depth[2].item() == pytest.approx(0.1)
    assert scaled[1].item() == pytest.approx(1 / 80 + 0.5 * (10 - 1 / 80))
    assert torch.allclose(geometry.depth_to_disp(depth, 0.1, 80.0), disp, atol=1e-6)
    with pytest.raises(ValueError):
        geometry.disp_to_depth(disp, 1.0, 0.5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        geometry.backproject(torch.ones(1, H, W), torch.eye(3)[None])
    with pytest.raises(ValueError, match="height and width"):
        geometry.project(torch.ones(1, 3, 10), torch.eye(3)[None])
    with pytest.raises(ValueError, match="K must be"):
        geometry.project(torch.ones(1, 3, 2, 5), torch.eye(2)[None])
