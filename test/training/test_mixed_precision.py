"""Mixed precision (trainer.mixed_precision=bf16|fp16): the networks may run in reduced
precision, the losses and the geometry they feed do not."""
from __future__ import annotations

import torch
import torch.nn as nn

from depth_perception_training import geometry


def test_teacher_loss_runs_in_full_precision_under_bf16_autocast():
    """Networks may run in bf16 (trainer.mixed_precision); their poses reach the warps as
    float32 and the loss is the float32 one. Depths and poses here are exact in bf16, so
    the two losses must agree to float32 rounding; with the warp's projection in bf16 a
    coordinate near u = 500 would move by up to 2 px."""
    from depth_perception_training.losses import SelfSupervisedLoss
    from depth_perception_training.train.teacher import TeacherObjective

    class HalfPose(nn.Module):
        """A pose net whose outputs come out in bf16, as under autocast: 1 m forward."""

        def forward(self, earlier, later, pairs=1):
            B = earlier.shape[0]
            return (torch.zeros(B, 1, 3, dtype=torch.bfloat16),
                    torch.tensor([0.0, 0.0, -1.0]).expand(B, 1, 3).to(torch.bfloat16))

    B, H, W = 2, 32, 576
    g = torch.Generator().manual_seed(0)
    u = torch.arange(W, dtype=torch.float32)
    image = (0.5 + 0.4 * torch.sin(u / 3.0)).expand(B, 3, H, W).clone()
    context = torch.stack([image.roll(2, -1), image.roll(-2, -1)], 1) \
        + 0.01 * torch.rand(B, 2, 3, H, W, generator=g)
    K = torch.tensor([[288.0, 0, 287.5], [0, 288.0, 15.5], [0, 0, 1]]).expand(B, 3, 3)
    batch = {"image": image, "context": context, "K": K}
    T, t = TeacherObjective(loss=None, offsets=[-1, 1]).poses(HalfPose(), image, context)
    assert T.dtype == t.dtype == torch.float32
    depth = torch.where(u < W / 2, 8.0, 16.0).expand(B, 1, H, W).clone()
    preds = {"depth": [depth], "disp": [1.0 / depth], "T_src_tgt": T}
    loss = SelfSupervisedLoss(velocity_weight=0.0)
    reference, _ = loss(preds, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = {**preds, "depth": [depth.bfloat16()], "disp": [(1.0 / depth).bfloat16()]}
        total, _ = loss(half, batch)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, reference, rtol=1e-6, atol=0.0)


def test_warp_runs_in_full_precision_under_bf16_autocast():
    # A 576-px-wide camera (SSD's loss size) moving 1 m forward past a ramp of 8-40 m
    # depth: under bf16 autocast the projection's matrix products would round the
    # coordinates to 8 mantissa bits (up to 2 px at u ~ 500). warp must give the float32
    # result, whatever the precision of the depth and pose it is given.
    h, w = 32, 576
    K = torch.tensor([[[288.0, 0, 287.5], [0, 288.0, 15.5], [0, 0, 1]]])
    T = torch.eye(4).expand(1, 4, 4).clone()
    T[0, :3, 3] = torch.tensor([0.1, 0.0, -1.0])
    depth = torch.linspace(8.0, 40.0, w).expand(1, 1, h, w).clone()
    u = torch.arange(w, dtype=torch.float32)
    src = (0.5 + 0.5 * torch.sin(u / 3.0)).expand(1, 3, h, w).clone()   # 3 px stripes
    ref, ref_valid = geometry.warp(src, depth, K, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, valid = geometry.warp(src, depth.bfloat16().float(), K, T.bfloat16())
        out_bf, valid_bf = geometry.warp(src, depth, K, T)
    assert out.dtype == out_bf.dtype == torch.float32
    assert torch.equal(valid_bf, ref_valid) and ref_valid.mean() > 0.5
    assert (out_bf - ref).abs().max() < 1e-5           # the same arithmetic as without autocast
    # a bf16 pose and depth move the samples by their own rounding only
    both = (valid * ref_valid).bool().expand_as(out)
    assert (out - ref)[both].abs().max() < 0.1


def test_each_trainer_in_a_process_runs_at_its_own_precision():
    """The demo trains its teacher, then its student, in one process. Accelerate keeps
    one precision per process: unreset, a student left at fp32 ran in the teacher's
    bf16 (its results matched a bf16 student's to the last digit), and an explicit
    'no' after 'bf16' was refused."""
    from depth_perception_training.train.trainer import TrainerConfig, make_accelerator

    first = make_accelerator(TrainerConfig(cpu=True, mixed_precision="bf16"))
    assert first.mixed_precision == "bf16"
    with first.autocast():
        assert torch.is_autocast_enabled("cpu")
    second = make_accelerator(TrainerConfig(cpu=True, mixed_precision=None))
    assert second.mixed_precision == "no"
    with second.autocast():
        assert not torch.is_autocast_enabled("cpu")
    third = make_accelerator(TrainerConfig(cpu=True, mixed_precision="no"))
    assert third.mixed_precision == "no"
    assert make_accelerator(TrainerConfig(cpu=True, mixed_precision="bf16")).mixed_precision \
        == "bf16"
    make_accelerator(TrainerConfig(cpu=True))          # leave the process at the default
