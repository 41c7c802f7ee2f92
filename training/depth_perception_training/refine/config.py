"""Configuration of ``depth-perception refine`` (layered like training: schema defaults
<- YAML in ``config/refine/`` with ``base_config:`` <- ``key=value`` overrides).

Defaults are the published settings (Re-Depth Anything: 1000 steps, ensemble of 10,
AdamW 1e-3 embeddings / 2e-6 DPT, lambda 1, SD 1.5 with guidance 50, t in [0.02, 0.6],
BLIP-2 captions; Marigold v1-1: ensemble 10, processing resolution 768). Model ids are
hub ids or local folders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

__all__ = ["RefineConfig", "load_refine_config", "METHODS", "ALIGN_TARGETS"]

METHODS = ("redepth", "marigold", "metricgold")
ALIGN_TARGETS = ("auto", "lidar", "teacher", "none")


@dataclass
class RedepthConfig:
    """Re-Depth Anything optimisation (fields of ``refine.redepth.RedepthSettings``) and
    the network input size."""

    steps: int = 1000
    ensemble: int = 10
    lr_embeddings: float = 1.0e-3
    lr_head: float = 2.0e-6
    lr_scale: float = 1.0e-3
    weight_decay: float = 0.01
    shift: float = 0.1
    scale: float = 7.0
    camera: str = "orthographic"
    smoothness_weight: float = 1.0
    sds_weight: float = 1.0
    gamma: float = 2.2
    light_range: float = 1.0
    shininess_exponents: List[int] = field(default_factory=lambda: [2, 8])
    short_side: Optional[int] = 518       # network input: short side, aspect kept, x14
    size: Optional[List[int]] = None      # or a fixed [W, H] (multiples of 14)


@dataclass
class GuidanceConfig:
    """Stable Diffusion used for SDS."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    guidance_scale: float = 50.0
    t_range: List[float] = field(default_factory=lambda: [0.02, 0.6])
    resolution: Optional[int] = None      # None: UNet sample size x VAE factor (512)
    weighting: str = "uniform"
    negative_prompt: str = ""
    half_precision: bool = True           # fp16 weights on CUDA (always fp32 on the CPU)


@dataclass
class CaptionConfig:
    """BLIP-2 caption as the SDS prompt, or a fixed ``prompt`` (then no captioner)."""

    model: str = "Salesforce/blip2-opt-2.7b"
    prompt: Optional[str] = None
    prefix: str = ""
    max_new_tokens: int = 30


@dataclass
class MarigoldConfig:
    model: str = "prs-eth/marigold-depth-v1-1"
    ensemble: int = 10
    steps: Optional[int] = None           # None: the checkpoint's default
    processing_resolution: Optional[int] = 768
    reduction: str = "median"


@dataclass
class MetricGoldConfig:
    """A model of ``depth-perception train metricgold`` (its output_dir/model folder):
    metric depth, no alignment needed."""

    model: str = ""
    ensemble: int = 1
    steps: Optional[int] = None           # None: the model's default


@dataclass
class DataConfig:
    """Which frames: every ``every``-th from ``first``, at most ``max_frames``."""

    first: int = 0
    every: int = 1
    max_frames: Optional[int] = None


@dataclass
class LabelsConfig:
    """How predictions become pseudo labels.

    align_to: ``auto`` = LiDAR when the frame has it, else the ``--model`` teacher for
    Marigold, else nothing; a metric model refined by Re-Depth is never re-aligned under
    ``auto``. align_space: see ``refine.marigold.align_depth`` (``auto``: depth for
    Marigold, disparity_then_depth for disparity models). encoding ``log_depth`` stores
    MetricGold's normalised log depth over [min_depth, max_depth].
    """

    align_to: str = "auto"
    align_space: str = "auto"
    encoding: str = "depth"
    min_depth: float = 0.1
    max_depth: float = 80.0


@dataclass
class RefineConfig:
    base_config: Optional[str] = None
    method: str = "redepth"
    seed: int = 0
    device: str = "cpu"
    redepth: RedepthConfig = field(default_factory=RedepthConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    marigold: MarigoldConfig = field(default_factory=MarigoldConfig)
    metricgold: MetricGoldConfig = field(default_factory=MetricGoldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)


def load_refine_config(path=None, overrides=()):
    """Resolved DictConfig (see :func:`depth_perception_training.train.config.load_config`);
    checks the enumerated fields."""
    from depth_perception_training.train.config import load_config

    cfg = load_config(path, overrides, schema=RefineConfig, kind="refine")
    checks = {"method": (cfg.method, METHODS), "labels.align_to": (cfg.labels.align_to, ALIGN_TARGETS),
              "labels.encoding": (cfg.labels.encoding, ("depth", "log_depth")),
              "labels.align_space": (cfg.labels.align_space,
                                     ("auto", "depth", "disparity", "disparity_then_depth"))}
    for key, (value, allowed) in checks.items():
        if value not in allowed:
            raise ValueError(f"refine config: {key} must be one of {allowed}, got {value!r}")
    return cfg
