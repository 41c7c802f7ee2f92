"""GDT image generation (SSD Eq. 3): ``I_g = SD(IP(T_p, I_p), CN(D_h), z)``.

Stable Diffusion 1.5 with a depth ControlNet (v1.1) and an IP-Adapter, all from
diffusers: the text prompt ``T_p`` (condition prefix + BLIP-2 caption) keeps the
content, the image prompt ``I_p`` (a real frame of the target condition) brings its
look, the ControlNet on the high-resolution control depth ``D_h`` keeps the geometry,
and ``z`` is the seeded latent noise (a CPU ``torch.Generator``, so a seed gives the
same image on any device for a given precision).

The frame is generated at ``diffusion.resolution`` on its short side (rounded to a
multiple of 64, aspect ratio kept) and resized back to the frame's own size, so the
camera's K and the source depth hold for the output.
"""
from __future__ import annotations

import logging

import numpy as np

from depth_perception.hub import load_pretrained

log = logging.getLogger(__name__)


def generation_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(w, h) with the short side near ``resolution``, both multiples of 64."""
    scale = resolution / min(width, height)
    return (max(64, int(round(width * scale / 64)) * 64),
            max(64, int(round(height * scale / 64)) * 64))


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrink = width < rgb.shape[1]
    return cv2.resize(rgb, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _scheduler(pipe, name: str):
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or "Scheduler" not in name:
        raise ValueError(f"diffusion.scheduler '{name}' is not a diffusers scheduler class "
                         "(e.g. UniPCMultistepScheduler, DDIMScheduler, "
                         "DPMSolverMultistepScheduler, EulerDiscreteScheduler)")
    return cls.from_config(pipe.scheduler.config)


class GDTGenerator:
    """``GDTGenerator(models, diffusion, device, dtype)(control, prompt, style, seed)``.

    Args:
        models: ``ModelsConfig`` (ids of stable_diffusion, controlnet, ip_adapter).
        diffusion: ``DiffusionConfig`` (steps, scales, scheduler, offload).
    """

    def __init__(self, models, diffusion, device, dtype):
        import torch
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        if diffusion.cpu_offload and device.type != "cuda":
            raise ValueError("diffusion.cpu_offload needs a CUDA device (it moves models "
                             "between the GPU and the CPU); set it to false on the CPU")
        self.cfg = diffusion
        lfo = models.local_files_only
        controlnet = load_pretrained(ControlNetModel.from_pretrained, models.controlnet,
                                     "depth ControlNet", lfo, dtype=dtype)
        pipe = load_pretrained(StableDiffusionControlNetPipeline.from_pretrained,
                               models.stable_diffusion, "Stable Diffusion pipeline", lfo,
                               controlnet=controlnet, dtype=dtype, safety_checker=None,
                               requires_safety_checker=False)
        pipe.scheduler = _scheduler(pipe, diffusion.scheduler)
        load_pretrained(
            lambda mid, local_files_only: pipe.load_ip_adapter(
                mid, subfolder=models.ip_adapter_subfolder, weight_name=models.ip_adapter_weight,
                image_encoder_folder=models.image_encoder_folder,
                local_files_only=local_files_only),
            models.ip_adapter, "IP-Adapter", lfo)
        pipe.set_ip_adapter_scale(diffusion.ip_adapter_scale)
        pipe.set_progress_bar_config(disable=True)
        if diffusion.cpu_offload:
            pipe.enable_model_cpu_offload(gpu_id=device.index or 0)
        else:
            pipe.to(device)
        self.pipe, self.device, self.dtype = pipe, device, dtype
        self._torch = torch

    def __call__(self, control: np.ndarray, prompt: str, style: np.ndarray,
                 seed: int) -> np.ndarray:
        """control [H,W,3] uint8 (ControlNet input), style [h,w,3] uint8 RGB -> [H,W,3]
        uint8 RGB at the control's size."""
        from PIL import Image

        H, W = control.shape[:2]
        gw, gh = generation_size(W, H, self.cfg.resolution)
        generator = self._torch.Generator(device="cpu").manual_seed(int(seed))
        out = self.pipe(
            prompt=prompt, negative_prompt=self.cfg.negative_prompt or None,
            image=Image.fromarray(resize(control, gw, gh)),
            ip_adapter_image=Image.fromarray(style),
            num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance_scale,
            controlnet_conditioning_scale=self.cfg.controlnet_scale,
            height=gh, width=gw, generator=generator, output_type="np",
        ).images[0]                                                     # [gh,gw,3] in [0,1]
        rgb = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return resize(rgb, W, H)
