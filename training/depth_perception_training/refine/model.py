"""A Depth-Anything-style network split for test-time refinement.

:class:`RefinableDepthModel` wraps a transformers ``DepthAnythingForDepthEstimation``
(DINOv2 encoder + DPT neck and head) and says what its head predicts:

* ``sigmoid_disparity``: this package's DINOv2+DPT checkpoints (``DPTDepthNet``): a
  sigmoid disparity in [0, 1], metres through ``disp_to_depth(min_depth, max_depth)``;
* ``disparity``: relative Depth Anything (ReLU head): affine-invariant disparity;
* ``metric_depth``: metric Depth Anything (sigmoid x max_depth): metres.

:meth:`embeddings` runs the frozen encoder once (the four tapped token maps
[B,1+N,C]); :meth:`decode` runs the DPT neck + head on (possibly optimised) token maps.
:func:`load_refinable` loads either kind of folder (or a hub id).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_perception.models.conventions import disp_to_depth

__all__ = ["RefinableDepthModel", "load_refinable", "network_size"]

PATCH = 14
OUTPUTS = ("sigmoid_disparity", "disparity", "metric_depth")


def network_size(width: int, height: int, short_side: int | None = None,
                 size: tuple | None = None, multiple: int = PATCH) -> tuple[int, int]:
    """(W, H) network input: ``size`` if given, else the short side scaled to
    ``short_side`` with the aspect kept; both rounded to multiples of ``multiple``."""
    if size:
        w, h = int(size[0]), int(size[1])
    elif short_side:
        s = short_side / min(width, height)
        w, h = width * s, height * s
    else:
        w, h = width, height
    w, h = max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)
    if size and (w, h) != (int(size[0]), int(size[1])):
        raise ValueError(f"network input size {tuple(size)} must be multiples of {multiple}")
    return int(w), int(h)


@dataclass
class RefinableDepthModel:
    """A DepthAnythingForDepthEstimation, what its head predicts, and its input normalisation."""

    net: torch.nn.Module
    output: str
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    min_depth: float = 0.1
    max_depth: float = 80.0
    source: str = ""

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"RefinableDepthModel.output must be one of {OUTPUTS}, got {self.output!r}")
        for part in ("backbone", "neck", "head"):
            if not hasattr(self.net, part):
                raise ValueError(f"{self.source or type(self.net).__name__}: not a Depth Anything "
                                 f"network (no '{part}'); refinement needs DINOv2 + DPT")
        self.net.eval()

    @property
    def metric(self) -> bool:
        return self.output != "disparity"

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        """DPT neck + head parameters (what refinement fine-tunes)."""
        return list(self.net.neck.parameters()) + list(self.net.head.parameters())

    def decoder_state(self) -> dict:
        """A copy of the neck + head weights (to restart every ensemble run from them)."""
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()
                if k.startswith(("neck.", "head."))}

    def load_decoder_state(self, state: dict) -> None:
        self.net.load_state_dict(state, strict=False)

    def pixel_values(self, rgb: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """[H,W,3] uint8 RGB -> (image [1,3,h,w] in [0,1], normalised input), (w, h) = size."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False,
                          antialias=True).clamp(0.0, 1.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return x, (x - mean) / std

    @torch.no_grad()
    def embeddings(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoder: normalised image [B,3,H,W] -> 4 token maps [B,1+N,C]."""
        H, W = pixel_values.shape[-2:]
        if H % PATCH or W % PATCH:
            raise ValueError(f"network input {W}x{H} must be multiples of {PATCH}")
        return [f.detach() for f in self.net.backbone(pixel_values).feature_maps]

    def decode(self, tokens: list[torch.Tensor], patch_hw: tuple[int, int]) -> torch.Tensor:
        """DPT neck + head: 4 token maps [B,1+N,C] -> raw head output [B,1,H,W]."""
        ph, pw = patch_hw
        return self.net.head(self.net.neck(list(tokens), ph, pw), ph, pw).unsqueeze(1)

    def disparity(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output -> the disparity that refinement renders (affine in 1/depth)."""
        if self.output == "metric_depth":
            return 1.0 / raw.clamp_min(1e-6)
        return raw

    def depth(self, raw: torch.Tensor) -> torch.Tensor | None:
        """Raw head output -> metres, or None for a relative model."""
        if self.output == "sigmoid_disparity":
            return disp_to_depth(raw, self.min_depth, self.max_depth)[1]
        if self.output == "metric_depth":
            return raw
        return None


def load_refinable(name_or_path: str | Path, device: str = "cpu") -> RefinableDepthModel:
    """This package's DINOv2+DPT checkpoint folder, or a transformers Depth Anything
    (local folder or hub id; offline with HF_HUB_OFFLINE=1)."""
    from depth_perception.runtime.model_source import is_checkpoint_folder

    path = Path(name_or_path)
    if path.is_dir() and is_checkpoint_folder(path):
        from depth_perception.models import load_depth_model
        module, meta = load_depth_model(path, device=device)
        net = getattr(module.net, "net", None)
        if net is None or not hasattr(net, "neck"):
            raise ValueError(f"{path}: a '{type(module.net).__name__}' checkpoint; refinement "
                             "needs the DINOv2 + DPT architecture (arch 'dpt')")
        return RefinableDepthModel(net.to(device), "sigmoid_disparity", tuple(meta.mean),
                                   tuple(meta.std), float(meta.min_depth),
                                   float(meta.max_depth), str(path))
    from depth_perception.runtime.backends.torch_backend import TorchBackend
    backend = TorchBackend.from_transformers(str(name_or_path), device=device)
    meta = backend.metadata
    net = backend._module.model
    output = "metric_depth" if meta.output_kind == "metric_depth" else "disparity"
    return RefinableDepthModel(net, output, tuple(meta.mean), tuple(meta.std),
                               float(meta.min_depth or 0.1), float(meta.max_depth or 80.0),
                               str(name_or_path))
