"""Tiny random-weight versions of every GDT model, saved in the layout the hub uses.

For CPU checks, tests and the plumbing bench: the same loading code then runs on them
as on the real checkpoints (``from_pretrained(folder)`` with ``HF_HUB_OFFLINE=1``).
Nothing here is downloaded; the weights are random, so captions are token soup and
images are noise, but every shape, dtype, scheduler step and file format is real.

``save_tiny_models(root)`` writes::

    root/blip2/             Blip2ForConditionalGeneration + Blip2Processor (OPT text model)
    root/dpt/               DPTForDepthEstimation + DPTImageProcessor (MiDaS-style DPT)
    root/sd/                StableDiffusionPipeline folder: unet, vae, text_encoder,
                            tokenizer, scheduler, model_index.json (as SD 1.5)
    root/controlnet/        ControlNetModel (as lllyasviel/control_v11f1p_sd15_depth)
    root/ip_adapter/models/ ip-adapter_sd15.safetensors + image_encoder/ (as h94/IP-Adapter)

and returns the ``models`` section of a translate configuration pointing there.
"""
from __future__ import annotations

from pathlib import Path

#: UNet / ControlNet cross-attention width and the CLIP image embedding size of the tiny set
CROSS_DIM = 32
IMAGE_EMBED_DIM = 16
IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"


def _byte_vocab(word_end: str = "") -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    if word_end:
        for c in chars:
            vocab[c + word_end] = len(vocab)
    return vocab


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = _byte_vocab("</w>")
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=32)


def _gpt2_tokenizer():
    import json
    import tempfile

    from transformers import GPT2Tokenizer

    vocab = _byte_vocab()
    for special in ("</s>", "<pad>"):
        vocab[special] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return GPT2Tokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             bos_token="</s>", eos_token="</s>", unk_token="</s>",
                             pad_token="<pad>")


def save_tiny_blip2(folder: Path) -> Path:
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipImageProcessor, Blip2QFormerConfig, Blip2VisionConfig,
                              OPTConfig)

    num_query_tokens = 4
    tokenizer = _gpt2_tokenizer()
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
    model = Blip2ForConditionalGeneration(config).eval()
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
    model = DPTForDepthEstimation(config).eval()
    # transformers' N(0, 0.02) init leaves a deep DPT with ~1e-6 outputs: use PyTorch's
    # default layer init so the random model gives a usable, image-dependent map.
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(1.0)     # keep the final ReLU open: a map that varies with the image
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                      do_pad=False).save_pretrained(folder)
    return folder


def _tiny_unet_kwargs() -> dict:
    return dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=16,
                in_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                cross_attention_dim=CROSS_DIM, attention_head_dim=4, norm_num_groups=8)


def save_tiny_stable_diffusion(folder: Path) -> Path:
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    kw = _tiny_unet_kwargs()
    unet = UNet2DConditionModel(out_channels=4, up_block_types=("UpBlock2D",
                                                                "CrossAttnUpBlock2D"), **kw)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        latent_channels=4, norm_num_groups=8, sample_size=32)
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CROSS_DIM, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
        projection_dim=CROSS_DIM, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
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


def save_tiny_models(root: str | Path) -> dict:
    """Write every tiny model under ``root``; returns the ``models`` config section."""
    root = Path(root)
    save_tiny_blip2(root / "blip2")
    save_tiny_dpt(root / "dpt")
    save_tiny_stable_diffusion(root / "sd")
    save_tiny_controlnet(root / "controlnet")
    save_tiny_ip_adapter(root / "ip_adapter", root / "sd")
    return {"captioner": str(root / "blip2"), "depth": str(root / "dpt"),
            "stable_diffusion": str(root / "sd"), "controlnet": str(root / "controlnet"),
            "ip_adapter": str(root / "ip_adapter"), "ip_adapter_subfolder": "models",
            "ip_adapter_weight": IP_ADAPTER_WEIGHT}
