"""Tiny diffusion and captioning models built from configs (random weights, CPU).

Real diffusers / transformers classes with a few hundred thousand parameters, for the
tests, the CPU bench (which fits :func:`tiny_stable_diffusion` on synthetic images) and
for trying the refinement pipeline where the real checkpoints cannot be downloaded.
They are not models of anything until trained. The tokenizers are byte-level with no
merges, built in memory (no files, no hub).
"""
from __future__ import annotations

import torch

__all__ = ["byte_clip_tokenizer", "tiny_text_encoder", "tiny_vae", "tiny_stable_diffusion",
           "tiny_marigold", "tiny_blip2"]


def _byte_vocab() -> dict:
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def byte_clip_tokenizer(max_length: int = 32):
    """CLIPTokenizer over single bytes (no merges), ``model_max_length`` tokens."""
    from transformers import CLIPTokenizer
    return CLIPTokenizer(vocab=_byte_vocab(), merges=[], model_max_length=max_length)


def tiny_text_encoder(vocab_size: int, hidden: int = 32, max_positions: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=max_positions,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def tiny_vae(seed: int = 0):
    """AutoencoderKL with factor 2 (two blocks), 4 latent channels, no attention."""
    from diffusers import AutoencoderKL
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64,
                         mid_block_add_attention=False)


def _tiny_unet(in_channels: int, sample_size: int, cross_dim: int, seed: int,
               channels: tuple = (32, 64)):
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


def tiny_blip2(seed: int = 0):
    """(Blip2Processor, Blip2ForConditionalGeneration) with a byte-level GPT-2 tokenizer."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipImageProcessor, GPT2Tokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    import json
    import tempfile
    from pathlib import Path

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = GPT2Tokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    num_query = 4
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, encoder_hidden_size=32, vocab_size=len(tokenizer)),
        text_config=dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=len(tokenizer), word_embed_proj_dim=32,
                         max_position_embeddings=64, bos_token_id=vocab["<|endoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        num_query_tokens=num_query, image_token_index=len(tokenizer) - 1)
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 28, "width": 28}),
                               tokenizer=tokenizer, num_query_tokens=num_query)
    return processor, model
