"""Layered training configuration.

Layers, later wins:

1. the schema defaults of :class:`TrainConfig` (dataclasses below);
2. the experiment YAML and, first, the chain of files it names with ``base_config:``
   (a path relative to the file naming it, e.g. ``base_config: defaults.yaml``);
3. command-line overrides in OmegaConf dotlist style:
   ``data.bags=[a.mcap,b.mcap] trainer.max_steps=200 output_dir=runs/x``.

Every layer is checked against the schema: an unknown key or a value of the wrong type
raises ``ValueError`` naming the key and the file (or ``command line``) it came from.
The resolved configuration is written as ``config.yaml`` in the run folder and in every
checkpoint (:func:`save_config`), and reloads to the same values.

This module is light (omegaconf + yaml only): the CLI and tests load configs without torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """What to train on and how samples are cut (see ``depth_perception_training.dataset``)."""

    #: rosbag2 folders to train on (make synthetic ones with `depth-perception synth`)
    bags: List[str] = field(default_factory=list)
    val_bags: List[str] = field(default_factory=list)   # bags with LiDAR or ground truth
    #: image-blind prior in validation: per-pixel median depth of the training bags'
    #: ground truth (abs_rel of the prior and structure-pixel abs_rel are logged beside
    #: the model's)
    val_prior: bool = True
    #: frame size: the pose net's input, the losses, validation; also the depth net's
    #: input unless depth_width / depth_height are set
    width: int = 640
    height: int = 192
    #: depth net input size (multiples of 14 for DPT, 32 for conv nets) when it differs
    #: from the frame size: frames are resized to it for the depth net, and its outputs
    #: back to width x height for the losses (SSD: DINOv2 at 784x518, pose and losses at
    #: 576x320); null: width x height. The exported model records this size.
    depth_width: Optional[int] = None
    depth_height: Optional[int] = None
    context: List[int] = field(default_factory=lambda: [-1, 1])   # frame offsets
    batch_size: int = 12
    val_batch_size: int = 4
    num_workers: int = 4
    augment: bool = True
    #: fields of the dataset's AugmentConfig (colour jitter, noise, flip probabilities)
    augmentation: Dict[str, Any] = field(default_factory=dict)
    cache_dir: Optional[str] = None
    #: further fields of the dataset's SampleConfig (checked against it when building)
    sample: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Depth and pose networks.

    ``depth`` / ``pose`` hold the fields of the model config dataclasses of
    :mod:`depth_perception.models` (checked against them when the task builds the
    models: an unknown field is an error there too). Pretrained weights are named inside
    them by hub id or local folder.
    """

    depth: Dict[str, Any] = field(default_factory=dict)
    pose: Dict[str, Any] = field(default_factory=dict)
    #: re-initialise random DPT layers with PyTorch's default init (see
    #: DepthNetwork.reset_random_layers)
    reset_random_init: bool = True
    #: start a random DPT head at about this depth in metres (None: sigmoid midpoint;
    #: see depth_perception_training.train.teacher.set_initial_depth)
    init_depth: Optional[float] = None
    #: start a randomly initialised pose decoder at this forward motion per frame in
    #: metres (None: no motion; see depth_perception_training.train.teacher.set_initial_motion)
    init_forward_motion: Optional[float] = None


@dataclass
class LossConfig:
    """Weights of :class:`depth_perception_training.losses.SelfSupervisedLoss`."""

    photometric_weight: float = 1.0
    smoothness_weight: float = 1e-3
    velocity_weight: float = 0.02
    automask: bool = True
    ssim_window: int = 3
    ssim_alpha: float = 0.85
    upsample_mode: str = "bilinear"
    #: what is upsampled to full resolution before warping: "disp" (monodepth2: the
    #: scaled disparity of each scale, then inverted) or "depth"
    upsample: str = "disp"
    padding_mode: str = "border"
    tie_break_noise: bool = True   # monodepth2's 1e-5 noise on identity errors


@dataclass
class OptimConfig:
    """Optimizer with three parameter groups and a schedule (DINO-SD defaults: StepLR)."""

    name: str = "adamw"                # adam | adamw
    lr_pose: float = 1e-4
    lr_encoder: float = 5e-6
    lr_decoder: float = 5e-5
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.0             # max global grad norm; 0 = no clipping (references)
    #: step (StepLR) | linear (per-step linear decay to 0 over the run, SSD; needs
    #: interval: step) | exponential (Marigold's IterExponential: linear warm-up over
    #: warmup_steps updates, then lr x final_ratio^(n / (decay_steps - warmup_steps)),
    #: final_ratio from decay_steps on; needs interval: step) | none
    scheduler: str = "step"
    step_size: int = 15                # StepLR period, in units of ``interval``
    gamma: float = 0.1
    interval: str = "epoch"            # epoch | step
    final_ratio: float = 0.01          # exponential: lr factor reached at decay_steps
    warmup_steps: int = 0              # exponential: updates of linear warm-up from 0
    decay_steps: int = 0               # exponential: updates to final_ratio; 0 = the run's


@dataclass
class TrainerConfig:
    """Loop, logging, validation and checkpoint cadence (steps = batches)."""

    max_steps: int = 0                 # > 0: stop after this many steps (wins over epochs)
    max_epochs: int = 20
    log_every: int = 50
    image_every: int = 500             # TensorBoard depth images; 0 = never
    val_every: int = 1000              # 0 = only at the end; < 0 = never
    val_max_batches: int = 0           # 0 = the whole validation set
    val_max_depth: float = 80.0        # validation cap (nuScenes protocol), whatever the model range
    #: per-image median scaling in validation: "auto" = only when the loss has no
    #: velocity term (scale-ambiguous training), "on", "off"
    val_median_scaling: str = "auto"
    checkpoint_every: int = 1000       # 0 = only at the end
    keep_checkpoints: int = 3
    export_every_checkpoint: bool = False
    resume: Optional[str] = None       # auto | PATH | None
    mixed_precision: Optional[str] = None   # no | fp16 | bf16; None: what `accelerate launch` says
    cpu: bool = False                  # force CPU even with a GPU
    gradient_accumulation_steps: int = 1
    find_unused_parameters: bool = False
    progress: bool = True              # tqdm bar on the main process, on a terminal
    #: without a bar (progress off, or output to a file or pipe): a log line with step,
    #: loss and time left at most this often (seconds; 0 = none)
    progress_seconds: float = 30.0
    #: exponential moving average of the weights (0 = off), warmed up as
    #: min(decay, (1 + n) / (10 + n)) after n updates; validation, the final export and
    #: a student's teacher use the average (``ema_<model>.safetensors`` in checkpoints)
    ema_decay: float = 0.0
    deterministic: bool = False        # torch.use_deterministic_algorithms
    #: the trained networks and the batch's images in channels-last memory order: the
    #: same arithmetic, convolutions about 1.4x faster with oneDNN on a CPU (the
    #: results differ from contiguous order by float rounding only)
    channels_last: bool = False


@dataclass
class SemanticConfig:
    """SSD semantic loss (Eq. 7): 1 - mean cosine between the student encoder's tokens of
    its (translated) input and a frozen encoder's tokens of the day-clear frame."""

    weight: float = 0.0
    #: ``teacher``: the frozen teacher's own encoder (CPU scale, where no pretrained
    #: DINOv2 exists); otherwise a DINOv2 hub id or local folder (e.g. facebook/dinov2-base)
    encoder: str = "teacher"
    local_files_only: bool = False


@dataclass
class StudentConfig:
    """SSD student distillation (``task: student``); see depth_perception_training.train.student."""

    #: teacher run folder (its config.yaml, checkpoints/ with the pose net, model/)
    teacher: str = ""
    #: ``teacher``: the student starts as a copy of the teacher's depth net (its
    #: architecture; model.depth must stay empty); ``model``: built from model.depth
    #: (pretrained DINOv2 or a ResNet by id/folder, or random)
    init: str = "teacher"
    #: keep the student's BatchNorm layers in eval mode (the running statistics it starts
    #: with; scale and shift still train). A teacher copy normalised with the batch
    #: statistics of day/night/rain batches no longer computes the teacher's day output
    #: (measured: 11% mean relative depth change on day frames of a mixed batch, 4.6% in a
    #: day-only one), and its running statistics drift to the mixture. No effect on
    #: networks without BatchNorm (DINOv2 / DPT use LayerNorm).
    freeze_batchnorm: bool = False
    #: output folders of ``depth-perception translate`` (any translator) over data.bags;
    #: a frame's translations are merged over all of them (the first folder wins a tie)
    translations: List[str] = field(default_factory=list)
    #: when set (gdt | paired | photometric), every translation must come from this
    #: translator (checked against the manifests)
    translator: Optional[str] = None
    conditions: List[str] = field(default_factory=lambda: ["night", "rain"])
    #: probability that the student sees the unchanged day-clear frame; null: |C|/(|C|+1),
    #: SSD's P as printed (2/3 for night and rain, each condition 1/6); 1/(|C|+1) is the
    #: other reading (P as the probability of a translation: every condition and the
    #: unchanged frame equally likely, as md4all mixes)
    keep_probability: Optional[float] = None
    #: ``teacher``: SSD teacher loss (distillation masked by Eq. 5); ``distillation``: md4all-DD
    loss: str = "teacher"
    #: Eq. 5 reading: ``text`` (distil where the teacher's depth explains the day frames at
    #: least as well as the student's) or ``printed`` (the inequality as typeset)
    mask_reading: str = "text"
    distill_weight: float = 1.0
    #: > 0: the student also learns a per-pixel log-variance against the teacher's depth
    #: (Poggi et al. CVPR 2020 self-teaching; not part of SSD), exported as the model's
    #: second output ``log_variance``, which the node turns into confidence/image
    self_teaching_weight: float = 0.0
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    #: a label folder of ``depth-perception refine --out`` (Re-Depth Anything or Marigold,
    #: metric labels of the day-clear frames of data.bags): the distillation target of a
    #: frame is its label instead of the frozen teacher's forward pass (the teacher run
    #: still gives the PoseNet of ``loss: teacher``, where the label is the depth the mask
    #: tests, and the initial weights of ``init: teacher``). Frames without a label are
    #: left out of training and counted in the log; pixels without a label carry no loss.
    pseudo_labels: Optional[str] = None
    #: keep the frozen teacher's outputs per training sample (depth, scaled disparity,
    #: tokens, poses, the photometric errors of its depth) after the sample's first batch,
    #: instead of running the teacher again each epoch: the same numbers (the teacher sees
    #: the unaugmented day frames), less time, memory of about 6 frames per sample at the
    #: CPU scale (far more with DINOv2 tokens: off by default)
    cache_teacher: bool = False
    #: after training, export OUTPUT_DIR/model to OUTPUT_DIR/model.onnx (parity-checked)
    #: and, where TensorRT and a GPU exist, a TensorRT engine beside it
    export_onnx: bool = True
    export_engine: bool = True


@dataclass
class MetricGoldConfig:
    """MetricGold fine-tuning (``task: metricgold``); see
    depth_perception_training.train.metricgold for where each number comes from."""

    #: Stable Diffusion folder or hub id the UNet, VAE and text encoder come from
    #: (Marigold: stable-diffusion-2); ``tiny``: random-weight tiny components
    base: str = "stabilityai/stable-diffusion-2"
    local_files_only: bool = False
    lr: float = 3e-5                   # Marigold train_marigold_depth.yaml
    #: log-depth range in metres (MetricGold's text gives none: the range this package
    #: evaluates outdoor depth in, 80 m as Marigold's Virtual KITTI cap)
    min_depth: float = 1.0
    max_depth: float = 80.0
    noise_strength: float = 0.9        # multi-resolution noise (Marigold)
    noise_annealed: bool = True
    flip_probability: float = 0.5      # Marigold's only augmentation
    denoising_steps: int = 4           # the exported pipeline's default (Marigold v1-1)
    val_denoising_steps: int = 1       # in-training validation (Marigold: 1, no ensemble)


@dataclass
class TrainConfig:
    task: str = "teacher"
    base_config: Optional[str] = None
    output_dir: str = "runs/teacher"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    metricgold: MetricGoldConfig = field(default_factory=MetricGoldConfig)


# -- loading ------------------------------------------------------------------------------

def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"training config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"training config {path}: expected a mapping at the top level, got "
                         f"{type(data).__name__}")
    return data


def config_chain(path: str | Path) -> list[tuple[Path, dict]]:
    """The YAML files to merge, base first: follows ``base_config:`` links."""
    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    current: Path | None = Path(path).resolve()
    while current is not None:
        if current in seen:
            raise ValueError(f"training config: base_config cycle through {current}")
        seen.add(current)
        data = _read_yaml(current)
        chain.append((current, data))
        base = data.get("base_config")
        current = (current.parent / base).resolve() if base else None
    return chain[::-1]


def _merge_layer(cfg, layer: dict | Any, source: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return OmegaConf.merge(cfg, layer)
    except ConfigKeyError as exc:
        key = getattr(exc, "full_key", None) or str(exc)
        raise ValueError(f"{source}: unknown configuration key '{key}' "
                         f"({str(exc).splitlines()[0]})") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "")
        raise ValueError(f"{source}: invalid value for '{key}': "
                         f"{str(exc).splitlines()[0]}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                schema: type = TrainConfig, kind: str = "train"):
    """Resolve schema defaults <- YAML chain <- dotlist overrides into a DictConfig.

    ``kind`` names the shipped config folder a bare name is looked up in
    (``config/<kind>/``). Raises FileNotFoundError for a missing file and ValueError
    (naming key and source) for unknown keys, wrong types or malformed overrides.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    if path is not None:
        from depth_perception_training import resolve_config

        for file, data in config_chain(resolve_config(path, kind)):
            cfg = _merge_layer(cfg, data, str(file))
    overrides = list(overrides)
    if overrides:
        malformed = [o for o in overrides if "=" not in o or o.startswith("=")]
        if malformed:
            raise ValueError(f"command line: overrides must look like key=value, got {malformed}")
        try:
            dot = OmegaConf.from_dotlist(overrides)
        except Exception as exc:  # omegaconf grammar errors
            raise ValueError(f"command line: cannot parse overrides {overrides}: {exc}") from None
        cfg = _merge_layer(cfg, dot, "command line")
    return cfg


def to_dataclass(cfg) -> TrainConfig:
    """Typed view (:class:`TrainConfig` instance) of a resolved DictConfig."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg)


def to_yaml(cfg) -> str:
    """The resolved configuration as self-contained YAML.

    Every key is explicit, so ``base_config`` is cleared (recorded in a comment): the
    text reloads to the same values wherever it is stored.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    base = cfg.get("base_config")
    header = f"# resolved configuration (base_config was {base})\n" if base else ""
    if "base_config" in cfg:
        cfg.base_config = None
    return header + OmegaConf.to_yaml(cfg)


def save_config(cfg, path: str | Path) -> Path:
    """Write the resolved configuration (reloadable with :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_yaml(cfg)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
