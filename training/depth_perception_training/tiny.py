"""Tiny random-weight models built from configs, for tests, benches and CPU demos (and
two bench-sized ones: a ViT-S Depth Anything and a small U-Net).

Real transformers classes (a DINOv2 + DPT ``DepthAnythingForDepthEstimation`` with a
few thousand parameters), re-initialised so their outputs are O(1), saved with
``save_pretrained`` or exported to ONNX with :class:`ModelMetadata` inside, exactly as a
real model would be; the whole translation set (BLIP-2, DPT, SD 1.5, depth
ControlNet, IP-Adapter; :func:`save_tiny_translation_models`); and the refinement set
(:func:`tiny_stable_diffusion`, :func:`tiny_marigold`, :func:`tiny_blip2`). The
tokenizers are byte-level with no merges, built in memory. No weights are downloaded.

The one home of tiny models for tests, benches and CPU demos.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from depth_perception.metadata import ModelMetadata

TINY_MAX_DEPTH = 20


def _default_init(model):
    """PyTorch's default Conv/Linear init: transformers' N(0, 0.02) init leaves a deep
    DPT with ~1e-6 outputs; this gives O(1), image-dependent ones."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    return model


def _depth_anything(width: int, layers: int, heads: int, mlp: int, image_size: int,
                    neck: list[int], fusion: int, head: int, metric: bool, max_depth: int,
                    seed: int):
    """A DepthAnythingForDepthEstimation (DINOv2 backbone ``width`` wide, ``layers``
    deep, four stages evenly spaced), default-initialised from ``seed``, in eval mode."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    stages = [f"stage{layers * k // 4}" for k in range(1, 5)]
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=mlp, patch_size=14,
                            image_size=image_size, out_features=stages,
                            reshape_hidden_states=False)
    extra = ({"depth_estimation_type": "metric", "max_depth": int(max_depth)} if metric
             else {"depth_estimation_type": "relative"})
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=width,
                                 patch_size=14, neck_hidden_sizes=neck,
                                 reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=fusion,
                                 head_hidden_size=head, **extra)
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config)
    return _default_init(model).eval()


def tiny_depth_anything(metric: bool = True, max_depth: int = TINY_MAX_DEPTH, seed: int = 0):
    """A DepthAnythingForDepthEstimation with a 4-layer, 32-wide DINOv2 (eval mode)."""
    return _depth_anything(32, 4, 2, 64, 56, [8, 16, 32, 32], 16, 8, metric, max_depth, seed)


def save_tiny_depth_anything(folder, **kwargs) -> Path:
    """save_pretrained of :func:`tiny_depth_anything` into ``folder``."""
    folder = Path(folder)
    tiny_depth_anything(**kwargs).save_pretrained(folder)
    return folder


def export_depth_onnx(module, path, height: int, width: int, metadata: ModelMetadata,
                      input_name: str = "image", output_name: str = "depth",
                      dynamic_batch: bool = False) -> Path:
    """Export ``module`` (image [1,3,H,W] -> depth [1,1,H,W]) at one static size, with
    ``metadata`` stored in the file. Names in the graph are ``input_name``/``output_name``
    (the metadata is written as given, so tests can make them disagree).
    ``dynamic_batch``: the leading dimension is dynamic ([B,3,H,W] -> [B,1,H,W]), so the
    runtime can run frames of several cameras in one call."""
    import torch

    from depth_perception.runtime.onnx_metadata import write_onnx_metadata

    path = Path(path)
    x = torch.rand(1, 3, height, width)
    with warnings.catch_warnings():  # tracer warnings about shape-dependent Python code
        warnings.simplefilter("ignore")
        axes = ({input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch
                else None)
        torch.onnx.export(module.eval(), (x,), str(path), input_names=[input_name],
                          output_names=[output_name], opset_version=17, dynamo=False,
                          dynamic_axes=axes)
    write_onnx_metadata(path, metadata)
    return path


def tiny_depth_anything_onnx(path, height: int, width: int, metric: bool = True,
                             seed: int = 0, model=None, dynamic_batch: bool = False,
                             **metadata_overrides) -> Path:
    """The tiny Depth Anything (or ``model``, e.g. one loaded from a saved folder)
    exported to ONNX with matching metadata (input 'image', output 'depth', fixed
    height x width; batch 1, or dynamic with ``dynamic_batch``)."""
    from depth_perception.runtime.backends.torch_backend import transformers_depth_module

    model = model if model is not None else tiny_depth_anything(metric=metric, seed=seed)
    meta = dict(output_kind="metric_depth" if metric else "relative_disparity",
                input_height=height, input_width=width, max_depth=float(TINY_MAX_DEPTH),
                min_depth=0.1, input_name="image", output_name="depth",
                provenance={"source": "tiny_depth_anything", "seed": seed})
    meta.update(metadata_overrides)
    return export_depth_onnx(transformers_depth_module(model), path, height, width,
                             ModelMetadata(**meta), dynamic_batch=dynamic_batch)


# -- bench-sized models (random weights): speed and memory figures at realistic cost ----
def vit_s_depth_anything_onnx(path, height: int, width: int, dynamic_batch: bool = False,
                              seed: int = 0) -> Path:
    """A ViT-S sized Depth Anything (12 layers, 384 wide: 24.8 M backbone parameters,
    metric up to 80 m, random weights) exported to ONNX at ``height`` x ``width``
    (batch 1, or dynamic with ``dynamic_batch``) with its metadata."""
    from depth_perception.runtime.backends.torch_backend import transformers_depth_module

    model = _depth_anything(384, 12, 6, 1536, 518, [48, 96, 192, 384], 64, 32, True, 80,
                            seed)
    meta = ModelMetadata(output_kind="metric_depth", input_height=height, input_width=width,
                         min_depth=0.1, max_depth=80.0,
                         provenance={"source": "random ViT-S Depth Anything", "seed": seed})
    return export_depth_onnx(transformers_depth_module(model), path, height, width, meta,
                             dynamic_batch=dynamic_batch)


def unet_depth_module(seed: int = 0, widths: tuple[int, ...] = (32, 64, 128, 256)):
    """Convolutional encoder-decoder with skips: [B,3,H,W] -> sigmoid disparity
    [B,1,H,W] (H, W multiples of 2**(len(widths) - 1)); see :func:`unet_metadata`."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList()
            cin = 3
            for w in widths:
                self.down.append(block(cin, w))
                cin = w
            self.up = nn.ModuleList(block(widths[i] + widths[i + 1], widths[i])
                                    for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], 1, 3, padding=1)

        def forward(self, x):                                         # [B,3,H,W]
            skips = []
            for i, stage in enumerate(self.down):
                x = stage(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for i in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
                x = self.up[i](torch.cat([x, skips[i]], dim=1))
            return torch.sigmoid(self.head(x))                        # [B,1,H,W]

    return UNet()


def unet_metadata(height: int, width: int) -> ModelMetadata:
    """Metadata of :func:`unet_depth_module` at a fixed input size: disparity, 0.5-80 m."""
    return ModelMetadata(output_kind="disparity", input_height=height, input_width=width,
                         min_depth=0.5, max_depth=80.0, provenance={"source": "U-Net"})


# -- the GDT translation set (BLIP-2, DPT, SD 1.5, depth ControlNet, IP-Adapter) --------
#
# ``save_tiny_translation_models(root)`` writes each in the hub's layout::
#
#     root/blip2/             Blip2ForConditionalGeneration + Blip2Processor (OPT text model)
#     root/dpt/               DPTForDepthEstimation + DPTImageProcessor (MiDaS-style DPT)
#     root/sd/                StableDiffusionPipeline folder: unet, vae, text_encoder,
#                             tokenizer, scheduler, model_index.json (as SD 1.5)
#     root/controlnet/        ControlNetModel (as lllyasviel/control_v11f1p_sd15_depth)
#     root/ip_adapter/models/ ip-adapter_sd15.safetensors + image_encoder/ (as h94/IP-Adapter)
#
# and returns the ``models`` section of a translate configuration pointing there. The
# weights are random: captions are token soup and images noise, but every shape, dtype,
# scheduler step and file format is real, and the same loading code runs on them as on
# the real checkpoints (``from_pretrained(folder)`` with ``HF_HUB_OFFLINE=1``).

#: UNet / ControlNet cross-attention width and the CLIP image embedding size of the tiny set
CROSS_DIM = 32
IMAGE_EMBED_DIM = 16
IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"


def _byte_tokens(word_end: str, specials: tuple[str, ...]) -> dict:
    """Vocabulary of a byte-level BPE with no merges: one token per byte (and per byte +
    ``word_end`` when given), then ``specials``."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + ([c + word_end for c in chars] if word_end else []) + list(specials)
    return {t: i for i, t in enumerate(tokens)}


def byte_clip_tokenizer(max_length: int = 32):
    """CLIPTokenizer over single bytes (no merges), ``model_max_length`` tokens."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_tokens("</w>", ("<|startoftext|>", "<|endoftext|>")),
                         merges=[], model_max_length=max_length)


def byte_gpt2_tokenizer():
    """GPT2Tokenizer over single bytes (no merges); ``</s>`` begins, ends and is unknown."""
    import json
    import tempfile

    from transformers import GPT2Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps(_byte_tokens("", ("</s>", "<pad>"))))
        merges.write_text("#version: 0.2\n")
        return GPT2Tokenizer(str(vocab), str(merges), bos_token="</s>", eos_token="</s>",
                             unk_token="</s>", pad_token="<pad>")


def tiny_blip2(seed: int | None = None):
    """(Blip2Processor, Blip2ForConditionalGeneration in eval mode): 32x32 images, an OPT
    text model over :func:`byte_gpt2_tokenizer`. ``seed``: torch's seed first (None: the
    random state as it is)."""
    import torch
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipImageProcessor, Blip2QFormerConfig, Blip2VisionConfig,
                              OPTConfig)

    num_query_tokens = 4
    tokenizer = byte_gpt2_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer, num_query_tokens=num_query_tokens)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab_size = len(tokenizer)
    vision = Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, image_size=32, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, encoder_hidden_size=16,
                                 vocab_size=vocab_size)
    text = OPTConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                     ffn_dim=32, num_attention_heads=2, max_position_embeddings=64,
                     word_embed_proj_dim=16, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         text_config=text.to_dict(), num_query_tokens=num_query_tokens,
                         image_token_index=image_token_id)
    if seed is not None:
        torch.manual_seed(seed)
    return processor, Blip2ForConditionalGeneration(config).eval()


def save_tiny_blip2(folder: Path) -> Path:
    """save_pretrained of :func:`tiny_blip2` (model and processor) into ``folder``."""
    processor, model = tiny_blip2()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_dpt(folder: Path) -> Path:
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=32, image_size=32, patch_size=8,
                       backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
                       fusion_hidden_size=16, head_in_index=-1)
    model = _default_init(DPTForDepthEstimation(config)).eval()
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(1.0)     # keep the final ReLU open: a map that varies with the image
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                      do_pad=False).save_pretrained(folder)
    return folder


def _tiny_unet_kwargs() -> dict:
    return dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=16,
                in_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                cross_attention_dim=CROSS_DIM, attention_head_dim=4, norm_num_groups=8)


def save_tiny_stable_diffusion(folder: Path) -> Path:
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    kw = _tiny_unet_kwargs()
    # attention only at the coarser level: the pipeline's code paths, a fraction of the time
    unet = UNet2DConditionModel(out_channels=4, up_block_types=("CrossAttnUpBlock2D",
                                                                "UpBlock2D"), **kw)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        latent_channels=4, norm_num_groups=8, sample_size=32)
    tokenizer = byte_clip_tokenizer()
    text_encoder = tiny_text_encoder(len(tokenizer), CROSS_DIM, 32, seed=None, layers=1)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def save_tiny_controlnet(folder: Path) -> Path:
    from diffusers import ControlNetModel

    kw = _tiny_unet_kwargs()
    kw.pop("sample_size")
    ControlNetModel(conditioning_embedding_out_channels=(8, 16), **kw).save_pretrained(folder)
    return folder


def save_tiny_ip_adapter(root: Path, unet_folder: Path) -> Path:
    """``root/models/ip-adapter_sd15.safetensors`` + ``root/models/image_encoder``.

    The adapter's state dict has the layout of the released SD 1.5 IP-Adapter:
    ``image_proj.{proj,norm}.*`` (4 image tokens) and ``ip_adapter.<2j+1>.to_{k,v}_ip.weight``
    for the j-th cross-attention layer of the UNet, sized from that layer.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models = root / "models"
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=IMAGE_EMBED_DIM))
    encoder.save_pretrained(models / "image_encoder")
    proj = ImageProjection(cross_attention_dim=CROSS_DIM, image_embed_dim=IMAGE_EMBED_DIM,
                           num_image_text_embeds=4)
    state = {f"image_proj.{k.replace('image_embeds', 'proj')}": v.contiguous()
             for k, v in proj.state_dict().items()}
    unet = UNet2DConditionModel.from_pretrained(unet_folder, subfolder="unet")
    modules = dict(unet.named_modules())
    gen = torch.Generator().manual_seed(0)
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    for j, name in enumerate(cross):
        to_k = modules[name[:-len(".processor")]].to_k.weight       # [inner, cross_dim]
        for key in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * j + 1}.{key}.weight"] = (
                torch.randn(to_k.shape, generator=gen) * 0.1).contiguous()
    models.mkdir(parents=True, exist_ok=True)
    save_file(state, str(models / IP_ADAPTER_WEIGHT))
    return root


def save_tiny_translation_models(root: str | Path, seed: int = 0) -> dict:
    """Write every tiny model under ``root``; returns the ``models`` config section.

    The weights are a function of ``seed`` (same seed, same files' weights)."""
    import torch

    root = Path(root)
    torch.manual_seed(seed)
    save_tiny_blip2(root / "blip2")
    save_tiny_dpt(root / "dpt")
    save_tiny_stable_diffusion(root / "sd")
    save_tiny_controlnet(root / "controlnet")
    save_tiny_ip_adapter(root / "ip_adapter", root / "sd")
    return {"captioner": str(root / "blip2"), "depth": str(root / "dpt"),
            "stable_diffusion": str(root / "sd"), "controlnet": str(root / "controlnet"),
            "ip_adapter": str(root / "ip_adapter"), "ip_adapter_subfolder": "models",
            "ip_adapter_weight": IP_ADAPTER_WEIGHT}


# -- the refinement set (SDS guidance, Marigold teacher) ---------------------------------
def tiny_text_encoder(vocab_size: int, hidden: int = 32, max_positions: int = 32,
                      seed: int | None = 0, layers: int = 2):
    """CLIPTextModel for :func:`byte_clip_tokenizer` (its last two tokens begin and end).
    ``seed``: torch's seed first (None: the random state as it is)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    if seed is not None:
        torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=max_positions,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def tiny_vae(seed: int = 0):
    """AutoencoderKL with factor 2 (two blocks), 4 latent channels, no attention."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64,
                         mid_block_add_attention=False)


def _tiny_unet(in_channels: int, sample_size: int, cross_dim: int, seed: int,
               channels: tuple = (32, 64)):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4,
        block_out_channels=channels, layers_per_block=1, norm_num_groups=8,
        # attention only at the coarse level (full-resolution attention dominates CPU time)
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=8)


def tiny_stable_diffusion(image_size: int = 64, seed: int = 0, channels: tuple = (32, 64)):
    """A StableDiffusionPipeline (no safety checker) for ``image_size`` square images."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    tokenizer = byte_clip_tokenizer()
    vae = tiny_vae(seed)
    unet = _tiny_unet(4, image_size // 2, 32, seed, channels)
    text = tiny_text_encoder(len(tokenizer), 32, tokenizer.model_max_length, seed)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", steps_offset=1, clip_sample=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def tiny_marigold(image_size: int = 32, seed: int = 0):
    """A MarigoldDepthPipeline (UNet on [image latent, depth latent] = 8 channels)."""
    from diffusers import DDIMScheduler, MarigoldDepthPipeline

    tokenizer = byte_clip_tokenizer()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="v_prediction",
                              set_alpha_to_one=False, steps_offset=1, clip_sample=False,
                              timestep_spacing="trailing")
    return MarigoldDepthPipeline(
        unet=_tiny_unet(8, image_size // 2, 32, seed), vae=tiny_vae(seed), scheduler=scheduler,
        text_encoder=tiny_text_encoder(len(tokenizer), 32, tokenizer.model_max_length, seed),
        tokenizer=tokenizer, prediction_type="depth", scale_invariant=True, shift_invariant=True,
        default_denoising_steps=2, default_processing_resolution=image_size)


def tiny_sd_components(seed: int = 0) -> dict:
    """The parts of a tiny random-weight Stable Diffusion 2 (v-prediction DDPM, 4-channel
    UNet, factor-2 VAE, byte tokenizer): what ``train metricgold`` fine-tunes with
    ``metricgold.base: tiny``."""
    from diffusers import DDPMScheduler

    tokenizer = byte_clip_tokenizer()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="v_prediction",
                              steps_offset=1, clip_sample=False)
    return {"unet": _tiny_unet(4, 16, 32, seed), "vae": tiny_vae(seed),
            "text_encoder": tiny_text_encoder(len(tokenizer), 32, tokenizer.model_max_length,
                                              seed),
            "tokenizer": tokenizer, "scheduler_config": scheduler.config}
