"""Configuration of ``depth-perception translate`` (layered like the training configs).

Schema defaults (below) <- ``config/translate/<name>.yaml`` and its ``base_config:``
chain <- ``key=value`` overrides on the command line. Unknown keys and wrong types are
errors naming the key and the file they came from. Light module (omegaconf only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

#: what each condition is called in prompts by default (SSD, Fig. 3)
DEFAULT_PREFIXES = {"night": "At night", "rain": "In a rainy day", "snow": "In a snowy day"}


@dataclass
class SourceConfig:
    """The day-clear frames to translate."""

    bags: List[str] = field(default_factory=list)   # bag folders, or folders holding bags
    image_topic: str = "/camera/image_raw"           # or its /compressed variant in the bag
    camera_info_topic: str = "/camera/camera_info"
    every: int = 1              # every n-th frame of each bag
    max_frames: int = 0         # per bag, 0 = all


@dataclass
class StyleSource:
    """Real frames of one target condition, used as IP-Adapter image prompts."""

    bags: List[str] = field(default_factory=list)
    folder: Optional[str] = None        # *.png / *.jpg
    max_images: int = 64                # frames drawn evenly from the bags


@dataclass
class ModelsConfig:
    """Model ids: hub ids or local folders in the hub's layout (``save_pretrained``)."""

    captioner: str = "Salesforce/blip2-opt-2.7b"
    depth: str = "Intel/dpt-hybrid-midas"
    stable_diffusion: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    controlnet: str = "lllyasviel/control_v11f1p_sd15_depth"
    ip_adapter: str = "h94/IP-Adapter"
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = "ip-adapter_sd15.safetensors"
    image_encoder_folder: str = "image_encoder"    # inside ip_adapter_subfolder
    local_files_only: bool = False      # HF_HUB_OFFLINE=1 has the same effect
    #: build tiny random models into ``output_dir/tiny_models`` and use them (CPU check)
    tiny: bool = False


@dataclass
class CaptionConfig:
    enabled: bool = True
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    #: used when captioning is disabled or a caption comes out empty
    fallback: str = "a street scene"


@dataclass
class ControlDepthConfig:
    """MiDaS/DPT depth refined PatchFusion-style (global + overlapping tiles)."""

    grid: List[int] = field(default_factory=lambda: [7, 7])   # rows, cols (p49)
    overlap: float = 0.5        # fraction of a tile shared with its neighbour
    batch_size: int = 8         # tiles per forward pass


@dataclass
class DiffusionConfig:
    resolution: int = 512       # short side of the generation size (rounded to /64)
    steps: int = 30
    guidance_scale: float = 7.5
    controlnet_scale: float = 1.0
    ip_adapter_scale: float = 0.6
    scheduler: str = "UniPCMultistepScheduler"     # any diffusers scheduler class
    negative_prompt: str = "cartoon, painting, blurry, low quality, distorted"
    dtype: str = "auto"         # auto (fp16 on CUDA, fp32 on CPU) | fp16 | bf16 | fp32
    cpu_offload: bool = False   # model CPU offload (8-12 GB GPUs; needs accelerate + CUDA)


@dataclass
class ConsistencyConfig:
    """Control depth of the output vs the source's (scale-and-shift invariant error).

    Not part of SSD (its GDT has no such filter): off by default. When on, it judges the
    translation as produced, before GDT's night darkening (``brightness``), and
    ``summary.json`` gives the rejection rate per condition."""

    enabled: bool = False
    threshold: float = 0.3
    #: compare the tiled control depth (true) or only the global predictions (false:
    #: one forward pass per output instead of rows x cols + 1)
    tiled: bool = True


@dataclass
class PairedConfig:
    """Where the other renderings of the same frames are."""

    #: {condition: [bags]} in the order of source.bags; empty: ``sibling`` below
    bags: Dict[str, List[str]] = field(default_factory=dict)
    #: per source bag, the folder of its ``condition`` rendering (synth layout)
    sibling: str = "{parent}/{condition}"
    max_stamp_diff_ms: float = 0.0


@dataclass
class PhotometricConfig:
    """Classical night / rain / snow synthesis (see :mod:`.photometric`)."""

    night_exposure: float = 0.2         # gain on linear intensity
    night_gamma: float = 1.2            # extra gamma on top of sRGB (crushes shadows)
    night_tint: List[float] = field(default_factory=lambda: [0.9, 0.95, 1.15])   # RGB
    read_noise: float = 0.01            # std on [0, 1] values
    shot_noise: float = 0.02            # std of the signal-dependent part at full scale
    night_lights: int = 6               # street lamps / headlights with glare halos
    glare_sigma: float = 6.0            # px, at 640 px width
    glare_strength: float = 0.6
    rain_streaks: int = 400             # at 640 px width
    rain_length: int = 18               # px, at 640 px width
    rain_angle_deg: float = 15.0
    rain_strength: float = 0.25
    rain_haze: float = 0.25             # blend towards a grey veil
    rain_blur_sigma: float = 1.0
    snow_flakes: int = 300
    snow_haze: float = 0.3


@dataclass
class TranslateConfig:
    translator: str = "gdt"
    base_config: Optional[str] = None
    output_dir: str = "runs/translate"
    seed: int = 0
    conditions: List[str] = field(default_factory=lambda: ["night", "rain"])
    prefixes: Dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PREFIXES))
    prompt_template: str = "{prefix}, {caption}"
    #: night outputs scaled (in linear light) to this mean sRGB luma; null = untouched
    brightness: Dict[str, float] = field(default_factory=lambda: {"night": 0.15})
    image_format: str = "png"           # png | jpg
    write_bags: bool = False            # a rosbag2 per (source bag, condition)
    bag_storage: str = "mcap"
    cpu: bool = False                   # stay on the CPU even with a GPU
    source: SourceConfig = field(default_factory=SourceConfig)
    style: Dict[str, StyleSource] = field(default_factory=dict)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    control_depth: ControlDepthConfig = field(default_factory=ControlDepthConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    paired: PairedConfig = field(default_factory=PairedConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)


def load_translate_config(path=None, overrides=()) -> TranslateConfig:
    """Resolved, checked :class:`TranslateConfig` (see the module docstring)."""
    from omegaconf import OmegaConf

    from depth_perception_training.train.config import load_config

    cfg: TranslateConfig = OmegaConf.to_object(
        load_config(path, overrides, schema=TranslateConfig, kind="translate"))
    check_config(cfg)
    return cfg


def check_config(cfg: TranslateConfig) -> None:
    """Values the schema's types cannot check; ValueError naming the key."""
    from depth_perception_training.translate.translators import translator_class

    translator = translator_class(cfg.translator)    # ValueError for a name not registered
    if not cfg.conditions:
        raise ValueError("conditions is empty; expected target conditions such as [night, rain]")
    if "day-clear" in cfg.conditions:
        raise ValueError("conditions: day-clear is the source condition, not a target")
    if len(set(cfg.conditions)) != len(cfg.conditions):
        raise ValueError(f"conditions lists a condition twice: {cfg.conditions}")
    if cfg.image_format not in ("png", "jpg"):
        raise ValueError(f"image_format '{cfg.image_format}': expected png or jpg")
    if cfg.bag_storage not in ("mcap", "sqlite3"):
        raise ValueError(f"bag_storage '{cfg.bag_storage}': expected mcap or sqlite3")
    if cfg.source.every < 1 or cfg.source.max_frames < 0:
        raise ValueError("source.every must be >= 1 and source.max_frames >= 0")
    grid = cfg.control_depth.grid
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"control_depth.grid must be [rows, cols] >= 1, got {grid}")
    if not 0.0 <= cfg.control_depth.overlap < 1.0:
        raise ValueError(f"control_depth.overlap must be in [0, 1), got {cfg.control_depth.overlap}")
    if cfg.diffusion.dtype not in ("auto", "fp16", "bf16", "fp32"):
        raise ValueError(f"diffusion.dtype '{cfg.diffusion.dtype}': expected auto, fp16, bf16 or fp32")
    if cfg.diffusion.resolution < 64 or cfg.diffusion.steps < 1:
        raise ValueError("diffusion.resolution must be >= 64 and diffusion.steps >= 1")
    translator.check_config(cfg)
