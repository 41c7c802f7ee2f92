"""``translate --config gdt --dry-run``: one GDT sample at full size, one stage at a time,
as a 24 GB GPU would have to run it (see :mod:`depth_perception_training.dry_run`).

The models are the recipe's architectures built from config objects with random
weights (no download), saved in the hub's layout to a work folder before a stage's
memory span, then loaded by the package's own classes inside it:

1. **caption** (BLIP-2 OPT-2.7B: ViT-g, Q-Former, OPT-2.7B, 3.7 B parameters) in the
   diffusion's precision (bf16 on this CPU for CUDA's fp16: 7.5 GB), built with its
   processor (224 px, 32 queries; a byte-level GPT-2 tokenizer stands in for OPT's, the
   compute does not depend on the words) and loaded by the package's
   :class:`~depth_perception_training.translate.caption.Captioner`: one greedy caption of
   the frame at its longest, ``caption.max_new_tokens`` tokens;
2. **control depth** (``models.depth``: DPT-Hybrid MiDaS; ``depth_anything_v2_*`` names
   a Depth Anything V2 instead) on the whole frame and the ``control_depth.grid`` tiles,
   through :class:`~depth_perception_training.translate.control_depth.ControlDepth`;
3. **diffusion**: :class:`~depth_perception_training.translate.gdt.GDTGenerator` (SD 1.5
   UNet, depth ControlNet, IP-Adapter with its ViT-H image encoder, CLIP text encoder,
   VAE) generating one condition. ``steps_run`` denoising steps run (the recipe's
   ``diffusion.steps`` by default); FLOPs and seconds of the remaining steps are those
   of the last step run, taken between two UNet calls, and the report says so.

The sample is one frame of ``frame_size`` (nuScenes' 1600x900 by default, SSD's data).
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from depth_perception_training.dry_run import (MemoryMeter, Stage, clock, combine_stages,
                                               count_flops, param_count,
                                               release_free_memory, timed)

logger = logging.getLogger(__name__)

#: the architectures behind the hub ids of the shipped GDT recipe
CAPTIONER_ID = "Salesforce/blip2-opt-2.7b"
SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, steps_offset=1, clip_sample=False,
                      set_alpha_to_one=False)
#: IP-Adapter SD 1.5: ViT-H/14 image encoder, 4 image tokens of 1024
IP_IMAGE_EMBED_DIM = 1024


def blip2_opt_2_7b_config():
    """Blip2Config of Salesforce/blip2-opt-2.7b (ViT-g/14, 32 queries, OPT-2.7B)."""
    from transformers import Blip2Config, OPTConfig

    text = OPTConfig(hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
                     num_attention_heads=32, word_embed_proj_dim=2560, vocab_size=50272,
                     max_position_embeddings=2048)
    return Blip2Config(text_config=text.to_dict(), num_query_tokens=32)


def counted_caption_stage(max_new_tokens: int, config=None, name: str = CAPTIONER_ID) -> Stage:
    """BLIP-2 (OPT-2.7B unless ``config``) on the meta device: parameters and FLOPs of one
    greedy caption, memory and time not measured (for a captioner in fp32, 15 GB: Re-Depth
    with ``guidance.half_precision`` off)."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config or blip2_opt_2_7b_config()).eval()
    model.requires_grad_(False)
    lm = model.language_model
    with count_flops() as c, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        size = model.config.vision_config.image_size
        image = model.vision_model(
            pixel_values=torch.empty(1, 3, size, size, device="meta")).last_hidden_state
        queries = model.qformer(query_embeds=model.query_tokens.expand(1, -1, -1),
                                encoder_hidden_states=image).last_hidden_state
        bos = torch.zeros(1, 1, dtype=torch.long, device="meta")
        embeds = torch.cat([model.language_projection(queries),
                            lm.get_input_embeddings()(bos)], 1)          # [1,33,2560]
        out = lm(inputs_embeds=embeds, use_cache=True)
        for _ in range(max(int(max_new_tokens) - 1, 0)):
            out = lm(input_ids=out.logits[:, -1:].argmax(-1),
                     past_key_values=out.past_key_values, use_cache=True)
    return Stage("caption", _blip2_params(model), c.total, None, None, [
        f"{name} built on the meta device ({param_count(model) / 1e9:.3f} B "
        "parameters): FLOPs of a greedy caption of "
        f"{max_new_tokens} tokens counted; memory and time not measured here (OPT-2.7B's "
        "BLIP-2 is 15 GB in fp32)"])


def _blip2_params(model) -> dict:
    return {"vision": param_count(model.vision_model), "qformer": param_count(model.qformer)
            + model.query_tokens.numel(), "language": param_count(model.language_model)
            + param_count(model.language_projection)}


def save_captioner(folder: Path, dtype) -> Path:
    """BLIP-2 OPT-2.7B's architecture with random weights in ``dtype`` and a processor
    (224 px, 32 queries, :func:`~depth_perception_training.tiny.byte_gpt2_tokenizer`),
    saved to ``folder``. Built directly in ``dtype``: no float32 copy is ever held."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from depth_perception_training.tiny import byte_gpt2_tokenizer

    config = blip2_opt_2_7b_config()
    tokenizer = byte_gpt2_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224},
                                                  image_mean=OPENAI_CLIP_MEAN,
                                                  image_std=OPENAI_CLIP_STD),
                               tokenizer, num_query_tokens=config.num_query_tokens)
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, key, getattr(tokenizer, key))
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = Blip2ForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    release_free_memory()
    return folder


def caption_stage(max_new_tokens: int, dtype, frame: np.ndarray, device, work: Path,
                  folder: Path | None = None, label: str | None = None) -> Stage:
    """Stage of one caption of ``frame`` by BLIP-2 OPT-2.7B's architecture (or ``folder``,
    a saved captioner) loaded in ``dtype`` by the package's captioner."""
    from depth_perception_training.translate.caption import Captioner

    folder = folder or save_captioner(work / "captioner", dtype)
    release_free_memory()
    with MemoryMeter(device) as meter:
        n = int(max_new_tokens)                  # the longest caption: random weights
        captioner = Captioner.from_pretrained(   # would otherwise stop at any early EOS
            str(folder), device, dtype, True, tidy=True, max_new_tokens=n, min_new_tokens=n)
        captioner.model.requires_grad_(False)
        with count_flops() as c, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, seconds, cpu = timed(device, lambda: captioner(frame))
    params = _blip2_params(captioner.model)
    del captioner
    release_free_memory()
    return Stage("caption", params, c.total, round(meter.peak_gb, 3), round(seconds, 3),
                 [f"{label or CAPTIONER_ID + ' architecture'}, random weights, "
                  f"{sum(params.values()) / 1e9:.3f} B parameters: one greedy caption of "
                  f"the frame at its longest ({n} new tokens, caption.max_new_tokens) in "
                  f"{str(dtype).replace('torch.', '')}"],
                 round(cpu, 3))


def save_control_depth(name: str, folder: Path) -> Path:
    """A random control depth model of ``name``'s architecture with its processor."""
    from depth_perception_training.translate.control_depth import control_depth_architecture

    model, processor = control_depth_architecture(name)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_dtype(name: str, device):
    """(torch dtype, label) the dry run runs a recipe's ``dtype`` setting at: as the
    recipe on CUDA; on the CPU, bf16 where CUDA would run fp16 (the same bytes per value;
    the CPU has no fast fp16 kernels), else as the recipe."""
    import torch

    from depth_perception_training.translate.models import select_dtype

    if device.type == "cuda":
        dtype = select_dtype(name, device)
        return dtype, str(dtype).replace("torch.", "")
    on_gpu = select_dtype(name, torch.device("cuda"))
    if on_gpu == torch.float16:
        return torch.bfloat16, "bf16 (the recipe's fp16 on CUDA: same bytes per value)"
    return on_gpu, str(on_gpu).replace("torch.", "")


def control_depth_stage(cfg, frame: np.ndarray, device, work: Path, folder: Path | None = None,
                        label: str | None = None):
    """(Stage, FusedDepth) of the control depth on ``frame``; ``folder``: a saved model to
    use instead of ``models.depth``'s architecture."""
    from depth_perception_training.translate.control_depth import (ControlDepth,
                                                                   RelativeDepthModel)

    folder = folder or save_control_depth(cfg.models.depth, work / "control_depth")
    dtype, _ = run_dtype(cfg.diffusion.dtype, device)
    release_free_memory()
    with MemoryMeter(device) as meter:
        estimator = RelativeDepthModel(str(folder), device, dtype, True)
        estimator.model.requires_grad_(False)
        cd = cfg.control_depth
        control = ControlDepth(estimator, cd.grid, cd.overlap, cd.batch_size)
        with count_flops() as c:
            fused, seconds, cpu = timed(device, lambda: control(frame))
    n = len(fused.boxes)
    stage = Stage("control_depth", {"depth": param_count(estimator.model)}, c.total,
                  round(meter.peak_gb, 3), round(seconds, 3),
                  [f"{label or cfg.models.depth + ' architecture'}, random weights: the "
                   f"frame and {n} tiles ({cd.grid[0]}x{cd.grid[1]} grid)"], round(cpu, 3))
    return stage, fused


def sd15_components():
    """(vae, unet, text encoder, tokenizer, scheduler) of Stable Diffusion 1.5's
    architecture with random weights (the tokenizer byte-level: the text encoder's
    compute does not depend on its vocabulary)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from depth_perception_training.tiny import byte_clip_tokenizer

    tokenizer = byte_clip_tokenizer(max_length=77)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=768, bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
        pad_token_id=len(tokenizer) - 1))
    return (AutoencoderKL(**SD15_VAE), UNet2DConditionModel(**SD15_UNET), text, tokenizer,
            DDIMScheduler(**SD15_SCHEDULER))


def save_diffusion_models(root: Path) -> dict:
    """SD 1.5, its depth ControlNet and the SD 1.5 IP-Adapter (ViT-H image encoder) with
    random weights, in the hub layouts the recipe's ids have; returns the ``models``
    overrides pointing at them."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionPipeline
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vae, unet, text, tokenizer, scheduler = sd15_components()
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(root / "sd")
    del text, vae
    ControlNetModel.from_unet(unet).save_pretrained(root / "controlnet")
    # IP-Adapter: image projection + per cross-attention layer to_k_ip / to_v_ip
    models = root / "ip_adapter" / "models"
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=IP_IMAGE_EMBED_DIM,
        hidden_act="gelu")).save_pretrained(models / "image_encoder")
    proj = ImageProjection(cross_attention_dim=768, image_embed_dim=IP_IMAGE_EMBED_DIM,
                           num_image_text_embeds=4)
    state = {f"image_proj.{k.replace('image_embeds', 'proj')}": v.contiguous()
             for k, v in proj.state_dict().items()}
    modules = dict(unet.named_modules())
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    for j, name in enumerate(cross):
        to_k = modules[name[:-len(".processor")]].to_k.weight       # [inner, 768]
        for key in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * j + 1}.{key}.weight"] = torch.randn(to_k.shape) * 0.02
    save_file(state, str(models / "ip-adapter_sd15.safetensors"))
    return {"stable_diffusion": str(root / "sd"), "controlnet": str(root / "controlnet"),
            "ip_adapter": str(root / "ip_adapter"), "ip_adapter_subfolder": "models",
            "ip_adapter_weight": "ip-adapter_sd15.safetensors",
            "image_encoder_folder": "image_encoder", "local_files_only": True}


def diffusion_stage(cfg, control: np.ndarray, device, work: Path, steps_run: int | None,
                    folders: dict | None = None) -> Stage:
    """Stage of one generation; ``folders``: saved models (``models`` overrides) to use
    instead of the full-size architectures."""
    from dataclasses import replace

    from depth_perception_training.translate.gdt import GDTGenerator, generation_size

    models = replace(cfg.models, **(folders or save_diffusion_models(work / "diffusion")))
    steps = int(cfg.diffusion.steps)
    run = min(int(steps_run or steps), steps)
    if run < 2 and steps > 1:
        raise ValueError("dry run: diffusion needs at least 2 steps run to measure one "
                         "denoising step")
    diffusion = replace(cfg.diffusion, steps=run, cpu_offload=False)
    dtype, _ = run_dtype(cfg.diffusion.dtype, device)
    release_free_memory()
    marks = []                          # (FLOPs so far, wall, CPU time) at each UNet call
    with MemoryMeter(device) as meter:
        generator = GDTGenerator(models, diffusion, device, dtype)
        pipe = generator.pipe
        pipe_params = {k: param_count(getattr(pipe, k)) for k in
                       ("unet", "controlnet", "text_encoder", "vae", "image_encoder")}
        style = np.full((224, 224, 3), 90, np.uint8)
        with count_flops() as c:
            pipe.unet.register_forward_pre_hook(
                lambda m, a: marks.append((c.mode.get_total_flops(), *clock())))
            _, seconds, cpu = timed(device, lambda: generator(control, "at night, a street",
                                                         style, 0))
    step_flops = marks[-1][0] - marks[-2][0] if len(marks) > 1 else 0
    step_seconds = marks[-1][1] - marks[-2][1] if len(marks) > 1 else 0.0
    step_cpu = marks[-1][2] - marks[-2][2] if len(marks) > 1 else 0.0
    flops = c.total + (steps - run) * step_flops
    seconds = seconds + (steps - run) * step_seconds
    cpu = cpu + (steps - run) * step_cpu
    H, W = control.shape[:2]
    notes = [f"generation at {'x'.join(map(str, generation_size(W, H, cfg.diffusion.resolution)))}"
             f" with classifier-free guidance, {steps} steps"]
    if run < steps:
        notes.append(f"{run} of {steps} denoising steps run; the other {steps - run} counted "
                     f"as the last one run ({step_flops / 1e12:.2f} TFLOPs, "
                     f"{step_seconds:.1f} s here)")
    return Stage("diffusion", pipe_params, int(flops), round(meter.peak_gb, 3),
                 round(seconds, 3), notes, round(cpu, 3))


def tiny_models(work: Path) -> dict:
    """``models.tiny``: the tiny translation set (tiny.py) instead of the full-size one."""
    from depth_perception_training.tiny import save_tiny_translation_models

    return {"models": save_tiny_translation_models(work / "tiny_models")}


def dry_run_translate(cfg, recipe: str, frame_size=(1600, 900), steps_run: int | None = None,
                      work: str | Path | None = None):
    """DryRunReport of one translated sample of the GDT config ``cfg`` (dataclass)."""
    import torch

    if cfg.translator != "gdt":
        raise ValueError(f"--dry-run measures the GDT models; {recipe} uses translator "
                         f"'{cfg.translator}', which runs no network")
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu")
    W, H = int(frame_size[0]), int(frame_size[1])
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="dry_run_translate_") as tmp:
        work = Path(work or tmp)
        tiny = tiny_models(work) if cfg.models.tiny else None
        stages = []
        if cfg.caption.enabled:
            stages.append(caption_stage(cfg.caption.max_new_tokens,
                                        run_dtype(cfg.diffusion.dtype, device)[0], frame,
                                        device, work, tiny and Path(tiny["models"]["captioner"]),
                                        tiny and "tiny BLIP-2"))
        cd_stage, fused = control_depth_stage(cfg, frame, device, work,
                                              tiny and Path(tiny["models"]["depth"]),
                                              tiny and "tiny DPT")
        stages.append(cd_stage)
        from depth_perception_training.translate.control_depth import control_image

        folders = None
        if tiny:
            folders = {k: v for k, v in tiny["models"].items()
                       if k not in ("captioner", "depth")} | {"local_files_only": True}
        stages.append(diffusion_stage(cfg, control_image(fused.fused), device, work,
                                      steps_run, folders))
    label = run_dtype(cfg.diffusion.dtype, device)[1]
    return combine_stages(Path(recipe).stem, stages, {"frame": [W, H]}, 1, device,
                          MemoryMeter(device, label.split(" ")[0]).method, label,
                          notes=["one frame, one condition; each stage's models loaded "
                                 "alone, freed before the next",
                                 "random weights at the recipe's architectures"])
