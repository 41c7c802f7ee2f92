"""Small pieces of the SSD student task (:mod:`.student`): undoing the student's flip on
its outputs and tokens, BatchNorm layers that keep their running statistics, and the
resizing of frames to a teacher's input size multiple."""
from __future__ import annotations

import torch
import torch.nn as nn

from depth_perception_training.losses import upsample_to


def unflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror back the samples of ``x`` [B,...,W] whose ``flip`` [B] is true (last axis)."""
    if not bool(flip.any()):
        return x
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(flip.to(x.device).view(shape), x.flip(-1), x)


def unflip_tokens(tokens: torch.Tensor, flip: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B,N,C] on a (h, w) grid, row-major: mirror rows of flipped samples."""
    B, N, C = tokens.shape
    h, w = grid
    if h * w != N:
        raise ValueError(f"unflip_tokens: {N} tokens do not form a {h}x{w} grid")
    spatial = tokens.reshape(B, h, w, C).permute(0, 3, 1, 2)           # [B,C,h,w]
    return unflip(spatial, flip).permute(0, 2, 3, 1).reshape(B, N, C)


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that stays in eval mode (running statistics used and never updated)
    whatever ``train()`` asks; its affine scale and shift still receive gradients."""

    def train(self, mode: bool = True):
        return super().train(False)


def freeze_batchnorm_statistics(module: nn.Module) -> int:
    """Turn every ``nn.BatchNorm2d`` of ``module`` into :class:`FrozenStatsBatchNorm2d`
    in place (same parameters and buffers); returns how many."""
    count = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = FrozenStatsBatchNorm2d
            m.train(False)
            count += 1
    return count


def teacher_sized(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """[B,3,H,W] resized to the nearest multiple of the teacher's input size multiple
    (unchanged when H and W already are): a student of another architecture may train
    at a size the teacher's net does not take; its outputs are resized back."""
    H, W = image.shape[-2:]
    size = (max(1, round(H / multiple)) * multiple, max(1, round(W / multiple)) * multiple)
    return upsample_to(image, size)
