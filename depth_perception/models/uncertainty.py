"""A depth network's own uncertainty: the log-variance head and its self-teaching loss.

Poggi et al., "On the uncertainty of self-supervised monocular depth estimation"
(CVPR 2020), Sec. 3.4 "Self-Teaching": a student trained on a teacher's depth predicts,
beside its depth mu, the scale of a Laplacian error against the teacher's depth d_T and
minimises ``|mu - d_T| / sigma + log sigma`` (the Laplacian negative log-likelihood);
of their eleven methods it ranks pixels best for monocular-trained models. Here the
error is taken on log depth (``ln mu - ln d_T``: scale-free, one sigma for near and
far) and the head predicts ``s = log var`` of that Laplacian (var = 2 b^2 for the scale
b), the second output the runtime reads as the model's uncertainty
(:mod:`depth_perception.confidence`: ``log_variance``).

* :func:`uncertainty_head`: 3x3 conv on the finest decoder features -> s [B,1,H,W],
  started at s = :data:`INITIAL_LOG_VARIANCE` (zero weights, that bias) so that a head
  added to a trained network starts as "unsure everywhere" and changes nothing else.
* :func:`self_teaching_loss`: the per-pixel negative log-likelihood (up to a constant)
  ``|e| / b + log b`` with ``b = exp(s / 2) / sqrt(2)``, ``e = ln mu - ln d_T``.
"""
from __future__ import annotations

import math

from depth_perception.models._deps import require_torch

require_torch(__name__)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

#: the head's start: log variance of a 30 % log-depth error (sigma 0.3)
INITIAL_LOG_VARIANCE = 2.0 * math.log(0.3)


def uncertainty_head(channels: int) -> nn.Conv2d:
    """[B,channels,H,W] features -> [B,1,H,W] log-variance, started at a constant."""
    conv = nn.Conv2d(channels, 1, 3, padding=1, padding_mode="reflect")
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(INITIAL_LOG_VARIANCE)
    return conv


def self_teaching_loss(depth: torch.Tensor, log_variance: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
    """Per-pixel Laplacian NLL [B,1,H,W] of the student's log depth against the teacher's
    (``target``, no gradient) with the predicted ``log_variance``; ``depth`` gets no
    gradient either (the head learns how far to trust it, the depth loss what it is)."""
    error = (depth.detach().clamp_min(1e-6).log() - target.detach().clamp_min(1e-6).log()).abs()
    log_b = 0.5 * log_variance - 0.5 * math.log(2.0)
    return error * torch.exp(-log_b) + log_b
