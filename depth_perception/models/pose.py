"""Pose network on stacked frame pairs (monodepth2 PoseNet; SPIdepth "strengthened" pose).

A transformers ResNet / ConvNeXt backbone sees the 6-channel concatenation of two frames
ordered in time, ``(earlier, later)``; a monodepth2 pose decoder (1x1 squeeze to 256,
two 3x3 convs + ReLU, 1x1 to 6, spatial mean, x 0.01) gives axis-angle and translation.
See :mod:`depth_perception_training.geometry` for the ordering / inversion rule
(:meth:`PoseNet.relative_pose` applies it).

Pretrained weights (hub id or local folder saved with ``save_pretrained``; a ResNet /
ConvNeXt model or image classifier): the 3-channel first convolution is adapted to 6
channels by duplicating its weights along the input-channel axis and halving them, so
a pair of identical frames gives the pretrained response. A 6-channel backbone (the
folder ``depth-perception train pose`` writes) is used as it is. ``strengthened=True`` (SPIdepth)
requires such pretrained weights: without them self-supervised training can collapse.
Images go in as [B,3,H,W] in [0,1]; the network normalises them with ImageNet statistics.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from depth_perception.models._deps import require_torch

require_torch(__name__)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from depth_perception.models.conventions import ordered_pair, pose_vec_to_matrix
from depth_perception.metadata import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet34", "resnet50", "convnext_tiny", "tiny", "slim18")
POSE_SCALE = 0.01


def conv_backbone_config(name: str, num_channels: int = 3, out_features: list[str] | None = None):
    """transformers ResNetConfig / ConvNextConfig of a named convolutional backbone.

    ``tiny`` is a 4-stage ResNet with 8-32 channels for CPU tests; ``slim18`` has
    ResNet-18's depths at half its widths (32-256 channels), for CPU-scale training.
    """
    from transformers import ConvNextConfig, ResNetConfig
    kw = {"num_channels": num_channels}
    if out_features is not None:
        kw["out_features"] = list(out_features)
    if name == "resnet18":
        return ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], embedding_size=64,
                            hidden_sizes=[64, 128, 256, 512], **kw)
    if name == "resnet34":
        return ResNetConfig(layer_type="basic", depths=[3, 4, 6, 3], embedding_size=64,
                            hidden_sizes=[64, 128, 256, 512], **kw)
    if name == "resnet50":
        return ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], embedding_size=64,
                            hidden_sizes=[256, 512, 1024, 2048], **kw)
    if name == "slim18":
        return ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], embedding_size=32,
                            hidden_sizes=[32, 64, 128, 256], **kw)
    if name == "convnext_tiny":
        return ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], **kw)
    if name == "tiny":
        return ResNetConfig(layer_type="basic", depths=[1, 1, 1, 1], embedding_size=8,
                            hidden_sizes=[8, 16, 24, 32], **kw)
    raise ValueError(f"unknown backbone '{name}'; expected one of {BACKBONES}")


def first_conv_key(state_dict: dict) -> str:
    """Name of the stem convolution weight in a ResNet / ConvNeXt state dict."""
    for key in ("embedder.embedder.convolution.weight", "embeddings.patch_embeddings.weight"):
        if key in state_dict:
            return key
    raise ValueError("could not find the first convolution (ResNet embedder or ConvNeXt patch "
                     f"embeddings) among keys {list(state_dict)[:5]}...")


def adapt_first_conv(weight: torch.Tensor, num_frames: int = 2) -> torch.Tensor:
    """[C_out,3,k,k] pretrained stem -> [C_out,3*num_frames,k,k]: duplicated, divided by num_frames."""
    return torch.cat([weight] * num_frames, dim=1) / num_frames


@dataclass
class PoseNetConfig:
    """backbone: resnet18 | resnet34 | resnet50 | convnext_tiny | tiny | slim18. pretrained: hub id or
    local folder (3-channel weights, adapted to 6). strengthened: require pretrained weights.
    """

    backbone: str = "resnet18"
    pretrained: str | None = None
    strengthened: bool = False
    local_files_only: bool = False

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"PoseNetConfig.backbone '{self.backbone}' is not one of {BACKBONES}")
        if self.strengthened and not self.pretrained:
            raise ValueError("PoseNetConfig: strengthened=True needs `pretrained` (a hub id or a "
                             "local folder of a ResNet/ConvNeXt checkpoint); without a pretrained "
                             "pose network self-supervised training can collapse")


def _load_backbone(config: PoseNetConfig, num_frames: int = 2) -> nn.Module:
    """6-channel backbone from pretrained 3-channel weights (see module doc)."""
    from transformers import AutoModel, ConvNextModel, ResNetModel

    from depth_perception.hub import hub_offline
    from depth_perception.models.dpt_depth import load_pretrained_config
    hf = load_pretrained_config(config.pretrained, config.local_files_only)
    if hf.model_type not in ("resnet", "convnext"):
        raise ValueError(f"pose backbone '{config.pretrained}' is a '{hf.model_type}' model; "
                         "expected a ResNet or ConvNeXt checkpoint")
    pretrained = AutoModel.from_pretrained(config.pretrained,
                                           local_files_only=hub_offline(config.local_files_only))
    if hf.num_channels == 3 * num_frames:          # already a pair backbone (train pose)
        logger.info("pose backbone from %s (%d channels)", config.pretrained, hf.num_channels)
        return pretrained
    state = pretrained.state_dict()
    key = first_conv_key(state)
    if state[key].shape[1] != hf.num_channels:
        raise ValueError(f"pose backbone '{config.pretrained}': first conv has "
                         f"{state[key].shape[1]} input channels, config says {hf.num_channels}")
    state[key] = adapt_first_conv(state[key], num_frames)
    cfg = pretrained.config.__class__.from_dict({**pretrained.config.to_dict(),
                                                 "num_channels": hf.num_channels * num_frames})
    model = (ResNetModel if hf.model_type == "resnet" else ConvNextModel)(cfg)
    model.load_state_dict(state)
    logger.info("pose backbone from %s, first conv adapted to %d channels", config.pretrained,
                hf.num_channels * num_frames)
    return model


class PoseDecoder(nn.Module):
    """monodepth2 pose decoder: features [B,C,h,w] -> (axisangle [B,1,3], translation [B,1,3])."""

    def __init__(self, in_channels: int, hidden: int = 256, scale: float = POSE_SCALE):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, hidden, 1)
        self.conv1 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 6, 1)
        self.relu = nn.ReLU()
        self.scale = scale

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.squeeze(features))
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.out(x).mean(dim=(2, 3))                                   # [B,6]
        x = self.scale * x.view(-1, 1, 6)
        return x[..., :3], x[..., 3:]


class PoseNet(nn.Module):
    """forward(img_a [B,3,H,W], img_b [B,3,H,W]) in [0,1], ordered (earlier, later)
    -> (axisangle [B,1,3], translation [B,1,3]) of T_later_earlier."""

    def __init__(self, config: PoseNetConfig, hf_config: dict | None = None):
        super().__init__()
        from transformers import ConvNextConfig, ConvNextModel, ResNetConfig, ResNetModel
        self.config = config
        if hf_config is not None:
            cls_cfg = ResNetConfig if hf_config.get("model_type") == "resnet" else ConvNextConfig
            cfg = cls_cfg.from_dict(hf_config)
            self.encoder = (ResNetModel if cfg.model_type == "resnet" else ConvNextModel)(cfg)
        elif config.pretrained:
            self.encoder = _load_backbone(config)
        else:
            cfg = conv_backbone_config(config.backbone, num_channels=6)
            self.encoder = (ResNetModel if cfg.model_type == "resnet" else ConvNextModel)(cfg)
        self.decoder = PoseDecoder(self.encoder.config.hidden_sizes[-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def hf_config_dict(self) -> dict:
        return self.encoder.config.to_dict()

    def forward(self, img_a: torch.Tensor, img_b: torch.Tensor,
                pairs: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``pairs`` > 1: the batch stacks that many groups of frame pairs ([pairs*B,...]);
        each group goes through the network on its own (BatchNorm statistics are not
        shared between the groups, as when the references call the pose net per pair)."""
        if img_a.shape != img_b.shape or img_a.dim() != 4 or img_a.shape[1] != 3:
            raise ValueError(f"PoseNet: need two [B,3,H,W] images of the same size, got "
                             f"{tuple(img_a.shape)} and {tuple(img_b.shape)}")
        if pairs < 1 or img_a.shape[0] % pairs:
            raise ValueError(f"PoseNet: batch {img_a.shape[0]} is not {pairs} equal groups")
        x = torch.cat([(img_a - self.mean) / self.std, (img_b - self.mean) / self.std], 1)  # [B,6,H,W]
        outs = [self.decoder(self.encoder(chunk).last_hidden_state)        # [b,C,h,w] -> pose
                for chunk in x.chunk(pairs, 0)]
        return torch.cat([o[0] for o in outs], 0), torch.cat([o[1] for o in outs], 0)

    def relative_pose(self, target: torch.Tensor, source: torch.Tensor, offset: int):
        """T_src_tgt [B,4,4] and raw translation [B,3] for a source at frame ``offset``.

        Orders the pair in time and applies the monodepth2 inversion rule.
        """
        earlier, later, invert = ordered_pair(target, source, offset)
        axisangle, translation = self(earlier, later)
        return pose_vec_to_matrix(axisangle, translation, invert=invert), translation[:, 0]

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "pose"}]
