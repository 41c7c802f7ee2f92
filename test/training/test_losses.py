"""Losses with numbers worked by hand."""
from __future__ import annotations

import math

import pytest
import torch

from depth_perception_training import geometry
from depth_perception_training import losses


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_ssim_identical_images():
    img = _rand(2, 3, 16, 20)
    for window in (3, 7):
        ssim = losses.SSIM(window)
        assert torch.allclose(ssim(img, img), torch.ones_like(img), atol=1e-12)
        assert ssim.dissimilarity(img, img).abs().max() < 1e-12
    assert losses.photometric_error(img, img).abs().max() < 1e-12
    with pytest.raises(ValueError):
        losses.SSIM(4)


@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_box_mean_is_avg_pool2d_bit_for_bit(window, dtype, threads):
    """The SSIM's fast window mean gives avg_pool2d's forward and backward exactly (the
    training results of every recipe stay what they were), on a padded odd-sized batch."""
    import torch.nn.functional as F

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = _rand(3, 3, 37, 53, seed=window).to(dtype) * 3 - 1
        grad = _rand(3, 3, 37 - window + 1, 53 - window + 1, seed=7).to(dtype)
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        ref = F.avg_pool2d(a, window, stride=1)
        out = losses.box_mean(b, window)
        assert torch.equal(out, ref)
        ref.backward(grad)
        out.backward(grad)
        assert torch.equal(b.grad, a.grad)
    finally:
        torch.set_num_threads(before)


def test_ssim_with_cached_target_statistics_is_the_same():
    ssim = losses.SSIM()
    x, y = _rand(2, 3, 16, 20, seed=1).float(), _rand(2, 3, 16, 20, seed=2).float()
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    plain = losses.photometric_error(a, y, ssim=ssim)
    cached = losses.photometric_error(b, y, ssim=ssim, target_stats=ssim.stats(y))
    assert torch.equal(plain, cached)
    plain.sum().backward()
    cached.sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_constant_images_by_hand():
    # Constant images a=0.5, b=0.6: all variances are 0, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) = 0.6001 / 0.6101; L1 = 0.1 exactly.
    a = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    b = torch.full((1, 3, 8, 8), 0.6, dtype=torch.float64)
    ssim_val = 0.6001 / 0.6101
    assert torch.allclose(losses.SSIM()(a, b), torch.full_like(a, ssim_val), atol=1e-12)
    pe = losses.photometric_error(a, b)
    assert pe.shape == (1, 1, 8, 8)
    expected = 0.85 * (1 - ssim_val) / 2 + 0.15 * 0.1
    assert torch.allclose(pe, torch.full_like(pe, expected), atol=1e-12)
    # L1 part alone (alpha = 0) is exact on a constant offset of a textured image
    img = _rand(1, 3, 8, 8) * 0.5
    pe_l1 = losses.photometric_error(img + 0.1, img, alpha=0.0)
    assert torch.allclose(pe_l1, torch.full_like(pe_l1, 0.1), atol=1e-12)


def test_min_reprojection_by_hand():
    w = [torch.tensor([0.2, 0.5, 0.3]).view(1, 1, 1, 3), torch.tensor([0.4, 0.6, 0.05]).view(1, 1, 1, 3)]
    i = [torch.tensor([0.3, 0.1, 0.2]).view(1, 1, 1, 3), torch.tensor([0.9, 0.9, 0.9]).view(1, 1, 1, 3)]
    loss, mask = losses.min_reprojection(w, i)
    assert torch.allclose(loss.flatten(), torch.tensor([0.2, 0.1 + 1e-5, 0.05]))
    assert mask.flatten().tolist() == [1.0, 0.0, 1.0]
    loss_nomask, mask_all = losses.min_reprojection(w, i, automask=False)
    assert torch.allclose(loss_nomask.flatten(), torch.tensor([0.2, 0.5, 0.05]))
    assert mask_all.min() == 1
    # an exact tie goes to the warped source with the deterministic tie-break
    _, mask_tie = losses.min_reprojection([torch.zeros(1, 1, 2, 2)], [torch.zeros(1, 1, 2, 2)])
    assert mask_tie.min() == 1
    # random tie-break with a passed generator is reproducible
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    l1, m1 = losses.min_reprojection(w, i, generator=g1)
    l2, m2 = losses.min_reprojection(w, i, generator=g2)
    assert torch.equal(l1, l2) and torch.equal(m1, m2)


def test_automask_masks_a_static_pair_entirely():
    # Static camera: the context frame equals the target. Any non-zero predicted motion
    # warps worse than doing nothing, so every pixel is auto-masked.
    H, W = 24, 32
    tgt = _rand(2, 3, H, W, seed=3)
    src = tgt.clone()
    K = torch.tensor([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    T = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    T[:, 0, 3] = 0.3  # predicted sideways motion
    depth = torch.full((2, 1, H, W), 3.0, dtype=torch.float64)
    warped, _ = geometry.warp(src, depth, K, T)
    err_w = losses.photometric_error(warped, tgt)
    err_i = losses.photometric_error(src, tgt)
    loss, mask = losses.min_reprojection([err_w], [err_i])
    assert mask.sum() == 0
    assert torch.allclose(loss, torch.full_like(loss, 1e-5))


def test_smoothness_by_hand():
    img = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    const = torch.full((1, 1, 2, 2), 7.0, dtype=torch.float64)
    assert losses.edge_aware_smoothness(const, img) == 0
    # disparity columns [1, 3]: mean 2, normalised [0.5, 1.5], |dx| = 1, |dy| = 0
    ramp = torch.tensor([[1.0, 3.0], [1.0, 3.0]], dtype=torch.float64).view(1, 1, 2, 2)
    assert losses.edge_aware_smoothness(ramp, img).item() == pytest.approx(1.0)
    # an image edge at the same place (|dx I| = 1 in every channel) weights it by exp(-1)
    edge = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    assert losses.edge_aware_smoothness(ramp, edge).item() == pytest.approx(math.exp(-1))
    # scale invariance of the mean normalisation
    assert losses.edge_aware_smoothness(ramp * 10, edge).item() == pytest.approx(math.exp(-1))


def test_velocity_loss_zero_and_gradient_sign():
    t = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]], requires_grad=True)  # norms 5, 2
    assert losses.velocity_loss(t, torch.tensor([[5.0, 2.0]])).item() == pytest.approx(0.0)
    # too long (5 > 4) and too short (2 < 3): mean(|5-4|, |2-3|) = 1
    loss = losses.velocity_loss(t, torch.tensor([[4.0, 3.0]]))
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    # d/dt = sign(||t|| - d) * t/||t|| / n
    assert torch.allclose(t.grad[0, 0], torch.tensor([0.6, 0.8, 0.0]) / 2)
    assert torch.allclose(t.grad[0, 1], torch.tensor([0.0, 0.0, -1.0]) / 2)
    # gradient descent moves the norms toward the odometry distances
    with torch.no_grad():
        t2 = t - 0.1 * t.grad
    n2 = t2.norm(dim=-1)[0]
    assert n2[0] < 5 and n2[1] > 2
    # list input and NaN distances (ignored)
    lst = [torch.tensor([[3.0, 4.0, 0.0]]), torch.tensor([[0.0, 0.0, 2.0]])]
    assert losses.velocity_loss(lst, torch.tensor([[4.0, float("nan")]])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        losses.velocity_loss(lst, torch.tensor([[float("nan"), float("nan")]]))


def test_distillation_and_semantic_losses():
    d = _rand(2, 1, 8, 8) + 0.1
    assert losses.abs_rel_distillation(d, d.clone()).item() == 0.0
    assert losses.abs_rel_distillation(torch.full((1, 1, 2, 2), 2.0),
                                       torch.full((1, 1, 2, 2), 1.0)).item() == pytest.approx(0.5)
    f = torch.randn(2, 10, 16)
    assert losses.semantic_cosine_loss(f, f * 3).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.semantic_cosine_loss(f, -f).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError):
        losses.semantic_cosine_loss(f, f[:, :5])


def _plane_scene(B=2, H=24, W=32, Z=4.0, tx=0.4):
    """Target/context images of a textured fronto-parallel plane and the true poses."""
    K = torch.tensor([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]]).expand(B, 3, 3)
    # texture drawn on a wider canvas so every view is covered
    u = torch.arange(-40, W + 40, dtype=torch.float32)
    canvas = 0.5 + 0.3 * torch.sin(u / 2.3)[None, None, :] * torch.ones(1, H, 1)
    canvas = torch.cat([canvas, 0.5 + 0.3 * torch.cos(u / 3.1)[None, None, :].expand(1, H, -1),
                        canvas], 0)
    shift = int(round(30.0 * tx / Z))  # 3 px
    tgt = canvas[:, :, 40:40 + W]
    prev = canvas[:, :, 40 - shift:40 - shift + W]   # camera moved left: content shifts right
    nxt = canvas[:, :, 40 + shift:40 + shift + W]    # camera moved right: content shifts left
    T = torch.eye(4).repeat(B, 2, 1, 1)
    T[:, 0, 0, 3] = tx      # offset -1: source camera at x = -tx
    T[:, 1, 0, 3] = -tx     # offset +1: source camera at x = +tx
    batch = {"image": tgt.expand(B, -1, -1, -1), "context": torch.stack([prev, nxt], 0).expand(B, -1, -1, -1, -1),
             "K": K, "distance": torch.full((B, 2), tx)}
    return batch, T, torch.full((B, 1, H, W), Z)


def test_self_supervised_loss_prefers_the_truth():
    batch, T, depth = _plane_scene()
    loss_fn = losses.SelfSupervisedLoss()
    disp = 1.0 / depth
    total, terms = loss_fn({"depth": [depth, depth[..., ::2, ::2]], "disp": [disp, disp[..., ::2, ::2]],
                            "T_src_tgt": T}, batch)
    assert set(terms) >= {"photometric", "smoothness", "velocity", "automask_fraction", "total"}
    assert terms["velocity"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["smoothness"].item() == pytest.approx(0.0, abs=1e-9)
    T_bad = T.clone()
    T_bad[..., 0, 3] *= -1  # wrong translation sign
    total_bad, terms_bad = loss_fn({"depth": [depth], "disp": [disp], "T_src_tgt": T_bad}, batch)
    assert terms["photometric"] < 0.2 * terms_bad["photometric"]
    assert total < total_bad
    # gradients reach depth and pose
    d = depth.clone().requires_grad_(True)
    Tg = T.clone().requires_grad_(True)
    total, _ = loss_fn({"depth": [d * 1.2], "disp": [1 / (d * 1.2)], "T_src_tgt": Tg}, batch)
    total.backward()
    assert d.grad.abs().sum() > 0 and Tg.grad.abs().sum() > 0


def test_self_supervised_loss_bad_inputs():
    batch, T, depth = _plane_scene()
    loss_fn = losses.SelfSupervisedLoss()
    with pytest.raises(ValueError, match="T_src_tgt"):
        loss_fn({"depth": [depth], "T_src_tgt": T[:, :1]}, batch)
    del batch["distance"]
    with pytest.raises(ValueError, match="distance"):
        loss_fn({"depth": [depth], "T_src_tgt": T}, batch)
