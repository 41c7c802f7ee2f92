"""Score distillation sampling (SDS) with a Stable Diffusion pipeline, and prompts.

:class:`SDSGuidance` holds the frozen VAE, UNet, text encoder, tokenizer and noise
schedule of a Stable Diffusion 1.x pipeline (``from_pretrained`` of a hub id such as
``stable-diffusion-v1-5/stable-diffusion-v1-5`` or of a local ``save_pretrained``
folder). :meth:`SDSGuidance.loss` follows Re-Depth Anything / DreamFusion:

1. the image [B,3,H,W] in [0,1] is resized (aspect kept) and zero-padded to the
   square ``resolution`` (512 for SD 1.5: UNet sample size x VAE factor);
2. latents z = VAE.encode(2x - 1).sample() * scaling_factor (0.18215 for SD 1.5);
3. t ~ U{t_min * T .. t_max * T} (20..600 of 1000), z_t = add_noise(z, eps, t);
4. eps_hat = eps_u + g (eps_c - eps_u) (classifier-free guidance, g = 50, empty
   negative prompt), no gradient through the UNet;
5. loss = 0.5 * mean((z - stopgrad(z - w(t) (eps_hat - eps)))^2), w(t) = 1, whose
   gradient with respect to z is w(t) (eps_hat - eps) / numel (Eq. 1).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from depth_perception.hub import load_pretrained

log = logging.getLogger(__name__)

__all__ = ["SDSGuidance", "pad_to_square"]


def pad_to_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,size,size]: bilinear resize of the longer side to ``size``,
    then centred zero padding."""
    _, _, h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (size - nh) // 2, (size - nw) // 2
    return F.pad(resized, (left, size - nw - left, top, size - nh - top), value=0.0)


class SDSGuidance(nn.Module):
    """Frozen Stable Diffusion parts that score an image (see the module doc)."""

    def __init__(self, vae, unet, text_encoder, tokenizer, scheduler,
                 guidance_scale: float = 50.0, t_range: tuple[float, float] = (0.02, 0.6),
                 resolution: int | None = None, weighting: str = "uniform"):
        super().__init__()
        if weighting not in ("uniform", "sds"):
            raise ValueError(f"SDSGuidance: weighting must be 'uniform' (w=1) or 'sds' "
                             f"(w=1-alpha_bar), got {weighting!r}")
        if not 0 <= t_range[0] <= t_range[1] <= 1:
            raise ValueError(f"SDSGuidance: t_range must be 0 <= lo <= hi <= 1, got {t_range}")
        self.vae, self.unet, self.text_encoder = vae, unet, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        for module in (vae, unet, text_encoder):
            module.requires_grad_(False).eval()
        self.guidance_scale = float(guidance_scale)
        self.weighting = weighting
        T = int(scheduler.config.num_train_timesteps)
        self.t_min, self.t_max = int(T * t_range[0]), int(T * t_range[1])
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution = int(resolution or unet.config.sample_size * factor)
        self.scaling_factor = float(vae.config.scaling_factor)

    @classmethod
    def from_pretrained(cls, name_or_path: str, local_files_only: bool | None = None,
                        dtype: torch.dtype = torch.float32, device: str = "cpu", **kwargs):
        """Components of a Stable Diffusion pipeline (hub id or local folder)."""
        from diffusers import StableDiffusionPipeline
        pipe = load_pretrained(StableDiffusionPipeline.from_pretrained, name_or_path,
                               "Stable Diffusion pipeline", local_files_only, dtype=dtype,
                               safety_checker=None, feature_extractor=None,
                               requires_safety_checker=False)
        guidance = cls(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler,
                       **kwargs)
        return guidance.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> torch.Tensor:
        """Text embeddings [2,L,C]: (negative/unconditional, conditional)."""
        tok = self.tokenizer([negative_prompt, prompt], padding="max_length",
                             max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    def latents(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """image [B,3,H,W] in [0,1] -> scaled latents [B,4,h,w] (differentiable)."""
        x = pad_to_square(image, self.resolution)
        dtype = next(self.vae.parameters()).dtype
        posterior = self.vae.encode((x * 2.0 - 1.0).to(dtype)).latent_dist
        return posterior.sample(generator).to(image.dtype) * self.scaling_factor

    def loss(self, image: torch.Tensor, text_embeddings: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """SDS loss of ``image`` [B,3,H,W] in [0,1] under ``text_embeddings`` [2,L,C].

        Returns (scalar loss, {"t": timestep, "grad_norm": |w (eps_hat - eps)|}).
        """
        # 1.-2. Latents of the padded image: [B,4,h,w]
        z = self.latents(image, generator)
        B = z.shape[0]
        # 3. Noise level and noisy latents
        t = torch.randint(self.t_min, self.t_max + 1, (B,), generator=generator).to(z.device)
        eps = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        with torch.no_grad():
            z_t = self.scheduler.add_noise(z.detach(), eps, t)
            # 4. Classifier-free guidance: UNet on [uncond x B, cond x B]
            dtype = next(self.unet.parameters()).dtype
            emb = text_embeddings.to(dtype).repeat_interleave(B, 0)            # [2B,L,C]
            eps_pred = self.unet(torch.cat([z_t, z_t]).to(dtype), torch.cat([t, t]),
                                 encoder_hidden_states=emb).sample.to(z.dtype)
            eps_u, eps_c = eps_pred.chunk(2)
            eps_hat = eps_u + self.guidance_scale * (eps_c - eps_u)
            w = 1.0
            if self.weighting == "sds":
                alpha_bar = self.scheduler.alphas_cumprod.to(z.device)[t].view(-1, 1, 1, 1)
                w = (1.0 - alpha_bar).to(z.dtype)
            grad = torch.nan_to_num(w * (eps_hat - eps))
        # 5. Loss whose gradient in z is grad / numel
        target = (z - grad).detach()
        loss = 0.5 * F.mse_loss(z, target)
        return loss, {"t": int(t[0]), "grad_norm": float(grad.norm())}
