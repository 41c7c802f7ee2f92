"""``refine --dry-run``: one refined (Re-Depth) or labelled (Marigold) image at full size
with random weights (see :mod:`depth_perception_training.dry_run`).

* ``redepth``: the BLIP-2 caption that makes the SDS prompt, in the guidance's precision
  (bf16 here where CUDA runs fp16), as in the GDT dry run; then the depth model (``--model``:
  a Depth Anything V2 hub id's architecture, Large by default, or a local folder),
  Stable Diffusion 1.5's guidance parts, and ``steps_run`` optimisation steps of one
  ensemble run through :func:`~depth_perception_training.refine.redepth.refine_image`.
  A sample is ``redepth.steps`` x ``redepth.ensemble`` steps: the report counts them
  as the last step run (FLOPs and seconds between two step ends) plus the set-up. The
  captioner stays loaded while refining: the report's peak is the two stages' sum.
* ``marigold``: the Marigold v1-1 pipeline (SD 2 UNet with an 8-channel input, VAE,
  OpenCLIP ViT-H text encoder) in
  :class:`~depth_perception_training.refine.marigold.MarigoldTeacher`, one ensemble
  member measured; the ``marigold.ensemble`` members of a sample each encode, denoise
  and decode on their own, so the sample is that times the ensemble.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from depth_perception_training.dry_run import (MemoryMeter, Stage, clock, combine_stages,
                                               count_flops, param_count,
                                               release_free_memory, timed)

DEFAULT_REDEPTH_MODEL = "depth-anything/Depth-Anything-V2-Large-hf"


def sd2_components(in_channels: int = 4) -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler_config of Stable Diffusion 2's
    architecture (768 px, v-prediction), random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from depth_perception_training.dry_run_translate import SD15_SCHEDULER, SD15_VAE
    from depth_perception_training.tiny import byte_clip_tokenizer

    tokenizer = byte_clip_tokenizer(max_length=77)
    unet = UNet2DConditionModel(sample_size=96, in_channels=in_channels, out_channels=4,
                                cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
        projection_dim=512, bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
        pad_token_id=len(tokenizer) - 1))
    scheduler = DDIMScheduler(**{**SD15_SCHEDULER, "prediction_type": "v_prediction"})
    return {"unet": unet, "vae": AutoencoderKL(**SD15_VAE), "text_encoder": text,
            "tokenizer": tokenizer, "scheduler_config": scheduler.config}


def marigold_v1_1_pipeline():
    """MarigoldDepthPipeline of prs-eth/marigold-depth-v1-1's architecture, random."""
    from diffusers import DDIMScheduler, MarigoldDepthPipeline

    parts = sd2_components(in_channels=8)
    scheduler = DDIMScheduler.from_config(parts["scheduler_config"],
                                          timestep_spacing="trailing")
    return MarigoldDepthPipeline(unet=parts["unet"], vae=parts["vae"], scheduler=scheduler,
                                 text_encoder=parts["text_encoder"],
                                 tokenizer=parts["tokenizer"],
                                 prediction_type="depth", scale_invariant=True,
                                 shift_invariant=True, default_denoising_steps=4,
                                 default_processing_resolution=768)


def marigold_stage(cfg, frame: np.ndarray, device) -> Stage:
    from depth_perception_training.refine.marigold import MarigoldTeacher

    m = cfg.marigold
    release_free_memory()
    with MemoryMeter(device) as meter:
        pipe = marigold_v1_1_pipeline().to(device)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
        teacher = MarigoldTeacher(pipe, ensemble=1, steps=m.steps,
                                  processing_resolution=m.processing_resolution,
                                  seed=cfg.seed, reduction=m.reduction)
        with count_flops() as c:
            _, seconds, cpu = timed(device, lambda: teacher.predict(frame))
    n = int(m.ensemble)
    params = {k: param_count(getattr(pipe, k)) for k in ("unet", "vae", "text_encoder")}
    steps = m.steps or pipe.default_denoising_steps
    return Stage("marigold", params, c.total * n, round(meter.peak_gb, 3),
                 round(seconds * n, 3),
                 [f"{m.model} architecture, random weights; processing resolution "
                  f"{m.processing_resolution}, {steps} steps; 1 of {n} ensemble members run, "
                  f"FLOPs and seconds x{n} (each member encodes, denoises and decodes)"],
                 round(cpu * n, 3))


def redepth_stage(cfg, frame: np.ndarray, device, model: str | None, work: Path,
                  steps_run: int | None) -> Stage:
    from depth_perception_training.dry_run_translate import run_dtype, sd15_components
    from depth_perception_training.refine.model import load_refinable, network_size
    from depth_perception_training.refine.redepth import RedepthSettings, refine_image
    from depth_perception_training.refine.sds import SDSGuidance
    from depth_perception_training.translate.control_depth import control_depth_architecture

    r, g = cfg.redepth, cfg.guidance
    name = model or DEFAULT_REDEPTH_MODEL
    folder = Path(name)
    if not folder.is_dir():
        net, processor = control_depth_architecture(name)
        folder = work / "depth_model"
        net.save_pretrained(folder)
        processor.save_pretrained(folder)
        del net
    steps, ensemble = int(r.steps), int(r.ensemble)
    run = min(int(steps_run or steps), steps)
    if run < 2 and steps > 1:
        raise ValueError("dry run: redepth needs at least 2 steps run to measure one step")
    fields = {k: getattr(r, k) for k in RedepthSettings.__dataclass_fields__
              if k not in ("seed", "steps", "ensemble")}
    settings = RedepthSettings(**fields, steps=run, ensemble=1, seed=cfg.seed)
    H, W = frame.shape[:2]
    size = network_size(W, H, r.short_side, r.size)
    marks = []
    # SD in fp16 on CUDA when guidance.half_precision (bf16 here: the same bytes)
    sd_dtype = run_dtype("fp16" if g.half_precision else "fp32", device)[0]
    release_free_memory()
    with MemoryMeter(device) as meter:
        depth = load_refinable(str(folder), str(device))
        guidance = None
        if r.sds_weight > 0:
            vae, unet, text, tokenizer, scheduler = sd15_components()
            guidance = SDSGuidance(vae, unet, text, tokenizer, scheduler,
                                   guidance_scale=g.guidance_scale, t_range=tuple(g.t_range),
                                   resolution=g.resolution, weighting=g.weighting).to(
                                       device, sd_dtype)
        with count_flops() as c:
            _, seconds, cpu = timed(device, lambda: refine_image(
                depth, frame, size, guidance, "a street scene", settings,
                g.negative_prompt, None,
                progress=lambda run_, k: marks.append((c.mode.get_total_flops(), *clock()))))
    step_flops = marks[-1][0] - marks[-2][0]
    step_seconds = marks[-1][1] - marks[-2][1]
    step_cpu = marks[-1][2] - marks[-2][2]
    extra = steps * ensemble - run
    params = {"depth": param_count(depth.net)}
    if guidance is not None:
        params.update({k: param_count(getattr(guidance, k))
                       for k in ("unet", "vae", "text_encoder")})
    return Stage("redepth", params, int(c.total + extra * step_flops), round(meter.peak_gb, 3),
                 round(seconds + extra * step_seconds, 3),
                 [f"{'model folder ' + name if Path(name).is_dir() else name + ' architecture'}"
                  f", random weights, at {size[0]}x{size[1]}; "
                  f"{f'SD 1.5 guidance in {sd_dtype}' if guidance else 'no SDS (sds_weight 0)'}; "
                  f"{run} of {steps} x {ensemble} steps run, the rest counted as "
                  f"the last one run ({step_flops / 1e12:.3f} TFLOPs, {step_seconds:.2f} s "
                  "here)"], round(cpu + extra * step_cpu, 3))


def dry_run_refine(cfg, recipe: str, model: str | None = None, frame_size=(1600, 900),
                   steps_run: int | None = None, work: str | Path | None = None):
    """DryRunReport of one refined image of the refine config ``cfg``."""
    import torch

    device = torch.device(cfg.device if str(cfg.device).startswith("cuda")
                          and torch.cuda.is_available() else "cpu")
    W, H = int(frame_size[0]), int(frame_size[1])
    frame = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    stages = []
    with tempfile.TemporaryDirectory(prefix="dry_run_refine_") as tmp:
        if cfg.method == "marigold":
            stages.append(marigold_stage(cfg, frame, device))
        else:
            if cfg.redepth.sds_weight > 0 and not cfg.caption.prompt:
                stages.append(redepth_caption_stage(cfg, frame, device, Path(work or tmp)))
            stages.append(redepth_stage(cfg, frame, device, model, Path(work or tmp),
                                        steps_run))
    dtype = ("fp32 (redepth: the SD guidance and the BLIP-2 captioner in bf16 where CUDA "
             "runs them in fp16)" if cfg.method == "redepth" and cfg.guidance.half_precision
             else "fp32")
    return combine_stages(Path(recipe).stem, stages, {"frame": [W, H]}, 1, device,
                          MemoryMeter(device, dtype.split(" ")[0]).method, dtype,
                          notes=["one image; random weights at the recipe's architectures"],
                          resident=True)     # the captioner stays loaded while refining


def redepth_caption_stage(cfg, frame: np.ndarray, device, work: Path):
    """The SDS prompt's BLIP-2 caption: measured in the guidance's half precision (bf16
    on the CPU where CUDA runs fp16: 7.5 GB), counted on the meta device in fp32 (15 GB,
    more than this machine may hold for a check)."""
    from depth_perception_training.dry_run_translate import (caption_stage,
                                                             counted_caption_stage, run_dtype)

    name = str(cfg.caption.model)
    local = Path(name).is_dir()              # a saved captioner: run as it is
    if not (cfg.guidance.half_precision or local):
        return counted_caption_stage(cfg.caption.max_new_tokens, name=name)
    dtype, _ = run_dtype("fp16" if cfg.guidance.half_precision else "fp32", device)
    return caption_stage(cfg.caption.max_new_tokens, dtype, frame, device, work,
                         Path(name) if local else None,
                         f"model folder {name}" if local else f"{name} architecture")
