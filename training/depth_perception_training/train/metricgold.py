"""MetricGold: a latent diffusion UNet fine-tuned on log-scaled metric depth (``task: metricgold``).

MetricGold (seed 004) is Marigold's fine-tuning with metric depth in log space. The
steps and numbers are those of Marigold's reference trainer (prs-eth/Marigold
``src/trainer/marigold_depth_trainer.py``, ``config/train_marigold_depth.yaml``); the
depth encoding is MetricGold's:

1. the frozen VAE encodes the image (in [-1, 1]) to its posterior mean x the VAE's
   scaling factor (0.18215 for Stable Diffusion 2): the image latent [B,4,h,w];
2. the ground truth d (metres) becomes MetricGold's log depth
   n = 2 (ln d - ln d_min) / (ln d_max - ln d_min) - 1, clipped to [-1, 1], stacked to
   three channels and encoded the same way: the depth latent;
3. t ~ U{0 .. T-1} per sample; multi-resolution noise (strength 0.9, annealed by t / T);
   the DDPM scheduler of the checkpoint with ``rescale_betas_zero_snr`` and trailing
   timesteps adds it;
4. the UNet sees [image latent, noisy depth latent] (its ``conv_in`` widened from 4 to 8
   channels, the weights repeated and halved) and the empty-prompt text embedding;
5. the loss is the MSE to the scheduler's target (``v_prediction`` for SD 2, else noise
   or sample) over the latent cells whose VAE-factor x VAE-factor pixels all have ground
   truth (valid: finite, > 0 and <= d_max; sky, +inf in the synthetic ground truth, is
   masked as Marigold masks depth beyond its range).

Marigold's only augmentation, a horizontal flip with probability 0.5 of image and depth
together, is applied here. Optimisation (Marigold): Adam, lr 3e-5, per-update exponential
decay to 0.01 over 25000 updates after 100 warm-up updates, effective batch 32 (2 x 16
accumulated), 30000 updates. ``config/train/metricgold.yaml`` is that recipe,
``metricgold_tiny.yaml`` a random-weight copy that runs on a CPU in seconds.

Inference is diffusers' ``MarigoldDepthPipeline`` (DDIM over the trained scheduler's
config) with scale and shift invariance off; its output p in [0, 1] is the log depth
n = 2 p - 1, decoded to metres by :func:`~..refine.marigold.log_depth_denormalize`
(:class:`MetricGoldPredictor`). The exported folder holds the pipeline and
``metricgold.json`` with the log-depth range; ``depth-perception refine`` with
``method: metricgold`` writes its depth as pseudo-labels.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_perception_training.train.trainer import StepOutput

logger = logging.getLogger(__name__)

PIPELINE_DIR = "metricgold"
RANGE_FILE = "metricgold.json"


# -- the pieces of one step ----------------------------------------------------------------
def multi_res_noise(shape, strength, generator: torch.Generator | None = None) -> torch.Tensor:
    """Marigold's multi-resolution noise (``multi_res_noise_like``, "original" strategy):
    white noise plus up to 10 coarser noise layers, level i at a size divided by r_i^i
    (r_i ~ U[2, 4), applied to the previous level's size as the reference code does),
    weighted by ``strength``^i ([B] tensor or float), rescaled to unit std. [B,C,H,W]."""
    b, c, h, w = shape
    if torch.is_tensor(strength):
        strength = strength.reshape(-1, 1, 1, 1).float()
    noise = torch.randn(shape, generator=generator)
    for i in range(10):
        r = float(torch.rand(1, generator=generator)) * 2 + 2
        h, w = max(1, int(h / r ** i)), max(1, int(w / r ** i))
        coarse = torch.randn(b, c, h, w, generator=generator)
        noise = noise + F.interpolate(coarse, size=shape[2:], mode="bilinear") * strength ** i
        if h == 1 or w == 1:
            break
    return noise / noise.std()


def widen_conv_in(unet) -> None:
    """Marigold's 8-channel input: ``conv_in`` weights repeated for [image, depth] latents
    and halved (the activations keep their magnitude); config ``in_channels`` follows."""
    old = unet.conv_in
    if old.in_channels == 8:
        return
    if old.in_channels != 4:
        raise ValueError(f"metricgold: the UNet takes {old.in_channels} channels; expected 4 "
                         "(a Stable Diffusion UNet) or 8 (already widened)")
    new = torch.nn.Conv2d(8, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, 2, 1, 1) * 0.5)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=8)


def training_scheduler(scheduler_config):
    """The DDPM training scheduler of Marigold: the checkpoint's, with zero-terminal-SNR
    betas and trailing timesteps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config, rescale_betas_zero_snr=True,
                                     timestep_spacing="trailing")


def empty_text_embedding(tokenizer, text_encoder) -> torch.Tensor:
    """[1,L,D] embedding of the empty prompt (the UNet's only text condition)."""
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0]


class MetricGoldObjective:
    """``(models, batch) -> StepOutput``: the latent diffusion loss on log depth.

    models: ``{"unet": UNet2DConditionModel}`` (8 input channels); batch: ``image``
    [B,3,H,W] in [0, 1], ``gt_depth`` [B,1,H,W] metres (NaN none, +inf sky).
    """

    def __init__(self, vae, scheduler, text_embedding: torch.Tensor, min_depth: float,
                 max_depth: float, noise_strength: float = 0.9, annealed: bool = True,
                 flip_probability: float = 0.5):
        if not 0 < min_depth < max_depth:
            raise ValueError(f"metricgold: need 0 < min_depth < max_depth, got {min_depth}, "
                             f"{max_depth}")
        self.vae, self.scheduler = vae.requires_grad_(False).eval(), scheduler
        self.text_embedding = text_embedding.detach()
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.noise_strength, self.annealed = float(noise_strength), bool(annealed)
        self.flip_probability = float(flip_probability)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)      # pixels per cell

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1, 1] -> [B,4,h,w]: posterior mean x scaling factor."""
        return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    def log_depth(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,1,H,W] metres -> (n [B,1,H,W] in [-1, 1], valid [B,1,H,W] bool); pixels
        without a depth get n = 1 (far) and are not valid."""
        from depth_perception_training.refine.marigold import log_depth_normalize

        valid = torch.isfinite(depth) & (depth > 0) & (depth <= self.max_depth)
        d = torch.where(valid, depth, torch.full_like(depth, self.max_depth))
        d = d.clamp(self.min_depth, self.max_depth)
        return log_depth_normalize(d, self.min_depth, self.max_depth).clamp(-1, 1), valid

    def latents(self, image: torch.Tensor, depth: torch.Tensor):
        """(image latent, depth latent [B,4,h,w], valid cells [B,4,h,w] bool)."""
        n, valid = self.log_depth(depth)
        if (H := image.shape[-2]) % self.factor or image.shape[-1] % self.factor:
            raise ValueError(f"metricgold: frame size {image.shape[-1]}x{H} must be a multiple "
                             f"of the VAE factor {self.factor} (data.width / data.height)")
        with torch.no_grad():
            image_latent = self.encode(image * 2 - 1)
            depth_latent = self.encode(n.repeat(1, 3, 1, 1))
        cells = ~F.max_pool2d((~valid).float(), self.factor, self.factor).bool()
        return image_latent, depth_latent, cells.expand_as(depth_latent)

    def loss(self, unet, image_latent, depth_latent, cells, timesteps, noise) -> torch.Tensor:
        """Masked MSE of the UNet's prediction at ``timesteps`` with ``noise``."""
        noisy = self.scheduler.add_noise(depth_latent, noise, timesteps)
        text = self.text_embedding.to(image_latent).expand(len(image_latent), -1, -1)
        pred = unet(torch.cat([image_latent, noisy], 1), timesteps, text).sample
        kind = self.scheduler.config.prediction_type
        if kind == "v_prediction":
            target = self.scheduler.get_velocity(depth_latent, noise, timesteps)
        elif kind == "epsilon":
            target = noise
        elif kind == "sample":
            target = depth_latent
        else:
            raise ValueError(f"metricgold: unknown prediction type {kind!r}")
        if not cells.any():
            return pred.sum() * 0.0                       # no ground truth: no gradient
        return F.mse_loss(pred[cells].float(), target[cells].float())

    def __call__(self, models: dict, batch: dict) -> StepOutput:
        image, depth = batch["image"].float(), batch["gt_depth"].float()
        flip = (torch.rand(len(image)) < self.flip_probability).to(image.device)   # [B]
        if flip.any():
            image, depth = image.clone(), depth.clone()
            image[flip], depth[flip] = image[flip].flip(-1), depth[flip].flip(-1)
        image_latent, depth_latent, cells = self.latents(image, depth)
        T = self.scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, T, (len(image),), device=image_latent.device)
        strength = (self.noise_strength * timesteps.float().cpu() / T if self.annealed
                    else self.noise_strength)                       # the noise is drawn on CPU
        noise = multi_res_noise(depth_latent.shape, strength).to(depth_latent)
        loss = self.loss(models["unet"], image_latent, depth_latent, cells, timesteps, noise)
        return StepOutput(loss, {"valid_cells": cells.float().mean()})


# -- inference -----------------------------------------------------------------------------
class MetricGoldPredictor:
    """Metric depth from a MetricGold pipeline: ``MarigoldDepthPipeline`` output p in
    [0, 1] -> log depth 2 p - 1 -> metres over ``(min_depth, max_depth)``."""

    def __init__(self, pipeline, min_depth: float, max_depth: float, steps: int | None = None,
                 ensemble: int = 1, seed: int = 0):
        if ensemble < 1:
            raise ValueError(f"MetricGoldPredictor: ensemble must be >= 1, got {ensemble}")
        self.pipeline, self.steps, self.ensemble, self.seed = pipeline, steps, int(ensemble), seed
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", **kwargs) -> "MetricGoldPredictor":
        """A folder written by ``train metricgold`` (``model/``: the pipeline and
        ``metricgold.json``)."""
        from diffusers import MarigoldDepthPipeline

        folder = Path(folder)
        info_path = folder / RANGE_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{folder} is not a MetricGold model: {RANGE_FILE} is "
                                    "missing (train one with `depth-perception train "
                                    "metricgold`; its output_dir/model is the folder)")
        info = json.loads(info_path.read_text())
        pipe = MarigoldDepthPipeline.from_pretrained(str(folder), local_files_only=True)
        return cls(pipe.to(device), info["min_depth"], info["max_depth"], **kwargs)

    def predict_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0, 1] -> [B,1,H,W] metres (at the input size)."""
        from depth_perception_training.refine.marigold import log_depth_denormalize

        generator = torch.Generator().manual_seed(self.seed)
        out = self.pipeline(image.float().to(self.pipeline.device),
                            num_inference_steps=self.steps,
                            ensemble_size=self.ensemble, processing_resolution=0,
                            match_input_resolution=True, generator=generator,
                            output_type="pt")
        p = out.prediction.to(image.device)                               # [B,1,H,W]
        return log_depth_denormalize(2 * p - 1, self.min_depth, self.max_depth)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """[H,W,3] uint8 RGB -> [H,W] float32 metres."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"MetricGoldPredictor.predict: expected [H,W,3] uint8 RGB, got "
                             f"{rgb.shape} {rgb.dtype}")
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        return self.predict_tensor(x)[0, 0].numpy().astype(np.float32)


def build_pipeline(unet, vae, scheduler_config, text_encoder, tokenizer, steps: int):
    """The inference pipeline of the trained UNet (DDIM over the training scheduler)."""
    from diffusers import DDIMScheduler, MarigoldDepthPipeline

    return MarigoldDepthPipeline(
        unet=unet, vae=vae, scheduler=DDIMScheduler.from_config(scheduler_config),
        text_encoder=text_encoder, tokenizer=tokenizer, prediction_type="depth",
        scale_invariant=False, shift_invariant=False, default_denoising_steps=steps,
        default_processing_resolution=0)


# -- the task ------------------------------------------------------------------------------
def load_components(base: str, local_files_only: bool = False, seed: int = 0) -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler_config of a Stable Diffusion folder
    or hub id (``base``; Marigold starts from stable-diffusion-2), of a random-weight
    tiny copy (``base: tiny``), or Stable Diffusion 2's architecture with random weights
    (``base: random-sd2``, what ``--dry-run`` measures)."""
    if base == "tiny":
        from depth_perception_training.tiny import tiny_sd_components

        return tiny_sd_components(seed=seed)
    if base == "random-sd2":              # dry runs: the real architecture, no download
        from depth_perception_training.dry_run_refine import sd2_components

        return sd2_components()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from depth_perception.hub import load_pretrained

    def part(cls, sub):
        return load_pretrained(cls.from_pretrained, base, f"Stable Diffusion {sub}",
                               local_files_only, subfolder=sub)
    return {"unet": part(UNet2DConditionModel, "unet"), "vae": part(AutoencoderKL, "vae"),
            "text_encoder": part(CLIPTextModel, "text_encoder"),
            "tokenizer": part(CLIPTokenizer, "tokenizer"),
            "scheduler_config": part(DDPMScheduler, "scheduler").config}


def build_metricgold_trainer(cfg):
    """(Trainer, objective, components) of the metricgold task."""
    from depth_perception_training.train.config import to_yaml
    from depth_perception_training.train.teacher import build_datasets, start_run, training_prior
    from depth_perception_training.train.trainer import (Trainer, build_train_loader,
                                                         build_val_loader)

    # 1. Config, bags, seed; models: the UNet trains, VAE and text encoder stay frozen
    dcfg, cfg, train_bags, val_bags, out, accelerator = start_run(cfg, "metricgold")
    m = cfg.metricgold
    parts = load_components(m.base, m.local_files_only, cfg.seed)
    widen_conv_in(parts["unet"])
    scheduler = training_scheduler(parts["scheduler_config"])
    parts["text_encoder"].requires_grad_(False).eval().to(accelerator.device)   # validation
    objective = MetricGoldObjective(
        parts["vae"].to(accelerator.device), scheduler,
        empty_text_embedding(parts["tokenizer"], parts["text_encoder"]), m.min_depth,
        m.max_depth, m.noise_strength, m.noise_annealed, m.flip_probability)
    # 2. Data: frames with dense ground truth (the synthetic drives'), no context frames
    train_set, val_set = build_datasets(cfg, train_bags, val_bags)
    train_loader = build_train_loader(train_set, cfg.data.batch_size, seed=cfg.seed,
                                      num_workers=cfg.data.num_workers)
    val_loader = (build_val_loader(val_set, cfg.data.val_batch_size, cfg.data.num_workers)
                  if val_set is not None and len(val_set) else None)

    # 3. Validation (Marigold: one denoising step, no ensemble) and export
    def pipeline(models: dict):
        return build_pipeline(models["unet"], objective.vae, scheduler.config,
                              parts["text_encoder"], parts["tokenizer"], m.denoising_steps)

    def predict(models: dict, batch: dict) -> torch.Tensor:
        predictor = MetricGoldPredictor(pipeline(models), m.min_depth, m.max_depth,
                                        steps=m.val_denoising_steps, seed=cfg.seed)
        return predictor.predict_tensor(batch["image"])

    def export(models: dict, folder: Path) -> None:
        pipeline(models).save_pretrained(folder)
        (folder / RANGE_FILE).write_text(json.dumps(
            {"min_depth": m.min_depth, "max_depth": m.max_depth, "encoding": "log_depth",
             "base": m.base, "denoising_steps": m.denoising_steps}, indent=1))

    unet = parts["unet"]
    trainer = Trainer(cfg.trainer, cfg.optim, {"unet": unet},
                      [{"name": "unet", "params": list(unet.parameters()), "lr": m.lr}],
                      train_loader, objective, out, val_loader=val_loader,
                      predict_fn=predict if val_loader is not None else None,
                      export_fn=export, accelerator=accelerator, config_yaml=to_yaml(dcfg),
                      min_depth=m.min_depth, max_depth=cfg.trainer.val_max_depth,
                      prior=training_prior(cfg, train_bags) if val_loader is not None else None)
    return trainer, objective, parts


def train_metricgold(cfg):
    """Fine-tune; returns the :class:`~.trainer.TrainResult` (``export_dir``: the
    pipeline folder :meth:`MetricGoldPredictor.load` reads)."""
    trainer, _, _ = build_metricgold_trainer(cfg)
    return trainer.fit()
