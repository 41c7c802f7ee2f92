"""DINOv2 encoder + DPT head (Depth Anything architecture) predicting metric depth.

The network is transformers' ``DepthAnythingForDepthEstimation`` built from a size
preset (``tiny`` for CPU tests, ``small``/``base``/``large`` = ViT-S/B/L with the Depth
Anything V2 DPT sizes) or loaded with ``from_pretrained`` from a hub id or a local
folder holding either a Depth Anything (V2) checkpoint or a bare DINOv2 backbone.

Output activation: the head is built in transformers' "metric" mode with
``max_depth=1``, so its last activation is a sigmoid and it predicts a disparity in
[0, 1] (a relative Depth Anything checkpoint's ReLU is replaced by that sigmoid; the
conv weights load unchanged). The sigmoid disparity goes through
``disp_to_depth(min_depth, max_depth)`` (DINO-SD / monodepth2 style).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from depth_perception.models._deps import require_torch

require_torch(__name__)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from depth_perception.hub import hub_offline, load_pretrained
from depth_perception.models.conventions import disp_to_depth
from depth_perception.models.uncertainty import uncertainty_head

logger = logging.getLogger(__name__)

PATCH_SIZE = 14

#: DINOv2 width/depth/heads and DPT neck sizes per preset (Depth Anything V2 for S/B/L).
SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                 out_indices=[1, 2, 3, 4], neck_hidden_sizes=[8, 16, 32, 32],
                 fusion_hidden_size=16, head_hidden_size=8, image_size=224),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                  out_indices=[3, 6, 9, 12], neck_hidden_sizes=[48, 96, 192, 384],
                  fusion_hidden_size=64, head_hidden_size=32, image_size=518),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                 out_indices=[3, 6, 9, 12], neck_hidden_sizes=[96, 192, 384, 768],
                 fusion_hidden_size=128, head_hidden_size=32, image_size=518),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                  out_indices=[5, 12, 18, 24], neck_hidden_sizes=[256, 512, 1024, 1024],
                  fusion_hidden_size=256, head_hidden_size=32, image_size=518),
}


def load_pretrained_config(name_or_path: str, local_files_only: bool = False):
    """AutoConfig.from_pretrained with a clear error when the weights are not available."""
    from transformers import AutoConfig
    return load_pretrained(AutoConfig.from_pretrained, name_or_path, "pretrained weights",
                           local_files_only)


@dataclass
class DPTDepthConfig:
    """Configuration of :class:`DPTDepthNet`.

    size: tiny | small | base | large. pretrained: hub id or local folder of a Depth
    Anything (V2) checkpoint or a DINOv2 backbone; None = random init from ``size``.
    min_depth/max_depth: range of disp_to_depth (metres).
    """

    size: str = "small"
    pretrained: str | None = None
    min_depth: float = 0.1
    max_depth: float = 80.0
    local_files_only: bool = False
    #: a head predicting the log-variance of the log-depth error beside the depth (a
    #: self-taught student's, see :mod:`depth_perception.models.uncertainty`)
    uncertainty: bool = False

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"DPTDepthConfig.size '{self.size}' is not one of {sorted(SIZES)}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"DPTDepthConfig: need 0 < min_depth < max_depth, got "
                             f"{self.min_depth}, {self.max_depth}")


def depth_anything_config(size: str, backbone_config=None):
    """transformers DepthAnythingConfig for a size preset (sigmoid head, see module doc)."""
    from transformers import DepthAnythingConfig, Dinov2Config
    p = SIZES[size]
    if backbone_config is None:
        backbone_config = Dinov2Config(
            hidden_size=p["hidden_size"], num_hidden_layers=p["num_hidden_layers"],
            num_attention_heads=p["num_attention_heads"], mlp_ratio=p["mlp_ratio"],
            patch_size=PATCH_SIZE, image_size=p["image_size"], layerscale_value=1.0,
            out_indices=list(p["out_indices"]), reshape_hidden_states=False)
    return DepthAnythingConfig(
        backbone_config=backbone_config, patch_size=PATCH_SIZE,
        reassemble_hidden_size=backbone_config.hidden_size,
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=list(p["neck_hidden_sizes"]),
        fusion_hidden_size=p["fusion_hidden_size"], head_hidden_size=p["head_hidden_size"],
        depth_estimation_type="metric", max_depth=1)


class DPTDepthNet(nn.Module):
    """DINOv2 + DPT depth network.

    forward(image [B,3,H,W] normalised, H and W multiples of 14) -> dict
      ``disp``: [[B,1,H,W]] sigmoid disparity in [0,1] (one scale: the DPT head predicts
      at full input resolution only), ``scaled_disp``: [[B,1,H,W]] = 1/depth,
      ``depth``: [[B,1,H,W]] metres in [min_depth, max_depth]; with
      ``return_features=True`` also ``features``: [B,N,C] encoder tokens, row-major on
      the patch grid ``feature_grid`` (H/14, W/14).
    ``hf_config`` (a DepthAnythingConfig dict) rebuilds a saved network exactly, without
    touching ``pretrained``. Implements :class:`~depth_perception.models.network.DepthNetwork`.
    """

    size_multiple: ClassVar[int] = PATCH_SIZE
    returns_features: ClassVar[bool] = True

    def __init__(self, config: DPTDepthConfig, hf_config: dict | None = None):
        super().__init__()
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
        self.config = config
        if hf_config is not None:
            self.net = DepthAnythingForDepthEstimation(DepthAnythingConfig.from_dict(hf_config))
        elif config.pretrained:
            self.net = self._from_pretrained(config)
        else:
            self.net = DepthAnythingForDepthEstimation(depth_anything_config(config.size))
        #: the DPT head's last hidden features -> log-variance (None: no such head)
        self.uncertainty = (uncertainty_head(self.net.config.head_hidden_size)
                            if config.uncertainty else None)
        if self.net.config.depth_estimation_type != "metric" or self.net.config.max_depth != 1:
            raise ValueError("DPTDepthNet expects a sigmoid head (depth_estimation_type='metric', "
                             f"max_depth=1), got {self.net.config.depth_estimation_type}/"
                             f"{self.net.config.max_depth}")

    @staticmethod
    def _from_pretrained(config: DPTDepthConfig):
        from transformers import DepthAnythingForDepthEstimation, Dinov2Backbone
        offline = hub_offline(config.local_files_only)
        hf = load_pretrained_config(config.pretrained, config.local_files_only)
        if hf.model_type == "depth_anything":
            logger.info("loading Depth Anything weights from %s", config.pretrained)
            return DepthAnythingForDepthEstimation.from_pretrained(
                config.pretrained, depth_estimation_type="metric", max_depth=1,
                local_files_only=offline)
        if hf.model_type == "dinov2":
            p = SIZES[config.size]
            if hf.num_hidden_layers != p["num_hidden_layers"]:
                raise ValueError(
                    f"DINOv2 backbone '{config.pretrained}' has {hf.num_hidden_layers} layers but "
                    f"size '{config.size}' taps layers {p['out_indices']}: pick the matching size")
            logger.info("loading DINOv2 backbone from %s (DPT head randomly initialised)",
                        config.pretrained)
            backbone = Dinov2Backbone.from_pretrained(
                config.pretrained, out_indices=list(p["out_indices"]), reshape_hidden_states=False,
                local_files_only=offline)
            model = DepthAnythingForDepthEstimation(depth_anything_config(config.size, backbone.config))
            model.backbone.load_state_dict(backbone.state_dict())
            return model
        raise ValueError(f"pretrained '{config.pretrained}' is a '{hf.model_type}' model; "
                         "expected a Depth Anything checkpoint or a DINOv2 backbone")

    # -- helpers ------------------------------------------------------------------------
    def hf_config_dict(self) -> dict:
        """The transformers config, enough to rebuild the exact architecture offline."""
        return self.net.config.to_dict()

    @staticmethod
    def check_size(image: torch.Tensor) -> None:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"DPTDepthNet: image must be [B,3,H,W], got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        if H % PATCH_SIZE or W % PATCH_SIZE:
            raise ValueError(f"DPTDepthNet: input size {H}x{W} (HxW) must be a multiple of "
                             f"{PATCH_SIZE} (the DINOv2 patch size); e.g. resize to "
                             f"{max(1, round(H / PATCH_SIZE)) * PATCH_SIZE}x"
                             f"{max(1, round(W / PATCH_SIZE)) * PATCH_SIZE}")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,3,H,W] normalised -> last tapped encoder tokens [B,N,C] (no CLS token)."""
        self.check_size(image)
        return self.net.backbone(image).feature_maps[-1][:, 1:]

    def forward(self, image: torch.Tensor, return_features: bool = False) -> dict:
        # 1. DINOv2 tokens at the tapped layers: tuple of [B,1+N,C]
        self.check_size(image)
        H, W = image.shape[-2:]
        ph, pw = H // PATCH_SIZE, W // PATCH_SIZE
        feature_maps = self.net.backbone(image).feature_maps
        # 2. DPT reassemble + fusion, then the head: sigmoid disparity [B,H,W]
        fused = self.net.neck(list(feature_maps), ph, pw)
        hidden = {}                        # the head's last features, for the uncertainty
        hook = (self.net.head.conv3.register_forward_pre_hook(
            lambda _, args: hidden.setdefault("x", args[0]))
            if self.uncertainty is not None else None)
        try:
            disp = self.net.head(fused, ph, pw).unsqueeze(1)              # [B,1,H,W]
        finally:
            if hook is not None:
                hook.remove()
        # 3. disparity -> metric depth
        scaled, depth = disp_to_depth(disp, self.config.min_depth, self.config.max_depth)
        out = {"disp": [disp], "scaled_disp": [scaled], "depth": [depth]}
        if self.uncertainty is not None:
            out["log_variance"] = self.uncertainty(hidden["x"])            # [B,1,H,W]
        if return_features:
            out["features"] = feature_maps[-1][:, 1:]                      # [B,N,C]
            out["feature_grid"] = (ph, pw)
        return out

    def param_groups(self, lr_encoder: float, lr_decoder: float) -> list[dict]:
        """AdamW groups: DINOv2 encoder at ``lr_encoder``, DPT neck + head at ``lr_decoder``."""
        enc = [p for p in self.net.backbone.parameters() if p.requires_grad]
        dec = [p for n, p in self.net.named_parameters()
               if not n.startswith("backbone.") and p.requires_grad]
        if self.uncertainty is not None:
            dec += [p for p in self.uncertainty.parameters() if p.requires_grad]
        return [{"params": enc, "lr": lr_encoder, "name": "encoder"},
                {"params": dec, "lr": lr_decoder, "name": "decoder"}]

    def add_uncertainty_head(self) -> None:
        """The log-variance head on the DPT head's last features (config follows)."""
        if self.uncertainty is None:
            self.uncertainty = uncertainty_head(self.net.config.head_hidden_size).to(
                next(self.parameters()).device)
            self.config.uncertainty = True

    def disparity_heads(self) -> list[nn.Conv2d]:
        """The DPT head's last convolution (before its sigmoid)."""
        return [self.net.head.conv3]

    def reset_random_layers(self) -> int:
        """Re-initialise randomly initialised layers with PyTorch's default Conv/Linear init.

        transformers initialises DINOv2 + DPT weights with N(0, 0.02); a deep DPT neck
        and head started that way outputs ~1e-6 and learns extremely slowly (its
        disparity stays at the sigmoid midpoint for hundreds of steps). Layers loaded
        from pretrained weights are left alone: everything is reset without
        ``pretrained``, only the neck and head when ``pretrained`` is a bare DINOv2
        backbone, nothing for a Depth Anything checkpoint. Returns the number of layers
        reset.
        """
        if not self.config.pretrained:
            modules = [self.net]
        else:
            kind = load_pretrained_config(self.config.pretrained,
                                          self.config.local_files_only).model_type
            modules = [self.net.neck, self.net.head] if kind == "dinov2" else []
        count = 0
        for root in modules:
            for m in root.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    m.reset_parameters()
                    count += 1
        return count
