"""Surface normals from a depth map, and the smoothness regulariser of Re-Depth Anything.

Camera frame of everything in this subpackage (OpenGL convention): x to the right,
y up, z towards the viewer. A visible surface therefore has a normal with n_z > 0, the
view direction is v = (0, 0, 1), and a point at depth D lies at z = -D.

Two cameras unproject a depth map [B,1,H,W] into points X [B,3,H,W]:

* ``orthographic`` (scaled orthographic, the default for images without intrinsics):
  X = (u, v, -D) with u spanning [-W/H, W/H] left to right and v spanning [1, -1] top
  to bottom (square pixels). The depth scale of the caller sets how deep the relief is.
* ``perspective`` with pixel intrinsics K [B,3,3] or [3,3] (OpenCV pixel convention,
  x right, y down, z forward): X_cv = D K^-1 [x, y, 1]^T, then (x, -y, -z) to OpenGL.

Normals (Eq. 3 of Re-Depth Anything): N = normalize(dX/drow x dX/dcol) with central
differences inside the image and one-sided differences on the border (``torch.gradient``).
For any plane the differences are chords of the plane, so the normal is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pixel_grid", "unproject", "normals_from_depth", "disparity_to_depth",
           "laplacian_smoothness"]


def pixel_grid(height: int, width: int, dtype=torch.float32, device=None):
    """Scaled-orthographic image coordinates (u [H,W] in [-W/H, W/H], v [H,W] in [1, -1])."""
    aspect = width / height
    u = torch.linspace(-aspect, aspect, width, dtype=dtype, device=device)
    v = torch.linspace(1.0, -1.0, height, dtype=dtype, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return uu, vv


def unproject(depth: torch.Tensor, camera: str = "orthographic",
              K: torch.Tensor | None = None) -> torch.Tensor:
    """depth [B,1,H,W] (positive) -> points X [B,3,H,W] in the OpenGL camera frame."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"unproject: depth must be [B,1,H,W], got {tuple(depth.shape)}")
    B, _, H, W = depth.shape
    d = depth[:, 0]
    if camera == "orthographic":
        uu, vv = pixel_grid(H, W, depth.dtype, depth.device)
        return torch.stack([uu.expand(B, H, W), vv.expand(B, H, W), -d], 1)
    if camera == "perspective":
        if K is None:
            raise ValueError("unproject: camera='perspective' needs intrinsics K [3,3] or [B,3,3]")
        K = torch.as_tensor(K, dtype=depth.dtype, device=depth.device)
        K = K.expand(B, 3, 3) if K.dim() == 2 else K
        ys, xs = torch.meshgrid(torch.arange(H, dtype=depth.dtype, device=depth.device),
                                torch.arange(W, dtype=depth.dtype, device=depth.device),
                                indexing="ij")
        pix = torch.stack([xs, ys, torch.ones_like(xs)], 0).reshape(3, -1)        # [3,HW]
        rays = torch.linalg.inv(K) @ pix                                            # [B,3,HW]
        X = rays.reshape(B, 3, H, W) * d.unsqueeze(1)                               # OpenCV
        return torch.stack([X[:, 0], -X[:, 1], -X[:, 2]], 1)                        # OpenGL
    raise ValueError(f"unproject: camera must be 'orthographic' or 'perspective', got {camera!r}")


def normals_from_depth(depth: torch.Tensor, camera: str = "orthographic",
                       K: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """depth [B,1,H,W] -> unit normals N [B,3,H,W] (OpenGL frame, facing the camera).

    Differentiable; pixels whose depth is not finite and positive get (0, 0, 1).
    """
    valid = torch.isfinite(depth) & (depth > 0)                                     # [B,1,H,W]
    X = unproject(torch.where(valid, depth, torch.ones_like(depth)), camera, K)
    d_row, d_col = torch.gradient(X, dim=(2, 3))                                    # [B,3,H,W]
    n = torch.cross(d_row, d_col, dim=1)
    n = n / (torch.linalg.vector_norm(n, dim=1, keepdim=True) + eps)
    facing = torch.zeros_like(n)
    facing[:, 2] = 1.0
    return torch.where(valid, n, facing)


def disparity_to_depth(disp: torch.Tensor, shift: float = 0.1,
                       scale: torch.Tensor | float = 7.0) -> torch.Tensor:
    """Re-Depth Anything Eq. 5: relative disparity -> depth = scale / (disp + shift).

    disp [B,1,H,W] (non-negative); shift is b = m*s (0.1 by default); scale is the
    scaled-orthographic depth scale (a learnable scalar started at 7 in the loop).
    """
    return scale / (disp.clamp_min(0.0) + shift)


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_smoothness(disp: torch.Tensor) -> torch.Tensor:
    """Mean absolute 5-point Laplacian of per-image min-max normalised disparity (scalar).

    disp [B,1,H,W]. Each image is normalised with its own detached min and max, the
    Laplacian is taken with zero padding (border pixels see 0 outside the image), and
    the loss is the mean over pixels of |Laplacian|, then over images.

    Re-Depth Anything's Eq. 6 typesets a squared norm, its text calls the regulariser
    L1, and its code (anantarb/Re-Depth-Anything, ``redepth/utils/utils.py``
    ``laplacian_smoothness``, applied in ``redepth/coach/base_coach.py`` to the min-max
    normalised disparity) takes ``F.conv2d(z, lap, padding=1).abs().mean()``: this
    follows the code. At the magnitudes of normalised disparity (|Laplacian| well
    below 1) the squared form is several times weaker.
    """
    if disp.dim() != 4 or disp.shape[1] != 1:
        raise ValueError(f"laplacian_smoothness: disp must be [B,1,H,W], got {tuple(disp.shape)}")
    lo = disp.detach().amin(dim=(2, 3), keepdim=True)
    hi = disp.detach().amax(dim=(2, 3), keepdim=True)
    d = (disp - lo) / (hi - lo).clamp_min(1e-8)
    kernel = _LAPLACE.to(dtype=disp.dtype, device=disp.device).view(1, 1, 3, 3)
    lap = F.conv2d(d, kernel, padding=1)                                  # zero padding
    return lap.abs().mean(dim=(1, 2, 3)).mean()
