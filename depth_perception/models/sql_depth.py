"""Convolutional encoder-decoder + Self Query Layer (SQLdepth / SPIdepth depth network).

1. Encoder: a transformers ``ResNetModel`` (random from a preset, or ``from_pretrained``
   by hub id or local folder) run stage by stage, giving features at 1/2 (its own stem
   convolution), 1/4 .. 1/32; a ConvNeXt backbone gives 1/4 .. 1/32 and a stride-2
   convolution on the image stands in for the 1/2 skip.
2. U-Net decoder as SPIdepth's ``DecoderBN`` (Lavreniuk/SPIdepth
   ``networks/resnet_encoder.py``): a 1x1 convolution of the 1/32 features to F = 256
   channels (``decoder_features``, ``--num_features 256`` of its resnet_192x640
   configuration; the reference pads this 1x1 convolution by 1, which the next
   upsampling folds in, and so does this one), then four blocks of bilinear upsampling
   to the skip's size (align_corners=True), concatenation with the 1/16, 1/8, 1/4 and
   1/2 skip, and (3x3 conv + BatchNorm + LeakyReLU) twice, to F/2, F/4, F/8, F/16
   (128/64/32/16); a linear 3x3 convolution to ``S``: [B,E,H/2,W/2], E = 32 channels.
3. Self Query Layer: patch embedding (kernel = stride = ``patch_size``) + learned
   positional encoding -> transformer encoder (4 layers, 4 heads, FFN 1024); the first
   Q = 64 output tokens are the coarse queries. Self-cost volume V = Q . S [B,Q,h,w];
   per-query summaries softmax_pixels(V) . S [B,Q,E]; bins MLP (E*Q -> 16Q -> 256 ->
   n_bins, LeakyReLU); widths relu + 0.1 normalised to sum 1 and scaled to
   (max - min); cumulative sum -> bin centres in (min, max). Per pixel: softmax over
   bins of a 1x1 conv (Q -> n_bins) of V; depth = sum(prob * centre), upsampled
   (bilinear) to the input size. Depth is a convex combination of centres, so it stays
   inside [min_depth, max_depth].
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from depth_perception.models._deps import require_torch

require_torch(__name__)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from depth_perception.models.mono_depth import build_resnet, resnet_channels, resnet_features
from depth_perception.models.pose import BACKBONES, conv_backbone_config

logger = logging.getLogger(__name__)

STAGES = ["stage1", "stage2", "stage3", "stage4"]


@dataclass
class SQLDepthConfig:
    """encoder: resnet18 | resnet34 | resnet50 | convnext_tiny | tiny | slim18; pretrained: hub id or
    local folder of a 3-channel ResNet/ConvNeXt. Defaults follow SQLdepth (E=32, Q=64,
    4 layers x 4 heads, FFN 1024, patch 16, 256 bins)."""

    encoder: str = "resnet18"
    pretrained: str | None = None
    min_depth: float = 0.1
    max_depth: float = 80.0
    decoder_channels: int = 32        # E
    decoder_features: int = 256       # F: DecoderBN widths F/2 .. F/16 (128/64/32/16)
    num_queries: int = 64             # Q
    num_bins: int = 256
    patch_size: int = 16
    transformer_layers: int = 4
    transformer_heads: int = 4
    transformer_ffn: int = 1024
    transformer_dropout: float = 0.1
    max_tokens: int = 1024            # size of the learned positional encoding
    local_files_only: bool = False

    def __post_init__(self):
        if self.encoder not in BACKBONES:
            raise ValueError(f"SQLDepthConfig.encoder '{self.encoder}' is not one of {BACKBONES}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"SQLDepthConfig: need 0 < min_depth < max_depth, got "
                             f"{self.min_depth}, {self.max_depth}")
        if self.decoder_features < 16 or self.decoder_features % 16:
            raise ValueError(f"SQLDepthConfig: decoder_features {self.decoder_features} must be "
                             "a positive multiple of 16 (four halvings)")
        if self.decoder_channels % self.transformer_heads:
            raise ValueError(f"SQLDepthConfig: decoder_channels {self.decoder_channels} must be "
                             f"divisible by transformer_heads {self.transformer_heads}")


class UpSampleBN(nn.Module):
    """x [B,c,h,w], skip [B,k,H',W'] -> [B,cout,H',W']: bilinear to the skip's size
    (align_corners=True), concatenation, (3x3 conv + BatchNorm + LeakyReLU) twice."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.LeakyReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.LeakyReLU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.net(torch.cat([x, skip], 1))


class DecoderBN(nn.Module):
    """Encoder features (1/2 .. 1/32, five levels) -> S [B,E,H/2,W/2]. See module doc."""

    def __init__(self, enc_channels: list[int], out_channels: int = 32, features: int = 256):
        super().__init__()
        if len(enc_channels) != 5:
            raise ValueError(f"DecoderBN: expected 5 encoder levels (1/2 .. 1/32), got "
                             f"{len(enc_channels)}")
        self.bottleneck = nn.Conv2d(enc_channels[4], features, 1, padding=1)
        widths = [features // 2 ** k for k in range(5)]                    # F .. F/16
        self.ups = nn.ModuleList(
            UpSampleBN(widths[k] + enc_channels[3 - k], widths[k + 1]) for k in range(4))
        self.out = nn.Conv2d(widths[4], out_channels, 3, padding=1)        # linear

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.bottleneck(feats[4])                                      # [B,F,h+2,w+2]
        for k, up in enumerate(self.ups):                                  # 1/16 .. 1/2
            x = up(x, feats[3 - k])                                        # [B,F/2^(k+1),..]
        return self.out(x)                                                 # [B,E,H/2,W/2]


class SelfQueryLayer(nn.Module):
    """S [B,E,h,w] -> (depth [B,1,h,w], bin_centers [B,n_bins]). See module doc."""

    def __init__(self, channels: int, num_queries: int, num_bins: int, patch_size: int,
                 layers: int, heads: int, ffn: int, max_tokens: int,
                 min_depth: float, max_depth: float, dropout: float = 0.1):
        super().__init__()
        self.num_queries, self.min_depth, self.max_depth = num_queries, min_depth, max_depth
        self.patch_embed = nn.Conv2d(channels, channels, patch_size, stride=patch_size)
        self.pos_enc = nn.Parameter(torch.rand(max_tokens, channels))
        layer = nn.TransformerEncoderLayer(channels, heads, dim_feedforward=ffn, dropout=dropout,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.conv3x3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bins_mlp = nn.Sequential(
            nn.Linear(channels * num_queries, 16 * num_queries), nn.LeakyReLU(),
            nn.Linear(16 * num_queries, 256), nn.LeakyReLU(),
            nn.Linear(256, num_bins))
        self.to_logits = nn.Conv2d(num_queries, num_bins, 1)

    def forward(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, E, h, w = S.shape
        # 1. Patch tokens + positional encoding -> transformer; first Q tokens are queries
        tokens = self.patch_embed(S).flatten(2).transpose(1, 2)            # [B,N,E]
        N = tokens.shape[1]
        if N < self.num_queries or N > self.pos_enc.shape[0]:
            raise ValueError(
                f"SelfQueryLayer: {N} patch tokens from a {h}x{w} decoder map; need between "
                f"num_queries={self.num_queries} and max_tokens={self.pos_enc.shape[0]}: change "
                "the input size, patch_size, num_queries or max_tokens")
        tokens = self.transformer(tokens + self.pos_enc[:N].unsqueeze(0))
        queries = tokens[:, : self.num_queries]                             # [B,Q,E]
        # 2. Self-cost volume V = Q . S
        feats = self.conv3x3(S).flatten(2)                                 # [B,E,hw]
        volume = queries @ feats                                           # [B,Q,hw]
        # 3. Query summaries -> adaptive bins
        summary = volume.softmax(-1) @ feats.transpose(1, 2)               # [B,Q,E]
        widths = torch.relu(self.bins_mlp(summary.flatten(1))) + 0.1        # [B,n_bins]
        widths = widths / widths.sum(1, keepdim=True) * (self.max_depth - self.min_depth)
        edges = F.pad(torch.cumsum(widths, 1), (1, 0), value=0.0) + self.min_depth
        centers = 0.5 * (edges[:, :-1] + edges[:, 1:])                     # [B,n_bins]
        # 4. Plane-wise probabilities over bins -> depth
        prob = self.to_logits(volume.view(B, self.num_queries, h, w)).softmax(1)  # [B,n_bins,h,w]
        depth = (prob * centers[:, :, None, None]).sum(1, keepdim=True)    # [B,1,h,w]
        return depth, centers


class SQLDepthNet(nn.Module):
    """forward(image [B,3,H,W] normalised) -> dict ``depth``: [[B,1,H,W]] metres in
    [min_depth, max_depth], ``disp``: [[B,1,H,W]] = 1/depth (also as ``scaled_disp``),
    ``bin_centers``: [B,n_bins]. One scale (SQL decoders predict at one resolution).
    Implements :class:`~depth_perception.models.network.DepthNetwork`: no encoder
    features, no disparity head (depth through bins), PyTorch / Kaiming inits already."""

    size_multiple: ClassVar[int] = 32
    returns_features: ClassVar[bool] = False

    def __init__(self, config: SQLDepthConfig, hf_config: dict | None = None):
        super().__init__()
        self.config = config
        self.encoder = self._build_encoder(config, hf_config)
        self.is_resnet = self.encoder.config.model_type == "resnet"
        if self.is_resnet:
            enc_channels = resnet_channels(self.encoder)
            self.stem = None
        else:                            # ConvNeXt: no 1/2 stage of its own
            stem = max(16, config.decoder_channels // 2)
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
            enc_channels = [stem] + list(self.encoder.channels)
        self.decoder = DecoderBN(enc_channels, config.decoder_channels, config.decoder_features)
        self.sql = SelfQueryLayer(config.decoder_channels, config.num_queries, config.num_bins,
                                  config.patch_size, config.transformer_layers,
                                  config.transformer_heads, config.transformer_ffn,
                                  config.max_tokens, config.min_depth, config.max_depth,
                                  config.transformer_dropout)

    @staticmethod
    def _build_encoder(config: SQLDepthConfig, hf_config: dict | None):
        from transformers import AutoBackbone, ConvNextBackbone, ConvNextConfig

        from depth_perception.hub import hub_offline
        from depth_perception.models.dpt_depth import load_pretrained_config
        if hf_config is not None and hf_config.get("model_type") == "resnet":
            return build_resnet(config.encoder, hf_config=hf_config)
        if hf_config is not None:
            return ConvNextBackbone(ConvNextConfig.from_dict(hf_config))
        if config.pretrained:
            hf = load_pretrained_config(config.pretrained, config.local_files_only)
            if hf.model_type == "resnet":
                return build_resnet(config.encoder, config.pretrained,
                                    local_files_only=config.local_files_only)
            if hf.model_type != "convnext":
                raise ValueError(f"SQL encoder '{config.pretrained}' is a '{hf.model_type}' "
                                 "model; expected a ResNet or ConvNeXt checkpoint")
            logger.info("loading SQL encoder from %s", config.pretrained)
            return AutoBackbone.from_pretrained(config.pretrained, out_features=STAGES,
                                                local_files_only=hub_offline(config.local_files_only))
        if config.encoder.startswith("convnext"):
            return ConvNextBackbone(conv_backbone_config(config.encoder, num_channels=3,
                                                         out_features=STAGES))
        return build_resnet(config.encoder)

    def hf_config_dict(self) -> dict:
        return self.encoder.config.to_dict()

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features at 1/2 .. 1/32."""
        if self.is_resnet:
            return resnet_features(self.encoder, image)
        return [self.stem(image)] + list(self.encoder(image).feature_maps)

    def forward(self, image: torch.Tensor) -> dict:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"SQLDepthNet: image must be [B,3,H,W], got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        if H < 32 or W < 32:
            raise ValueError(f"SQLDepthNet: input {H}x{W} (HxW) is smaller than the encoder's "
                             "total stride 32")
        S = self.decoder(self.features(image))                             # [B,E,H/2,W/2]
        depth, centers = self.sql(S)                                       # [B,1,h,w]
        depth = F.interpolate(depth, size=(H, W), mode="bilinear", align_corners=False)
        disp = 1.0 / depth
        return {"depth": [depth], "disp": [disp], "scaled_disp": [disp], "bin_centers": centers}

    def param_groups(self, lr_encoder: float, lr_decoder: float) -> list[dict]:
        """``encoder``: the backbone and DecoderBN (SPIdepth's ``ResnetEncoderDecoder``,
        which ``--diff_lr`` trains at lr / 10); ``decoder``: the Self Query Layer."""
        enc = [p for n, p in self.named_parameters()
               if not n.startswith("sql.") and p.requires_grad]
        dec = [p for p in self.sql.parameters() if p.requires_grad]
        return [{"params": enc, "lr": lr_encoder, "name": "encoder"},
                {"params": dec, "lr": lr_decoder, "name": "decoder"}]

    def disparity_heads(self) -> list[nn.Conv2d]:
        return []

    def reset_random_layers(self) -> int:
        return 0

    def add_uncertainty_head(self) -> None:
        raise ValueError("depth model arch 'sql' has no log-variance head (its depth comes "
                         "from bins, not a disparity decoder): a self-taught uncertainty "
                         "needs arch dpt or mono")
