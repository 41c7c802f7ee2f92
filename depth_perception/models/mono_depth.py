"""monodepth2 depth network: a ResNet encoder and the multi-scale disparity decoder.

1. Encoder: a transformers ``ResNetModel`` (random from a preset, or ``from_pretrained``
   by hub id or local folder), run stage by stage so that the stem convolution's
   output at 1/2 resolution is a skip too: features at 1/2, 1/4, 1/8, 1/16, 1/32.
2. Decoder (monodepth2 ``DepthDecoder``): from the coarsest level, per level i = 4..0:
   3x3 conv + ELU, nearest x2 upsampling, concatenation with the encoder feature of
   level i - 1 (none at i = 0), 3x3 conv + ELU (reflection padding); widths
   (16, 32, 64, 128, 256) from fine to coarse. At levels 0..3 a 3x3 conv + sigmoid gives
   the disparity of scale s at 1/2**s of the input size.
3. ``disp_to_depth(min, max)``: scaled disparity = 1/max + (1/min - 1/max) * sigmoid,
   depth = 1 / scaled disparity. The training loss upsamples the scaled disparity of
   every scale to the input size (bilinear) before converting it to depth, as
   monodepth2 does; smoothness acts on the sigmoid disparity of each scale.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from depth_perception.models.conventions import disp_to_depth
from depth_perception.models.pose import BACKBONES, conv_backbone_config
from depth_perception.models.uncertainty import uncertainty_head

logger = logging.getLogger(__name__)

DECODER_WIDTHS = (16, 32, 64, 128, 256)


@dataclass
class MonoDepthConfig:
    """encoder: a ResNet preset (resnet18 | resnet34 | resnet50 | tiny | slim18, see
    :func:`~depth_perception.models.pose.conv_backbone_config`); pretrained: hub id or local folder
    of a 3-channel ResNet (e.g. microsoft/resnet-18). scales: disparity outputs (4 in
    monodepth2)."""

    encoder: str = "resnet18"
    pretrained: str | None = None
    min_depth: float = 0.1
    max_depth: float = 100.0
    scales: int = 4
    local_files_only: bool = False
    #: a head predicting the log-variance of the log-depth error beside the depth (a
    #: self-taught student's, see :mod:`depth_perception.models.uncertainty`)
    uncertainty: bool = False

    def __post_init__(self):
        if self.encoder not in RESNET_ENCODERS:
            raise ValueError(f"MonoDepthConfig.encoder '{self.encoder}' is not one of "
                             f"{RESNET_ENCODERS}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"MonoDepthConfig: need 0 < min_depth < max_depth, got "
                             f"{self.min_depth}, {self.max_depth}")
        if not 1 <= self.scales <= 4:
            raise ValueError(f"MonoDepthConfig.scales must be 1..4, got {self.scales}")


RESNET_ENCODERS = tuple(b for b in BACKBONES if not b.startswith("convnext"))


def build_resnet(name: str, pretrained: str | None = None, hf_config: dict | None = None,
                 local_files_only: bool = False, num_channels: int = 3):
    """A transformers ``ResNetModel``: from a saved config, pretrained weights or a preset."""
    from transformers import AutoModel, ResNetConfig, ResNetModel

    from depth_perception.hub import hub_offline
    from depth_perception.models.dpt_depth import load_pretrained_config
    if hf_config is not None:
        return ResNetModel(ResNetConfig.from_dict(hf_config))
    if pretrained:
        hf = load_pretrained_config(pretrained, local_files_only)
        if hf.model_type != "resnet":
            raise ValueError(f"encoder '{pretrained}' is a '{hf.model_type}' model; expected a "
                             "ResNet checkpoint")
        logger.info("loading ResNet encoder from %s", pretrained)
        model = AutoModel.from_pretrained(pretrained, local_files_only=hub_offline(local_files_only))
        if model.config.num_channels != num_channels:
            raise ValueError(f"encoder '{pretrained}' takes {model.config.num_channels} channels, "
                             f"expected {num_channels}")
        return model
    return ResNetModel(conv_backbone_config(name, num_channels=num_channels))


def resnet_channels(model) -> list[int]:
    """Channels of :func:`resnet_features` (1/2 .. 1/32)."""
    return [model.config.embedding_size] + list(model.config.hidden_sizes)


def resnet_features(model, x: torch.Tensor) -> list[torch.Tensor]:
    """[B,C,H,W] -> features at 1/2 (stem conv), 1/4, 1/8, 1/16, 1/32 of a ``ResNetModel``."""
    stem = model.embedder.embedder(x)                                   # [B,c0,H/2,W/2]
    feats = [stem]
    y = model.embedder.pooler(stem)                                     # [B,c0,H/4,W/4]
    for stage in model.encoder.stages:
        y = stage(y)
        feats.append(y)
    return feats


class _ConvBlock(nn.Sequential):
    """3x3 conv (reflection padding) + ELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"), nn.ELU())


class DisparityDecoder(nn.Module):
    """monodepth2 DepthDecoder: features (1/2 .. 1/32) -> sigmoid disparities at scales
    0..scales-1 ([B,1,H/2**s,W/2**s], finest first)."""

    def __init__(self, enc_channels: list[int], scales: int = 4, uncertainty: bool = False):
        super().__init__()
        self.scales = scales
        #: the finest level's features -> log-variance [B,1,H,W] (None: no such head)
        self.uncertainty = uncertainty_head(DECODER_WIDTHS[0]) if uncertainty else None
        self.up0 = nn.ModuleList()
        self.up1 = nn.ModuleList()
        self.heads = nn.ModuleDict()
        for i in range(4, -1, -1):
            cin = enc_channels[-1] if i == 4 else DECODER_WIDTHS[i + 1]
            self.up0.append(_ConvBlock(cin, DECODER_WIDTHS[i]))
            skip = enc_channels[i - 1] if i > 0 else 0
            self.up1.append(_ConvBlock(DECODER_WIDTHS[i] + skip, DECODER_WIDTHS[i]))
            if i < scales:
                self.heads[str(i)] = nn.Conv2d(DECODER_WIDTHS[i], 1, 3, padding=1,
                                               padding_mode="reflect")

    def forward(self, feats: list[torch.Tensor]):
        """-> (disparities, finest first; log-variance [B,1,H,W] or None)."""
        x = feats[-1]
        out: dict[int, torch.Tensor] = {}
        for k, i in enumerate(range(4, -1, -1)):
            x = self.up0[k](x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i > 0:
                skip = feats[i - 1]
                if x.shape[-2:] != skip.shape[-2:]:
                    x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
                x = torch.cat([x, skip], 1)
            x = self.up1[k](x)
            if str(i) in self.heads:
                out[i] = torch.sigmoid(self.heads[str(i)](x))
        log_variance = self.uncertainty(x) if self.uncertainty is not None else None
        return [out[s] for s in range(self.scales)], log_variance


class MonoDepthNet(nn.Module):
    """forward(image [B,3,H,W] normalised) -> dict with per-scale lists (finest first):
    ``disp`` sigmoid disparity, ``scaled_disp`` 1/depth, ``depth`` metres in
    [min_depth, max_depth], each [B,1,H/2**s,W/2**s]; with ``return_features=True``
    also ``features`` [B,N,C]: the encoder's last stage (1/32) as tokens, row-major on
    the ``feature_grid`` (h, w). Implements
    :class:`~depth_perception.models.network.DepthNetwork` (PyTorch / Kaiming inits
    already: no random-layer reset)."""

    size_multiple: ClassVar[int] = 32
    returns_features: ClassVar[bool] = True

    def __init__(self, config: MonoDepthConfig, hf_config: dict | None = None):
        super().__init__()
        self.config = config
        self.encoder = build_resnet(config.encoder, config.pretrained, hf_config,
                                    config.local_files_only)
        self.decoder = DisparityDecoder(resnet_channels(self.encoder), config.scales,
                                        config.uncertainty)

    def hf_config_dict(self) -> dict:
        return self.encoder.config.to_dict()

    def forward(self, image: torch.Tensor, return_features: bool = False) -> dict:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"MonoDepthNet: image must be [B,3,H,W], got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        if H % 32 or W % 32:
            raise ValueError(f"MonoDepthNet: input {H}x{W} (HxW) must be multiples of 32")
        feats = resnet_features(self.encoder, image)
        disps, log_variance = self.decoder(feats)
        scaled, depth = zip(*(disp_to_depth(d, self.config.min_depth, self.config.max_depth)
                              for d in disps))
        out = {"disp": list(disps), "scaled_disp": list(scaled), "depth": list(depth)}
        if log_variance is not None:
            out["log_variance"] = log_variance                               # [B,1,H,W]
        if return_features:
            last = feats[-1]                                               # [B,C,h,w]
            out["features"] = last.flatten(2).transpose(1, 2)              # [B,h*w,C]
            out["feature_grid"] = tuple(last.shape[-2:])
        return out

    def param_groups(self, lr_encoder: float, lr_decoder: float) -> list[dict]:
        enc = [p for p in self.encoder.parameters() if p.requires_grad]
        dec = [p for p in self.decoder.parameters() if p.requires_grad]
        return [{"params": enc, "lr": lr_encoder, "name": "encoder"},
                {"params": dec, "lr": lr_decoder, "name": "decoder"}]

    def disparity_heads(self) -> list[nn.Conv2d]:
        """The per-scale disparity convolutions (before their sigmoids)."""
        return list(self.decoder.heads.values())

    def reset_random_layers(self) -> int:
        return 0

    def add_uncertainty_head(self) -> None:
        """The log-variance head on the finest decoder features (config follows)."""
        if self.decoder.uncertainty is None:
            self.decoder.uncertainty = uncertainty_head(DECODER_WIDTHS[0]).to(
                next(self.parameters()).device)
            self.config.uncertainty = True
