"""Self-supervised and distillation losses (torch), monodepth2 / md4all / SSD family.

Every function takes and returns tensors with the shapes in its docstring; the trainer
only orchestrates. Images are [B,3,H,W] in [0,1], depth/disparity [B,1,H,W].

:class:`SelfSupervisedLoss` composes the photometric (min-reprojection + auto-mask),
edge-aware smoothness and velocity terms from a prediction dict and a dataset batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from depth_perception_training import geometry
from depth_perception_training.geometry import full_precision

__all__ = [
    "SSIM",
    "photometric_error",
    "min_reprojection",
    "edge_aware_smoothness",
    "velocity_loss",
    "abs_rel_distillation",
    "abs_rel_distillation_map",
    "teacher_loss_mask",
    "MASK_READINGS",
    "semantic_cosine_loss",
    "upsample_to",
    "SelfSupervisedLoss",
]


class _BoxMean(torch.autograd.Function):
    """``avg_pool2d(x, k, stride=1)`` (no padding) on CPU float32/float64 as k*k
    shifted-slice additions, in the order of PyTorch's own CPU kernel (window row-major,
    then one division by k*k; the backward adds ``grad / k*k`` of the outputs in
    row-major order): bit-identical forward and backward (test_losses checks both),
    and several times faster, since that kernel runs one scalar loop per output pixel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        ctx.k, ctx.shape = k, x.shape
        h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
        out = x[..., :h, :w].clone(memory_format=torch.contiguous_format)
        for i in range(k):
            for j in range(k):
                if i or j:
                    out.add_(x[..., i:i + h, j:j + w])
        return out.div_(k * k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        k = ctx.k
        delta = grad / (k * k)
        h, w = delta.shape[-2:]
        out = delta.new_zeros(ctx.shape)
        for i in range(k - 1, -1, -1):          # input (r, c) sums outputs r-k+1..r, c-k+1..c
            for j in range(k - 1, -1, -1):
                out[..., i:i + h, j:j + w].add_(delta)
        return out, None


def box_mean(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,H-k+1,W-k+1] window means, as ``F.avg_pool2d(x, k, stride=1)``
    (bit-identical; :class:`_BoxMean` on CPU float32/float64, avg_pool2d elsewhere)."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4:
        return _BoxMean.apply(x, window_size)
    return F.avg_pool2d(x, window_size, stride=1)


class SSIM(nn.Module):
    """Structural similarity map with a box window (reflection-padded average pooling).

    ``window_size`` 3 (monodepth2) or 7 (SQL-family models); C1 = 0.01^2, C2 = 0.03^2
    for images in [0,1]. ``forward(x, y)`` returns the SSIM index map [B,C,H,W] (1 for
    identical images); :meth:`dissimilarity` returns the loss term (1 - SSIM)/2 clamped
    to [0, 1]. ``y_stats`` (:meth:`stats` of ``y``) skips recomputing what depends on
    ``y`` alone when several images are compared with the same target (same result).
    """

    def __init__(self, window_size: int = 3, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2):
        super().__init__()
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"SSIM window_size must be odd and positive, got {window_size}")
        self.window_size = window_size
        self.c1, self.c2 = c1, c2
        self.pool = nn.AvgPool2d(window_size, stride=1)
        self.pad = nn.ReflectionPad2d(window_size // 2)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return box_mean(x, self.window_size)

    def stats(self, y: torch.Tensor) -> tuple:
        """What :meth:`forward` computes from ``y`` alone: (padded y, mu_y, mu_y^2, sigma_y)."""
        y = self.pad(y)
        mu_y = self._pool(y)
        mu_y2 = mu_y ** 2
        return y, mu_y, mu_y2, self._pool(y * y) - mu_y2

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_stats: tuple | None = None) -> torch.Tensor:
        """x, y: [B,C,H,W] -> SSIM index [B,C,H,W]."""
        y, mu_y, mu_y2, sigma_y = y_stats if y_stats is not None else self.stats(y)
        x = self.pad(x)
        mu_x = self._pool(x)
        sigma_x = self._pool(x * x) - mu_x ** 2
        sigma_xy = self._pool(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + self.c1) * (2 * sigma_xy + self.c2)
        den = (mu_x ** 2 + mu_y2 + self.c1) * (sigma_x + sigma_y + self.c2)
        return num / den

    def dissimilarity(self, x: torch.Tensor, y: torch.Tensor,
                      y_stats: tuple | None = None) -> torch.Tensor:
        """x, y: [B,C,H,W] -> (1 - SSIM)/2 clamped to [0,1], [B,C,H,W]."""
        return torch.clamp((1.0 - self.forward(x, y, y_stats)) / 2.0, 0.0, 1.0)


_SSIM_CACHE: dict[int, SSIM] = {}


def _ssim(window_size: int) -> SSIM:
    if window_size not in _SSIM_CACHE:
        _SSIM_CACHE[window_size] = SSIM(window_size)
    return _SSIM_CACHE[window_size]


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85,
                      ssim: SSIM | None = None, window_size: int = 3,
                      target_stats: tuple | None = None) -> torch.Tensor:
    """pe = alpha * mean_c (1-SSIM)/2 + (1-alpha) * mean_c |pred - target|.

    pred, target: [B,C,H,W] in [0,1]. Returns [B,1,H,W]. ``target_stats``:
    ``ssim.stats(target)`` (that SSIM's), reused across calls with the same target.
    """
    if pred.shape != target.shape:
        raise ValueError(f"photometric_error: pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    l1 = (pred - target).abs().mean(1, keepdim=True)
    ssim = ssim if ssim is not None else _ssim(window_size)
    dssim = ssim.dissimilarity(pred, target, target_stats).mean(1, keepdim=True)
    return alpha * dssim + (1.0 - alpha) * l1


def min_reprojection(errors_warped: Sequence[torch.Tensor],
                     errors_identity: Sequence[torch.Tensor] | None = None,
                     automask: bool = True, generator: torch.Generator | None = None,
                     tie_break: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum reprojection error with monodepth2 auto-masking.

    errors_warped: list of [B,1,H,W] photometric errors of each warped source vs target.
    errors_identity: list of [B,1,H,W] errors of each *unwarped* source vs target.
    With ``automask`` the minimum runs over warped and identity errors; identity errors
    get a tie-break of ``tie_break * randn`` (with ``generator``) or, without a
    generator, the deterministic constant ``+tie_break`` (so a warped source wins exact
    ties).
    Returns (loss [B,1,H,W] per-pixel minimum, mask [B,1,H,W] float: 1 where a warped
    source wins, i.e. the pixel teaches depth/pose; 0 where auto-masked).
    """
    if not errors_warped:
        raise ValueError("min_reprojection: need at least one warped error map")
    warped = torch.cat(list(errors_warped), 1)                          # [B,S,H,W]
    min_warped, _ = warped.min(1, keepdim=True)
    if not automask or not errors_identity:
        return min_warped, torch.ones_like(min_warped)
    identity = torch.cat(list(errors_identity), 1)                      # [B,S',H,W]
    if generator is not None:
        noise = torch.randn(identity.shape, generator=generator, device=generator.device,
                            dtype=identity.dtype).to(identity.device)
        identity = identity + tie_break * noise
    else:
        identity = identity + tie_break
    min_identity, _ = identity.min(1, keepdim=True)
    mask = (min_warped < min_identity).to(min_warped.dtype)
    loss = torch.minimum(min_warped, min_identity)
    return loss, mask


def edge_aware_smoothness(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Edge-aware first-order smoothness of mean-normalised disparity (scalar).

    disp: [B,1,H,W] (disparity, or depth for SQL models); img: [B,3,H,W] same size.
    d* = d / mean_hw(d); mean(|dx d*| exp(-mean_c |dx I|)) + mean(|dy d*| exp(-mean_c |dy I|)).
    """
    if disp.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"edge_aware_smoothness: disp {tuple(disp.shape)} and img "
                         f"{tuple(img.shape)} differ in size")
    d = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    dx_d = (d[..., :, :-1] - d[..., :, 1:]).abs()
    dy_d = (d[..., :-1, :] - d[..., 1:, :]).abs()
    dx_i = (img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True)
    dy_i = (img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx_d * torch.exp(-dx_i)).mean() + (dy_d * torch.exp(-dy_i)).mean()


def velocity_loss(translation, distance: torch.Tensor) -> torch.Tensor:
    """md4all weak velocity supervision: mean | ||t_pred|| - d_odometry | (scalar).

    translation: [B,n,3] (or a list of n [B,3] / [B,1,3] tensors), predicted translation
    between the target and each context frame. distance: [B,n] metres travelled between
    the same frames from odometry. Non-finite distances are ignored.
    """
    if isinstance(translation, (list, tuple)):
        translation = torch.stack([t.reshape(t.shape[0], 3) for t in translation], 1)
    if translation.dim() != 3 or translation.shape[-1] != 3:
        raise ValueError(f"velocity_loss: translation must be [B,n,3], got {tuple(translation.shape)}")
    distance = distance.to(translation.dtype).reshape(translation.shape[:2])
    norm = torch.linalg.vector_norm(translation, dim=-1)                # [B,n]
    valid = torch.isfinite(distance)
    if not valid.any():
        raise ValueError("velocity_loss: no finite odometry distance in the batch")
    return (norm - torch.nan_to_num(distance)).abs()[valid].mean()


def abs_rel_distillation(disp_student: torch.Tensor, disp_teacher: torch.Tensor) -> torch.Tensor:
    """md4all-DD distillation: mean(|d_s - d_t| / d_s) on scaled disparities (scalar).

    disp_student, disp_teacher: [B,1,H,W] positive scaled disparities (teacher detached
    by the caller); the teacher is resized to the student's size if they differ.
    """
    return abs_rel_distillation_map(disp_student, disp_teacher).mean()


def abs_rel_distillation_map(disp_student: torch.Tensor, disp_teacher: torch.Tensor) -> torch.Tensor:
    """Per-pixel md4all-DD distillation |d_s - d_t| / d_s, [B,1,H,W] (Ld of SSD Eq. 6).

    disp_student, disp_teacher: [B,1,H,W] positive scaled disparities (teacher detached
    by the caller); the teacher is resized to the student's size if they differ.
    """
    if disp_teacher.shape[-2:] != disp_student.shape[-2:]:
        disp_teacher = upsample_to(disp_teacher, disp_student.shape[-2:], "bilinear")
    return (disp_student - disp_teacher).abs() / disp_student.clamp_min(1e-7)


#: ``text``: distil where the teacher's depth explains the day frames at least as well
#: as the student's (what SSD's text describes); ``printed``: Eq. 5 as typeset.
MASK_READINGS = ("text", "printed")


def teacher_loss_mask(errors_teacher: Sequence[torch.Tensor],
                      errors_student: Sequence[torch.Tensor],
                      reading: str = "text") -> torch.Tensor:
    """SSD teacher-loss mask M (Eq. 5) from the photometric errors of both depths.

    errors_teacher / errors_student: one [B,1,H,W] map per adjacent day frame t', the
    photometric error pe(I_t, I_{t'->t}) of warping I_t' into I_t with the teacher's
    (resp. the student's) depth, both with the teacher PoseNet's pose. With
    T = min_t' pe_teacher and S = min_t' pe_student:

    * ``reading="text"`` (default): M = [T <= S]. The text: "the lower the photometric
      loss, the more reasonable the estimated depth ... select the pixels with higher
      S-pe than T-pe"; the mask removes pixels where the teacher's depth is the less
      reasonable one. Ties (the student copies the teacher) are kept.
    * ``reading="printed"``: M = [T > S], Eq. 5 as typeset (keeps exactly the pixels
      where the teacher explains the day frames worse than the student).

    Returns M [B,1,H,W] float in {0, 1}, without gradient.
    """
    if reading not in MASK_READINGS:
        raise ValueError(f"teacher_loss_mask: reading must be one of {MASK_READINGS}, got {reading!r}")
    if not errors_teacher or len(errors_teacher) != len(errors_student):
        raise ValueError("teacher_loss_mask: need one teacher and one student error map per "
                         f"adjacent frame, got {len(errors_teacher)} and {len(errors_student)}")
    t = torch.cat(list(errors_teacher), 1).detach().min(1, keepdim=True).values   # [B,1,H,W]
    s = torch.cat(list(errors_student), 1).detach().min(1, keepdim=True).values
    mask = (t <= s) if reading == "text" else (t > s)
    return mask.to(t.dtype)


def semantic_cosine_loss(features_student: torch.Tensor, features_teacher: torch.Tensor) -> torch.Tensor:
    """SSD semantic loss: 1 - mean cosine similarity over feature tokens (scalar).

    features_student, features_teacher: [B,N,C] tokens (same N and C).
    """
    if features_student.shape != features_teacher.shape:
        raise ValueError(f"semantic_cosine_loss: student {tuple(features_student.shape)} != "
                         f"teacher {tuple(features_teacher.shape)}")
    return 1.0 - F.cosine_similarity(features_student, features_teacher, dim=-1).mean()


def upsample_to(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """[B,C,h,w] -> [B,C,H,W] (no-op when already that size)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class SelfSupervisedLoss(nn.Module):
    """Multi-scale monodepth2-family loss with the md4all velocity term.

    Inputs to :meth:`forward`:

    * ``outputs``: ``{"depth": [scales of [B,1,h_s,w_s]], "disp": [same scales]
      (what smoothness acts on; for SQL models pass depth), "T_src_tgt": [B,n,4,4]
      predicted poses, "translation": [B,n,3] raw predicted translations between the
      target and each context frame (for the velocity loss; defaults to the translation
      column of T_src_tgt)}``.
    * ``batch``: the dataset batch: ``image`` [B,3,H,W] (unaugmented target),
      ``context`` [B,n,3,H,W] (unaugmented sources), ``K`` [B,3,3], ``distance`` [B,n]
      (needed when ``velocity_weight > 0``).

    ``outputs`` may add ``"scaled_disp"`` (per scale, = 1/depth): with ``upsample="disp"``
    (monodepth2) that disparity is upsampled to full resolution and inverted, otherwise
    the depth itself is upsampled.

    Each scale is brought to full resolution, every context frame is warped into
    the target, the per-pixel minimum reprojection (auto-masked) is averaged; smoothness
    at scale s (on the disparity at its own resolution with the image resized to it)
    has weight ``smoothness_weight / 2**s``; scale losses are averaged.
    Returns (total scalar, terms dict of detached scalars plus ``automask`` fraction).
    """

    def __init__(self, photometric_weight: float = 1.0, smoothness_weight: float = 1e-3,
                 velocity_weight: float = 0.02, automask: bool = True, ssim_window: int = 3,
                 ssim_alpha: float = 0.85, upsample_mode: str = "bilinear",
                 padding_mode: str = "border", upsample: str = "disp"):
        super().__init__()
        if upsample not in ("disp", "depth"):
            raise ValueError(f"SelfSupervisedLoss: upsample must be 'disp' or 'depth', got {upsample!r}")
        self.upsample = upsample
        self.photometric_weight = photometric_weight
        self.smoothness_weight = smoothness_weight
        self.velocity_weight = velocity_weight
        self.automask = automask
        self.ssim = SSIM(ssim_window)
        self.ssim_alpha = ssim_alpha
        self.upsample_mode = upsample_mode
        self.padding_mode = padding_mode

    def pe(self, pred: torch.Tensor, target: torch.Tensor,
           target_stats: tuple | None = None) -> torch.Tensor:
        return photometric_error(pred, target, alpha=self.ssim_alpha, ssim=self.ssim,
                                 target_stats=target_stats)

    def forward(self, outputs: dict, batch: dict, generator: torch.Generator | None = None):
        """(total, terms) in float32, with autocast off (see
        :func:`~depth_perception_training.geometry.full_precision`)."""
        with torch.autocast(device_type=batch["image"].device.type, enabled=False):
            return self._forward(full_precision(outputs), batch, generator)

    def _forward(self, outputs: dict, batch: dict, generator: torch.Generator | None):
        # 1. Unpack and check shapes
        target = batch["image"]                                         # [B,3,H,W]
        context = batch["context"]                                      # [B,n,3,H,W]
        K = batch["K"]                                                  # [B,3,3]
        B, _, H, W = target.shape
        if context.dim() != 5 or context.shape[0] != B or context.shape[-2:] != (H, W):
            raise ValueError(f"SelfSupervisedLoss: context must be [B,n,3,H,W] matching image "
                             f"{tuple(target.shape)}, got {tuple(context.shape)}")
        n = context.shape[1]
        depths = list(outputs["depth"])
        disps = list(outputs.get("disp", depths))
        scaled = outputs.get("scaled_disp") if self.upsample == "disp" else None
        T = outputs["T_src_tgt"]                                        # [B,n,4,4]
        if T.shape != (B, n, 4, 4):
            raise ValueError(f"SelfSupervisedLoss: outputs['T_src_tgt'] must be {(B, n, 4, 4)}, "
                             f"got {tuple(T.shape)}")

        # 2. Identity errors (unwarped sources), shared by all scales; the target's SSIM
        #    statistics, shared by every error map
        target_stats = self.ssim.stats(target)
        identity = ([self.pe(context[:, i], target, target_stats) for i in range(n)]
                    if self.automask else None)

        # 3. Per scale: warp at full resolution, min reprojection, smoothness
        photo_terms, smooth_terms, mask_fracs = [], [], []
        for s, depth in enumerate(depths):
            if scaled is not None:                                              # monodepth2
                depth_full = 1.0 / upsample_to(scaled[s], (H, W), self.upsample_mode)
            else:
                depth_full = upsample_to(depth, (H, W), self.upsample_mode)      # [B,1,H,W]
            warped_err = []
            for i in range(n):
                warped, _ = geometry.warp(context[:, i], depth_full, K, T[:, i],
                                          padding_mode=self.padding_mode)
                warped_err.append(self.pe(warped, target, target_stats))
            per_pixel, mask = min_reprojection(warped_err, identity, automask=self.automask,
                                               generator=generator)
            photo_terms.append(per_pixel.mean())
            mask_fracs.append(mask.mean().detach())
            disp = disps[s] if s < len(disps) else depth
            img_s = upsample_to(target, disp.shape[-2:], "bilinear")
            smooth_terms.append(edge_aware_smoothness(disp, img_s) / (2 ** s))
        photometric = torch.stack(photo_terms).mean()
        smoothness = torch.stack(smooth_terms).mean()

        # 4. Velocity (metric scale from odometry)
        total = self.photometric_weight * photometric + self.smoothness_weight * smoothness
        terms = {"photometric": photometric.detach(), "smoothness": smoothness.detach()}
        if self.velocity_weight > 0:
            if "distance" not in batch:
                raise ValueError("SelfSupervisedLoss: velocity_weight > 0 needs batch['distance'] [B,n]")
            translation = outputs.get("translation")
            if translation is None:
                translation = T[..., :3, 3]
            velocity = velocity_loss(translation, batch["distance"])
            total = total + self.velocity_weight * velocity
            terms["velocity"] = velocity.detach()
        terms["automask_fraction"] = torch.stack(mask_fracs).mean()
        terms["total"] = total.detach()
        return total, terms
