"""Differentiable multi-view geometry for self-supervised depth (torch).

Conventions (shared with the rest of the package):

* Pixels: pixel ``(u, v)`` has its centre at integer coordinates, ``u`` along the width,
  ``v`` along the height (the convention of :mod:`depth_perception.camera`). Intrinsics
  ``K`` are per sample, ``[B,3,3]`` (a ``[B,4,4]`` matrix is accepted; its top-left 3x3
  block is used).
* Sampling: ``grid_sample(..., align_corners=True)`` with coordinates normalised as
  ``x = 2 u / (W - 1) - 1`` and ``y = 2 v / (H - 1) - 1``: -1 and +1 are the *centres*
  of the first and last pixels, which is exactly the integer-centre convention above.
  Every function here uses this one convention.
* Poses: ``T_src_tgt`` ``[B,4,4]`` maps points expressed in the target camera optical
  frame to the source camera optical frame (``X_src = T_src_tgt @ X_tgt``). To
  synthesise the target view from a source image: back-project target pixels with the
  target depth, transform with ``T_src_tgt``, project with ``K``, sample the source.
* Pose network ordering and pose vectors: :mod:`depth_perception.models.conventions`
  (re-exported here: ``ordered_pair``, ``pose_vec_to_matrix``, ``disp_to_depth``, ...).

No function bakes in a batch size or an image size.

Precision: :func:`warp` always computes in float32 (or the float64 it is given), with
autocast off. Under bf16/fp16 autocast a matrix product would otherwise run in 8 or 11
mantissa bits: a point 40 m away projects up to a few pixels off at 576 px, which the
photometric loss then learns from (the networks may still run in reduced precision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from depth_perception.models.conventions import (  # noqa: F401  (re-exported)
    axis_angle_to_matrix,
    depth_to_disp,
    disp_to_depth,
    invert_pose,
    ordered_pair,
    pose_vec_to_matrix,
)

__all__ = [
    "pixel_grid",
    "backproject",
    "project",
    "warp",
    "full_precision",
    "axis_angle_to_matrix",
    "pose_vec_to_matrix",
    "ordered_pair",
    "disp_to_depth",
    "depth_to_disp",
    "invert_pose",
]

_EPS = 1e-7


def _k33(K: torch.Tensor) -> torch.Tensor:
    """[B,3,3] or [B,4,4] -> [B,3,3]."""
    if K.dim() != 3 or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"intrinsics K must be [B,3,3] or [B,4,4], got {tuple(K.shape)}")
    return K[:, :3, :3]


def full_precision(out):
    """bf16/fp16 tensors as float32, in the same dict / list structure (the networks'
    outputs under autocast); float32/float64 and integer tensors as they are. The losses
    and the geometry they feed run in full precision, only the networks in reduced one."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    if isinstance(out, dict):
        return {k: full_precision(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(full_precision(v) for v in out)
    return out


def _check_depth(depth: torch.Tensor, name: str = "depth") -> None:
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must be [B,1,H,W], got {tuple(depth.shape)}")


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel centres ``[3, H*W]`` (rows ``u``, ``v``, ``1``), row-major over (v, u)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def backproject(depth: torch.Tensor, K_inv: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to a 3-D point in its camera frame: ``X = D K^-1 [u v 1]^T``.

    depth: [B,1,H,W] z-depth (metres). K_inv: [B,3,3] (or [B,4,4]) inverse intrinsics.
    Returns points: [B,3,H,W] (``.flatten(2)`` gives [B,3,H*W]; :func:`project` accepts
    both layouts).
    """
    _check_depth(depth)
    B, _, H, W = depth.shape
    K_inv = _k33(K_inv).to(depth.dtype)
    if K_inv.shape[0] != B:
        raise ValueError(f"K_inv batch {K_inv.shape[0]} != depth batch {B}")
    pix = pixel_grid(H, W, device=depth.device, dtype=depth.dtype)    # [3,HW]
    rays = K_inv @ pix.unsqueeze(0)                                     # [B,3,HW]
    return (rays * depth.reshape(B, 1, H * W)).reshape(B, 3, H, W)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor | None = None,
            height: int | None = None, width: int | None = None,
            return_depth: bool = False):
    """Transform 3-D points with ``T`` and project them with ``K`` to grid_sample coordinates.

    points: [B,3,H,W] (image size taken from it) or [B,3,N] with ``height * width == N``.
    K: [B,3,3] (or [B,4,4]). T: [B,4,4] (None = identity).
    Returns pix: [B,H,W,2] with (x, y) normalised to [-1, 1] by ``(W-1)``, ``(H-1)``
    (align_corners=True convention, see module doc); with ``return_depth`` also
    z: [B,1,H,W], the depth of each point in the projecting camera (for validity masks).
    """
    if points.dim() == 4:
        B, three, H, W = points.shape
        points = points.reshape(B, three, H * W)
    elif points.dim() == 3:
        if height is None or width is None:
            raise ValueError("project: points given as [B,3,N] need height and width")
        B, three, N = points.shape
        H, W = int(height), int(width)
        if H * W != N:
            raise ValueError(f"project: height*width = {H * W} != number of points {N}")
    else:
        raise ValueError(f"project: points must be [B,3,H,W] or [B,3,N], got {tuple(points.shape)}")
    if three != 3:
        raise ValueError(f"project: points need 3 coordinates, got {three}")
    K = _k33(K).to(points.dtype)
    if T is not None:
        if T.shape[-2:] != (4, 4) or T.shape[0] != B:
            raise ValueError(f"project: T must be [B,4,4] with B={B}, got {tuple(T.shape)}")
        T = T.to(points.dtype)
        points = T[:, :3, :3] @ points + T[:, :3, 3:]                 # [B,3,HW]
    cam = K @ points                                                    # [B,3,HW]
    z = cam[:, 2:3]
    uv = cam[:, :2] / (z + _EPS)                                        # [B,2,HW]
    uv = uv.reshape(B, 2, H, W).permute(0, 2, 3, 1)                     # [B,H,W,2]
    scale = torch.tensor([max(W - 1, 1), max(H - 1, 1)], dtype=uv.dtype, device=uv.device)
    pix = uv / scale * 2.0 - 1.0
    if return_depth:
        return pix, z.reshape(B, 1, H, W)
    return pix


def warp(src: torch.Tensor, depth_tgt: torch.Tensor, K: torch.Tensor, T_src_tgt: torch.Tensor,
         padding_mode: str = "border", mode: str = "bilinear",
         K_src: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view by sampling ``src`` where target pixels land in it.

    src: [B,C,H,W] source image (or features). depth_tgt: [B,1,H,W] target z-depth.
    K: [B,3,3] target intrinsics (also used for the source unless ``K_src`` is given).
    T_src_tgt: [B,4,4] maps target-camera points to source-camera points.
    Returns (warped [B,C,H,W], valid [B,1,H,W] float: 1 where the target pixel lands in
    front of the source camera and inside the source image).
    """
    _check_depth(depth_tgt, "depth_tgt")
    if src.dim() != 4 or src.shape[0] != depth_tgt.shape[0] or src.shape[-2:] != depth_tgt.shape[-2:]:
        raise ValueError(f"warp: src {tuple(src.shape)} must be [B,C,H,W] matching depth_tgt "
                         f"{tuple(depth_tgt.shape)}")
    with torch.autocast(device_type=src.device.type, enabled=False):   # see module doc
        depth_tgt, T_src_tgt = full_precision(depth_tgt), full_precision(T_src_tgt)
        image = full_precision(src)
        K = full_precision(_k33(K))
        K_inv = torch.linalg.inv(K.double()).to(depth_tgt.dtype)
        points = backproject(depth_tgt, K_inv)                          # [B,3,H,W]
        pix, z = project(points, K if K_src is None else full_precision(_k33(K_src)),
                         T_src_tgt, return_depth=True)                  # [B,H,W,2], [B,1,H,W]
        warped = F.grid_sample(image, pix.to(image.dtype), mode=mode, padding_mode=padding_mode,
                               align_corners=True)
        inside = (pix.abs() <= 1.0).all(dim=-1).unsqueeze(1)            # [B,1,H,W]
        valid = (inside & (z > _EPS)).to(src.dtype)
    return warped.to(src.dtype), valid
