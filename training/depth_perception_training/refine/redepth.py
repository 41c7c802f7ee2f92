"""Re-Depth Anything: test-time refinement of a Depth-Anything-style prediction.

For one image (:func:`refine_image`):

1. the frozen DINOv2 encoder runs once; its four tapped token maps become the
   optimisable embeddings W (patch tokens; the class token stays fixed and is ignored
   by the DPT reassemble stage anyway);
2. per step: DPT neck + head on W -> disparity [1,1,H,W]; depth = s / (disp + b)
   (Eq. 5, b = 0.1, s = scale + tanh(offset) with scale 7 and a learnable offset);
   normals from the depth (scaled orthographic, or perspective with K); Blinn-Phong
   re-lighting of the input with a random light and material (Eq. 4); loss =
   SDS(re-lit image, caption) + lambda * Laplacian(normalised disparity) (Eq. 6);
   AdamW on W (1e-3), the DPT neck + head weights (2e-6) and the offset (1e-3);
   the encoder is never touched (Eq. 7);
3. N runs, each from the original weights with its own seed; the refined disparity is
   the mean of the N final predictions (Eq. 8). The model is left with its original
   weights.

The output keeps the model's own meaning: sigmoid disparity for this package's
checkpoints (metres through ``disp_to_depth``), relative disparity for relative Depth
Anything models.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from depth_perception_training.refine.model import RefinableDepthModel
from depth_perception_training.refine.normals import (disparity_to_depth, laplacian_smoothness,
                                                      normals_from_depth)
from depth_perception_training.refine.relight import relight, sample_lighting

__all__ = ["RedepthSettings", "RefinementResult", "Refiner", "refine_image",
           "optimisation_state_bytes"]


@dataclass
class RedepthSettings:
    """Hyperparameters of the optimisation (defaults: Re-Depth Anything, methods.md)."""

    steps: int = 1000
    ensemble: int = 10
    lr_embeddings: float = 1e-3
    lr_head: float = 2e-6
    lr_scale: float = 1e-3
    weight_decay: float = 0.01            # torch AdamW default, as in the reference
    shift: float = 0.1                    # b = m s of Eq. 5
    scale: float = 7.0                    # initial scaled-orthographic depth scale
    camera: str = "orthographic"          # or "perspective" (needs K)
    smoothness_weight: float = 1.0        # lambda_1
    sds_weight: float = 1.0               # 0: smoothness only (ablation)
    gamma: float = 2.2
    light_range: float = 1.0              # l_x, l_y ~ U(-range, range)
    shininess_exponents: tuple = (2, 8)   # alpha = 2^k, k ~ U{2..8}
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.ensemble < 1:
            raise ValueError(f"redepth: need steps >= 0 and ensemble >= 1, got {self.steps}, "
                             f"{self.ensemble}")
        if self.camera not in ("orthographic", "perspective"):
            raise ValueError(f"redepth.camera must be 'orthographic' or 'perspective', got "
                             f"{self.camera!r}")
        self.shininess_exponents = tuple(int(k) for k in self.shininess_exponents)


@dataclass
class RefinementResult:
    """Refined and original raw head outputs [H,W] at the network input size."""

    raw: np.ndarray                       # ensemble mean of the refined head outputs
    raw_initial: np.ndarray               # the unrefined head output
    runs: list = field(default_factory=list)   # per-run refined head outputs [H,W]
    losses: list = field(default_factory=list)  # per run: list of (sds, smoothness) per step
    seconds_per_step: float = float("nan")
    state_bytes: int = 0                  # parameters + gradients + AdamW moments optimised


def optimisation_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimised parameters, their gradients and the optimizer state."""
    total = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
    return total


class Refiner:
    """One optimisation run's state: embeddings, depth-scale offset, optimizer.

    ``step()`` does one update and returns (sds loss, smoothness loss).
    """

    def __init__(self, model: RefinableDepthModel, image: torch.Tensor, tokens: list,
                 text_embeddings: torch.Tensor | None, guidance, settings: RedepthSettings,
                 generator: torch.Generator, K: torch.Tensor | None = None):
        self.model, self.image, self.guidance, self.s = model, image, guidance, settings
        self.text_embeddings, self.generator, self.K = text_embeddings, generator, K
        if settings.sds_weight > 0 and (guidance is None or text_embeddings is None):
            raise ValueError("redepth: sds_weight > 0 needs a diffusion guidance and a prompt")
        H, W = image.shape[-2:]
        self.patch_hw = (H // 14, W // 14)
        # 1. Embeddings W: patch tokens of the four tapped layers
        self.cls = [t[:, :1].detach() for t in tokens]
        self.tokens = [torch.nn.Parameter(t[:, 1:].detach().clone()) for t in tokens]
        self.scale_offset = torch.nn.Parameter(torch.zeros((), dtype=image.dtype))
        # 2. Encoder frozen; DPT neck + head trainable
        model.net.backbone.requires_grad_(False)
        head = model.decoder_parameters()
        for p in head:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.tokens, "lr": settings.lr_embeddings},
             {"params": head, "lr": settings.lr_head},
             {"params": [self.scale_offset], "lr": settings.lr_scale}],
            weight_decay=settings.weight_decay)

    def raw(self) -> torch.Tensor:
        """Current head output [1,1,H,W]."""
        tokens = [torch.cat([c, t], 1) for c, t in zip(self.cls, self.tokens)]
        return self.model.decode(tokens, self.patch_hw)

    def render(self, raw: torch.Tensor):
        """(re-lit image [1,3,H,W], disparity [1,1,H,W]) for one random light."""
        disp = self.model.disparity(raw)
        scale = self.s.scale + torch.tanh(self.scale_offset)
        depth = disparity_to_depth(disp, self.s.shift, scale)
        normals = normals_from_depth(depth, self.s.camera, self.K)
        light = sample_lighting(self.generator, self.s.light_range, self.s.shininess_exponents,
                                dtype=raw.dtype)
        return relight(self.image, normals, light, self.s.gamma), disp

    def step(self) -> tuple[float, float]:
        self.optimizer.zero_grad(set_to_none=True)
        relit, disp = self.render(self.raw())
        smooth = laplacian_smoothness(disp)
        loss = self.s.smoothness_weight * smooth
        sds = torch.zeros(())
        if self.s.sds_weight > 0:
            sds, _ = self.guidance.loss(relit, self.text_embeddings, self.generator)
            loss = loss + self.s.sds_weight * sds
        loss.backward()
        self.optimizer.step()
        return float(sds.detach()), float(smooth.detach())


def refine_image(model: RefinableDepthModel, rgb: np.ndarray, size: tuple[int, int],
                 guidance=None, prompt: str | None = None, settings: RedepthSettings | None = None,
                 negative_prompt: str = "", K: np.ndarray | None = None,
                 progress=None) -> RefinementResult:
    """Refine the prediction for one [H,W,3] uint8 RGB image at network size (W, H).

    ``guidance``: an :class:`~.sds.SDSGuidance` (None only with ``sds_weight=0``);
    ``K``: pixel intrinsics of ``rgb`` for ``camera='perspective'`` (rescaled to the
    network size here). ``progress(run, step)`` is called after each step.
    """
    s = settings or RedepthSettings()
    # 1. Input and the frozen encoder's embeddings
    image, pixel_values = model.pixel_values(rgb, size)                   # [1,3,h,w] x2
    tokens = model.embeddings(pixel_values)
    K_net = None
    if s.camera == "perspective":
        if K is None:
            raise ValueError("redepth: camera='perspective' needs the intrinsics K")
        K_net = torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=image.dtype).clone()
        K_net[0] *= size[0] / rgb.shape[1]
        K_net[1] *= size[1] / rgb.shape[0]
    text = guidance.encode_prompt(prompt or "", negative_prompt) if guidance is not None else None
    original = model.decoder_state()
    flags = [p.requires_grad for p in model.net.parameters()]
    patch_hw = (size[1] // 14, size[0] // 14)
    with torch.no_grad():
        raw0 = model.decode(tokens, patch_hw)[0, 0].numpy().copy()
    # 2.-3. N runs from the original weights, then the mean
    runs, losses, step_times, state_bytes = [], [], [], 0
    try:
        for r in range(s.ensemble):
            model.load_decoder_state(original)
            gen = torch.Generator().manual_seed(s.seed * 1000 + r)
            refiner = Refiner(model, image, tokens, text, guidance, s, gen, K_net)
            run_losses = []
            for k in range(s.steps):
                t0 = time.perf_counter()
                run_losses.append(refiner.step())
                step_times.append(time.perf_counter() - t0)
                if progress is not None:
                    progress(r, k)
            state_bytes = max(state_bytes, optimisation_state_bytes(refiner.optimizer))
            with torch.no_grad():
                runs.append(refiner.raw()[0, 0].numpy().copy())
            losses.append(run_losses)
    finally:
        model.load_decoder_state(original)
        for p, flag in zip(model.net.parameters(), flags):
            p.requires_grad_(flag)
    return RefinementResult(raw=np.mean(runs, axis=0).astype(np.float32), raw_initial=raw0,
                            runs=runs, losses=losses,
                            seconds_per_step=float(np.mean(step_times)) if step_times else float("nan"),
                            state_bytes=state_bytes)
