"""Depth and pose conventions shared by the models and training (torch).

Disparity <-> depth (monodepth2's ``disp_to_depth``) and the pose-vector rules the pose
network follows. Poses: ``T_src_tgt`` ``[B,4,4]`` maps points of the target camera
optical frame into the source camera optical frame.

* Pose network ordering (monodepth2-style): the pose network always sees a frame pair
  ordered in time ``(earlier, later)``; its output ``(axisangle, translation)`` read as
  ``pose_vec_to_matrix(..., invert=False)`` maps points of the earlier camera into the
  later camera (``T_later_earlier``). When the source frame is *after* the target
  (offset +1) the pair is ``(target, source)`` and the matrix is used as is
  (``T_src_tgt``); when the source is *before* the target (offset -1) the pair is
  ``(source, target)`` and the matrix is inverted (``invert=True``) to get ``T_src_tgt``.
  :func:`ordered_pair` returns the pair and the flag.

"""
from __future__ import annotations

from depth_perception.models._deps import require_torch

require_torch(__name__)
import torch  # noqa: E402

__all__ = [
    "axis_angle_to_matrix",
    "pose_vec_to_matrix",
    "ordered_pair",
    "invert_pose",
    "disp_to_depth",
    "depth_to_disp",
]


def axis_angle_to_matrix(axisangle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. axisangle: [...,3] (direction = axis, norm = angle in radians).

    Returns R: [...,3,3]. Exact (and differentiable) at zero angle via a Taylor branch.
    """
    if axisangle.shape[-1] != 3:
        raise ValueError(f"axisangle must end in 3 values, got {tuple(axisangle.shape)}")
    theta2 = (axisangle * axisangle).sum(-1, keepdim=True)             # [...,1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)            # sin/θ
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)  # (1-cos)/θ²
    x, y, z = axisangle.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axisangle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axisangle.dtype, device=axisangle.device).expand_as(Kx)
    return eye + a.unsqueeze(-1) * Kx + b.unsqueeze(-1) * (Kx @ Kx)


def pose_vec_to_matrix(axisangle: torch.Tensor, translation: torch.Tensor,
                       invert: bool = False) -> torch.Tensor:
    """Pose network output -> 4x4 transform (monodepth2 rule).

    axisangle, translation: [B,1,3] or [B,3].
    ``invert=False``: ``M = [R | t]`` (X' = R X + t). ``invert=True``: the exact inverse
    ``[R^T | -R^T t]``. See the module doc for when to invert.
    Returns [B,4,4].
    """
    aa = axisangle.reshape(axisangle.shape[0], 3)
    t = translation.reshape(translation.shape[0], 3)
    if aa.shape[0] != t.shape[0]:
        raise ValueError(f"axisangle batch {aa.shape[0]} != translation batch {t.shape[0]}")
    R = axis_angle_to_matrix(aa)                                        # [B,3,3]
    if invert:
        R = R.transpose(1, 2)
        t = -(R @ t.unsqueeze(-1)).squeeze(-1)
    M = torch.zeros(aa.shape[0], 4, 4, dtype=R.dtype, device=R.device)
    M[:, :3, :3] = R
    M[:, :3, 3] = t
    M[:, 3, 3] = 1.0
    return M


def ordered_pair(target: torch.Tensor, source: torch.Tensor, offset: int):
    """Order a (target, source) pair in time for the pose network.

    offset: frame offset of the source relative to the target (-1 = previous frame).
    Returns (earlier, later, invert): feed ``pose_net(earlier, later)`` and pass
    ``invert`` to :func:`pose_vec_to_matrix` to obtain ``T_src_tgt``.
    """
    offset = int(offset)
    if offset == 0:
        raise ValueError("ordered_pair: source offset 0 is the target itself")
    if offset < 0:
        return source, target, True
    return target, source, False


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms [...,4,4] (rotation transposed, no general inverse)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1.0
    return out


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float):
    """Sigmoid disparity in [0,1] -> (scaled disparity, depth) in [1/max, 1/min] / [min, max].

    scaled = 1/max + (1/min - 1/max) * disp; depth = 1 / scaled. Any shape.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"disp_to_depth: need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


def depth_to_disp(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Inverse of :func:`disp_to_depth`: depth -> sigmoid-space disparity in [0,1]."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)
