"""The self-supervised teacher task (monodepth2 family, md4all velocity loss, SSD teacher).

Builds the collaborators and hands them to :class:`~depth_perception_training.train.trainer.Trainer`:

* depth network (``model.depth``: ``arch: dpt`` DINOv2 + DPT, or ``arch: sql``
  conv encoder + U-Net + Self Query Layer) on the *augmented* target image;
* pose network (``model.pose``: ResNet-18 or a strengthened, pretrained backbone) on
  (context_aug, image_aug) pairs ordered in time (monodepth2 inversion rule);
* :class:`~depth_perception_training.losses.SelfSupervisedLoss`: each predicted depth scale is
  upsampled to full resolution, the *unaugmented* context frames are warped into the
  *unaugmented* target, min-reprojection + auto-mask + edge-aware smoothness, plus the
  weak velocity loss (``||t_pred||`` vs the odometry distance) that makes depth metric;
* data from :class:`~depth_perception_training.dataset.DepthDataset` over the bags of
  ``data.bags`` (static frames are dropped by the dataset); training never makes data:
  synthetic bags come from ``depth-perception synth`` or the demo;
* validation on bags with ground truth or LiDAR (metric, without median scaling) and the
  export of the depth network with ``save_depth_model`` to ``output_dir/model``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_perception.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMetadata
from depth_perception.models import DEPTH_ARCHS, depth_network_class
from depth_perception_training.geometry import full_precision
from depth_perception_training.train.config import TrainConfig, save_config, to_yaml
from depth_perception_training.train.trainer import StepOutput

logger = logging.getLogger(__name__)


# -- the loss callable --------------------------------------------------------------------

class TeacherObjective:
    """``(models, batch) -> StepOutput``: one forward of each network, then the loss.

    models: ``{"depth": depth net, "pose": pose net}`` (possibly DDP-wrapped: only their
    ``forward`` is called, once per step each). batch: a DepthDataset batch.
    depth_is_smoothed: smoothness on the depth (SQL nets) instead of the disparity.
    """

    def __init__(self, loss, offsets: list[int], smooth_depth: bool = False,
                 tie_break_noise: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 depth_size: tuple[int, int] | None = None):
        self.loss = loss
        #: (H, W) of the depth net's input when it differs from the images' (the loss and
        #: pose size), e.g. SSD's DINOv2 at 518x784 with the loss at 320x576
        self.depth_size = None if depth_size is None else (int(depth_size[0]), int(depth_size[1]))
        self.offsets = [int(o) for o in offsets]
        if not self.offsets or 0 in self.offsets:
            raise ValueError(f"teacher: context offsets must be non-zero frame offsets, got {offsets}")
        self.smooth_depth = smooth_depth
        self.tie_break_noise = tie_break_noise
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> normalised with the model's mean/std."""
        return (image - self.mean.to(image)) / self.std.to(image)

    def depth_forward(self, depth_net, image: torch.Tensor, **kwargs) -> dict:
        """The depth net on ``image`` [B,3,H,W] in [0,1] (H x W: the loss size), resized
        to :attr:`depth_size` first when set, normalised; its ``depth`` / ``disp`` /
        ``scaled_disp`` maps (per scale [B,1,h,w]) come back resized by H / h_in, W / w_in,
        so the losses see them at the images' size (SSD: depth output resized to 576x320)."""
        from depth_perception_training.losses import upsample_to

        H, W = image.shape[-2:]
        if self.depth_size is None or self.depth_size == (H, W):
            return full_precision(depth_net(self.normalize(image), **kwargs))
        Hd, Wd = self.depth_size
        out = full_precision(depth_net(self.normalize(upsample_to(image, (Hd, Wd))), **kwargs))
        for key in ("depth", "disp", "scaled_disp"):
            if key in out:
                out[key] = [upsample_to(m, (round(m.shape[-2] * H / Hd), round(m.shape[-1] * W / Wd)))
                            for m in out[key]]
        return out

    def poses(self, pose_net, target: torch.Tensor, context: torch.Tensor):
        """T_src_tgt [B,n,4,4] and raw translations [B,n,3] from one pose forward in
        which each of the n frame pairs runs on its own (no BatchNorm statistics shared
        between pairs, as in the references).

        target: [B,3,H,W]; context: [B,n,3,H,W] (augmented images).
        """
        from depth_perception_training.geometry import ordered_pair, pose_vec_to_matrix

        B, n = context.shape[:2]
        if n != len(self.offsets):
            raise ValueError(f"teacher: batch has {n} context frames, config offsets "
                             f"{self.offsets}")
        pairs = [ordered_pair(target, context[:, i], o) for i, o in enumerate(self.offsets)]
        earlier = torch.cat([p[0] for p in pairs], 0)                    # [n*B,3,H,W]
        later = torch.cat([p[1] for p in pairs], 0)
        axisangle, translation = pose_net(earlier, later, pairs=n)       # [n*B,1,3] x2
        axisangle, translation = full_precision((axisangle, translation))
        T = [pose_vec_to_matrix(axisangle[i * B:(i + 1) * B], translation[i * B:(i + 1) * B],
                                invert=pairs[i][2]) for i in range(n)]
        t = translation.reshape(n, B, 3).transpose(0, 1)                 # [B,n,3]
        return torch.stack(T, 1), t

    def __call__(self, models: dict, batch: dict) -> StepOutput:
        # 1. Depth of the augmented target: lists of [B,1,h,w] per scale
        out = self.depth_forward(models["depth"], batch["image_aug"])
        depths = list(out["depth"])
        smooth = depths if self.smooth_depth else list(out.get("disp", depths))
        # 2. Poses from augmented (earlier, later) pairs
        T, t = self.poses(models["pose"], batch["image_aug"], batch["context_aug"])
        # 3. Photometric + smoothness + velocity on the unaugmented images
        generator = None
        if self.tie_break_noise:
            # seeded from the global RNG, which checkpoints save and restore
            generator = torch.Generator(device=depths[0].device)
            generator.manual_seed(int(torch.randint(0, 2 ** 62, (1,))))
        preds = {"depth": depths, "disp": smooth, "T_src_tgt": T, "translation": t}
        if "scaled_disp" in out and not self.smooth_depth:
            preds["scaled_disp"] = list(out["scaled_disp"])
        total, terms = self.loss(preds, batch, generator=generator)
        terms["translation_norm"] = torch.linalg.vector_norm(t.detach(), dim=-1).mean()
        terms["depth_mean"] = depths[0].detach().mean()
        return StepOutput(total, terms, {"image": batch["image"], "depth": depths[0]})


def predict_depth(models: dict, batch: dict, objective: TeacherObjective) -> torch.Tensor:
    """Validation prediction: depth [B,1,H,W] metres of the unaugmented image, resized to
    the ground truth's size."""
    depth = objective.depth_forward(models["depth"], batch["image"])["depth"][0]
    gt = batch.get("gt_depth", batch.get("lidar_depth"))
    if gt is not None and gt.shape[-2:] != depth.shape[-2:]:
        depth = F.interpolate(depth, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    return depth


# -- builders -----------------------------------------------------------------------------

def _config_object(cls, values: dict, where: str):
    """Instantiate a config dataclass, naming the offending key on error."""
    from depth_perception.models import dataclass_from_dict

    return dataclass_from_dict(cls, values, where)


def depth_arch(cfg: TrainConfig) -> str:
    arch = dict(cfg.model.depth).get("arch")
    if arch not in DEPTH_ARCHS:
        raise ValueError(f"model.depth.arch must be one of {tuple(DEPTH_ARCHS)}, got {arch!r}")
    return arch


def build_models(cfg: TrainConfig):
    """(arch, depth net, depth config dataclass, pose net) from ``cfg.model``.

    Pretrained weights named in the configs (hub ids or local folders) are loaded by
    the model classes; HF_HUB_OFFLINE=1 restricts them to local files.
    """
    from depth_perception.models import build_depth_model, build_pose_model, depth_config

    try:
        arch, depth_cfg = depth_config(dict(cfg.model.depth))
        depth_net = build_depth_model(depth_cfg)
        pose_net = build_pose_model(dict(cfg.model.pose))
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from exc
    return arch, depth_net, depth_cfg, pose_net


def set_initial_depth(depth_net, depth_cfg, depth: float) -> float:
    """Start a randomly initialised sigmoid disparity head at about ``depth`` metres.

    The bias of the head's last convolution (DPT) or of every scale's disparity head
    (monodepth2 decoder) is set to the logit of the sigmoid disparity that
    ``disp_to_depth(min_depth, max_depth)`` maps to ``depth``. At the sigmoid midpoint an
    untrained head predicts ``~2 / (1/min_depth)`` (0.2 m for 0.1..80 m), far below any
    scene; with the velocity loss the pose net reaches metric translations within a few
    steps, and warps of such small depths leave the image, so the photometric loss gives
    the depth too little gradient to catch up. Returns the bias set. Only for networks
    with disparity heads (``depth_net.disparity_heads()``; not SQL, which predicts depth
    through bins).
    """
    convs = depth_net.disparity_heads()
    if not convs:
        raise ValueError(f"model.init_depth applies to sigmoid disparity heads only; "
                         f"{type(depth_net).__name__} has none")
    lo, hi = float(depth_cfg.min_depth), float(depth_cfg.max_depth)
    if not lo < depth < hi:
        raise ValueError(f"model.init_depth {depth} must lie inside ({lo}, {hi})")
    s = (1.0 / depth - 1.0 / hi) / (1.0 / lo - 1.0 / hi)       # sigmoid value
    bias = float(torch.logit(torch.tensor(s, dtype=torch.float64)))
    with torch.no_grad():
        for conv in convs:
            conv.bias.fill_(bias)
    return bias


def set_initial_motion(pose_net, forward: float) -> float:
    """Start a pose decoder at straight forward motion of ``forward`` metres per frame.

    The pose net predicts T_later_earlier of (earlier, later) pairs; a camera moving
    forward by d along its optical axis gives the translation (0, 0, -d). The bias of
    the decoder's last convolution is set so that an untrained network predicts that,
    with zero rotation. A random pose net otherwise starts at no motion and must find
    the direction of travel from the photometric loss alone, while the velocity loss
    drives its translation norm to the odometry distance within a few steps: a wrong
    direction at that point gets auto-masked everywhere and training stalls (seen on
    the tiny CPU configuration). The scale still comes from the velocity loss: ``d`` is
    only a start and need not be right. Pretrained pose backbones do not need this.
    Returns the bias set.
    """
    if not forward > 0:
        raise ValueError(f"model.init_forward_motion must be > 0 metres, got {forward}")
    decoder = pose_net.decoder
    bias = -float(forward) / float(decoder.scale)
    with torch.no_grad():
        decoder.out.bias[:3].zero_()            # axis-angle: no rotation
        decoder.out.bias[3:].zero_()
        decoder.out.bias[5] = bias              # translation z: forward along the optical axis
    return bias


def freeze_unused_parameters(module, *example_inputs) -> list[str]:
    """Freeze parameters that take no part in ``module``'s outputs; returns their names.

    Some architectures carry parameters their forward never uses (DINOv2's mask token
    for masked-image modelling, the residual unit of the first DPT fusion block, which
    has no skip input). DDP requires every trainable parameter to receive a gradient
    each step; freezing these lets it run without ``find_unused_parameters`` (whose
    extra graph traversal costs time every step). Probed once, in eval mode (no
    dropout, no RNG use), with a backward of the sum of every output tensor.
    """
    was_training = module.training
    module.eval()
    for p in module.parameters():
        p.grad = None
    out = module(*example_inputs)
    tensors = [t for t in _tensors(out) if t.requires_grad]
    torch.stack([t.float().sum() for t in tensors]).sum().backward()
    unused = []
    for name, p in module.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            unused.append(name)
        p.grad = None
    module.train(was_training)
    if unused:
        logger.info("frozen %d parameters that receive no gradient: %s", len(unused),
                    unused[:6] + (["..."] if len(unused) > 6 else []))
    return unused


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def build_loss(cfg: TrainConfig):
    from depth_perception_training.losses import SelfSupervisedLoss

    values = dataclasses.asdict(cfg.loss)
    values.pop("tie_break_noise")
    return SelfSupervisedLoss(**values)


def _sample_config(cfg: TrainConfig, validation: bool = False):
    from depth_perception.data.samples import SampleConfig

    d = cfg.data
    values = {"size": (d.width, d.height), "offsets": tuple(d.context), **dict(d.sample)}
    if isinstance(values.get("topics"), dict):
        from depth_perception.data.bag import BagTopics

        values["topics"] = _config_object(BagTopics, values["topics"], "data.sample.topics")
    if validation:
        values["skip_static"] = False
    return _config_object(SampleConfig, values, "data.sample")


def start_run(cfg, task: str):
    """The common start of a ``task`` run: (resolved DictConfig, typed config, training
    bags, validation bags, run folder, accelerator). Checks the task and the bags first
    (no bags, no work), seeds, and writes ``config.yaml`` beside the run."""
    from omegaconf import OmegaConf

    from depth_perception_training.train.config import save_config, to_dataclass
    from depth_perception_training.train.trainer import make_accelerator, seed_everything

    dcfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    cfg = to_dataclass(dcfg)
    if cfg.task != task:
        raise ValueError(f"config task is '{cfg.task}', this is the {task} trainer")
    train_bags, val_bags = resolve_bags(cfg)
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.trainer, out)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    if accelerator.is_main_process:
        save_config(dcfg, out / "config.yaml")
    return dcfg, cfg, train_bags, val_bags, out, accelerator


def resolve_bags(cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    """Training and validation bags named by the config (training never makes data)."""
    d = cfg.data
    train = [Path(b) for b in d.bags]
    val = [Path(b) for b in d.val_bags]
    if not train:
        raise ValueError("no training bags: set data.bags to rosbag2 folders (e.g. "
                         "data.bags=[bags/a,bags/b]); `depth-perception synth OUT` makes "
                         "synthetic ones")
    for b in train + val:
        if not b.exists():
            raise FileNotFoundError(f"bag {b} not found")
    return train, val


def build_datasets(cfg: TrainConfig, train_bags: list[Path], val_bags: list[Path]):
    from depth_perception_training.augment import AugmentConfig
    from depth_perception_training.dataset import DepthDataset

    cache = cfg.data.cache_dir
    augment = (_config_object(AugmentConfig, dict(cfg.data.augmentation), "data.augmentation")
               if cfg.data.augment else None)
    train = DepthDataset([str(b) for b in train_bags], _sample_config(cfg),
                         augment=augment, cache_dir=cache, seed=cfg.seed)
    if len(train) == 0:
        raise ValueError(f"no training sample in {[str(b) for b in train_bags]} (all frames "
                         "static, or context frames missing?)")
    val = None
    if val_bags:
        val = DepthDataset([str(b) for b in val_bags], _sample_config(cfg, validation=True),
                           augment=None, cache_dir=cache, seed=cfg.seed)
    return train, val


def training_focal(dataset) -> tuple[float, float]:
    """(fx, fy) in pixels of the training frames at the training (loss) size: the medians
    over the dataset's bags, with a warning when their cameras disagree by over 2%. The
    frames are resized to that size without keeping the camera's aspect, so fx and fy
    may differ even for a square-pixel camera."""
    fx = [float(seq.intrinsics.fx) for seq in dataset.sequences]
    fy = [float(seq.intrinsics.fy) for seq in dataset.sequences]
    if not fx:
        raise ValueError("the training set has no bag: cannot record the training focal length")
    f = (float(np.median(fx)), float(np.median(fy)))
    if max(fx) > 1.02 * min(fx) or max(fy) > 1.02 * min(fy):
        logger.warning("teacher: the training bags' focal lengths at %dx%d differ (fx %.1f-%.1f,"
                       " fy %.1f-%.1f px); the model records the medians %.1f, %.1f px",
                       dataset.sequences[0].intrinsics.width,
                       dataset.sequences[0].intrinsics.height, min(fx), max(fx), min(fy),
                       max(fy), *f)
    return f


def depth_input_focal(cfg: TrainConfig, focal_xy: tuple[float, float]) -> tuple[float, float]:
    """(fx, fy) in pixels of what the depth net sees: the frames' ``focal_xy`` at the loss
    size ``data.width`` x ``data.height``, resized per axis to :func:`depth_input_size`
    (SSD: 576x320 -> 784x518 scales fx by 1.361 and fy by 1.619)."""
    H, W = depth_input_size(cfg)
    return (float(focal_xy[0]) * W / cfg.data.width, float(focal_xy[1]) * H / cfg.data.height)


def check_teacher_focal(tm, focal_xy: tuple[float, float], width: int, height: int) -> float:
    """Warn when the student's frames (``focal_xy`` at ``width`` x ``height``) and the
    teacher's training frames differ in field of view by over 2 %: the teacher's metric
    depth is off by about that ratio on them. Focal per pixel of the same axis does not
    change with a resize (fx / W, fy / H), so the sizes may differ; teachers that record
    only the mean focal length are compared per pixel of short side. Returns the ratio
    (1.0 when the teacher records no focal length)."""
    if not tm.train_focal_px > 0:
        return 1.0
    fx, fy = focal_xy
    xy = tm.provenance.get("train_focal_xy_px")
    if xy:
        ratio = 0.5 * (fx / width + fy / height) / (
            0.5 * (xy[0] / tm.train_width + xy[1] / tm.train_height))
    else:
        ratio = (0.5 * (fx + fy) / min(height, width)) / (
            tm.train_focal_px / min(tm.train_height, tm.train_width))
    if abs(ratio - 1) > 0.02:
        logger.warning("student: the training frames' focal length (fx %.1f, fy %.1f px at "
                       "%dx%d) is %.3fx the teacher's (%.1f px at %dx%d): the teacher's metric "
                       "depth is off by that ratio on them", fx, fy, width, height, ratio,
                       tm.train_focal_px, tm.train_width, tm.train_height)
    return ratio


def make_metadata(cfg: TrainConfig, task: str, arch: str, depth_cfg, step: int | None,
                  train_focal_xy: tuple[float, float], provenance: dict) -> ModelMetadata:
    """Metadata of an exported depth network (``task`` teacher or student): dynamic size,
    the training size and focal length (what the runtime resizes to by default, see
    runtime/geometry.py), provenance: task, arch, size, bags, step, then ``provenance``.

    ``train_focal_xy``: (fx, fy) of the training frames at the loss size (see
    :func:`training_focal`). The depth net saw them resized per axis to its own input
    size (:func:`depth_input_focal`); ``train_focal_px`` is the mean of those two, the
    focal length the runtime puts at the model input (``runtime.geometry.focal_px``: it
    resizes camera frames keeping their aspect). Both axes go to the provenance
    (``train_focal_xy_px``)."""
    H, W = depth_input_size(cfg)            # what the depth net saw, and its focal there
    fx, fy = depth_input_focal(cfg, train_focal_xy)
    return ModelMetadata(
        output_kind="metric_depth", input_height=0, input_width=0,
        size_multiple=depth_network_class(arch).size_multiple, mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        min_depth=float(depth_cfg.min_depth), max_depth=float(depth_cfg.max_depth),
        train_height=int(H), train_width=int(W), train_focal_px=0.5 * (fx + fy),
        provenance={"task": task, "arch": arch, "train_size": [W, H],
                    "loss_size": [cfg.data.width, cfg.data.height],
                    "train_focal_xy_px": [fx, fy],
                    "bags": list(cfg.data.bags), "step": step, **provenance})


def depth_input_size(cfg: TrainConfig) -> tuple[int, int]:
    """(H, W) of the depth net's input: ``data.depth_height`` x ``data.depth_width`` when
    set, else the images' ``data.height`` x ``data.width``."""
    d = cfg.data
    if (d.depth_width is None) != (d.depth_height is None):
        raise ValueError("data.depth_width and data.depth_height go together: set both "
                         "(the depth net's input size) or neither (the images' size)")
    if d.depth_width is None:
        return int(d.height), int(d.width)
    return int(d.depth_height), int(d.depth_width)


def check_input_size(cfg: TrainConfig, arch: str) -> None:
    """The depth net's input size must be a multiple of its arch's size multiple."""
    H, W = depth_input_size(cfg)
    mult = depth_network_class(arch).size_multiple
    if W % mult or H % mult:
        which = "data.depth_width/depth_height" if cfg.data.depth_width else "data.width/height"
        raise ValueError(f"{which} {W}x{H} must be multiples of {mult} for arch {arch}")


def check_config(cfg: TrainConfig) -> None:
    check_input_size(cfg, depth_arch(cfg))
    if cfg.task != "teacher":
        raise ValueError(f"config task is '{cfg.task}', this is the teacher trainer")


# -- entry point --------------------------------------------------------------------------

def build_teacher_trainer(cfg):
    """The :class:`~depth_perception_training.train.trainer.Trainer` of the teacher task, ready to
    ``fit()``, from a resolved config (DictConfig or TrainConfig)."""
    from omegaconf import OmegaConf

    from depth_perception_training.train.config import to_dataclass
    from depth_perception_training.train.trainer import make_accelerator, seed_everything

    dcfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    cfg = to_dataclass(dcfg)
    check_config(cfg)
    train_bags, val_bags = resolve_bags(cfg)        # the data first: no bags, no work
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.trainer, out)

    logger.info("teacher: %s on %s, %d processes", accelerator.distributed_type,
                accelerator.device, accelerator.num_processes)

    # 1. Seeds, then the resolved config beside the checkpoints
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    if accelerator.is_main_process:
        save_config(dcfg, out / "config.yaml")

    # 2. Models (right after seeding: the init depends on the seed only), groups, loss
    arch, depth_net, depth_cfg, pose_net = build_models(cfg)
    if cfg.model.reset_random_init:
        depth_net.reset_random_layers()
    if cfg.model.init_depth is not None:
        set_initial_depth(depth_net, depth_cfg, cfg.model.init_depth)
    if cfg.model.init_forward_motion is not None:
        set_initial_motion(pose_net, cfg.model.init_forward_motion)
    probe = torch.zeros(1, 3, cfg.data.height, cfg.data.width)
    freeze_unused_parameters(depth_net, torch.zeros(1, 3, *depth_input_size(cfg)))
    freeze_unused_parameters(pose_net, probe, probe)
    o = cfg.optim
    groups = depth_net.param_groups(o.lr_encoder, o.lr_decoder) + pose_net.param_groups(o.lr_pose)
    # a network without disparity heads predicts depth directly: smoothness on depth
    objective = TeacherObjective(build_loss(cfg), cfg.data.context,
                                 smooth_depth=not depth_net.disparity_heads(),
                                 tie_break_noise=cfg.loss.tie_break_noise,
                                 depth_size=depth_input_size(cfg))

    # 3. Data
    train_set, val_set = build_datasets(cfg, train_bags, val_bags)
    focal = training_focal(train_set)
    logger.info("teacher: %d training samples from %d bags, %s validation samples; "
                "%dx%d frames (pose net and losses), depth net at %dx%d, fx, fy %.1f, %.1f px",
                len(train_set), len(train_bags), len(val_set) if val_set else 0,
                cfg.data.width, cfg.data.height, *depth_input_size(cfg)[::-1], *focal)

    # 4. Loaders, export of the depth network (a checkpoint folder for node / evaluate /
    #    export), the trainer
    return build_depth_trainer(
        cfg, dcfg, {"depth": depth_net, "pose": pose_net}, groups, objective, train_set,
        val_set, accelerator, depth_cfg, train_bags,
        lambda step: make_metadata(cfg, "teacher", arch, depth_cfg, step, focal,
                                   {"velocity_weight": cfg.loss.velocity_weight}))


def build_depth_trainer(cfg: TrainConfig, dcfg, models: dict, groups: list, objective,
                        train_set, val_set, accelerator, depth_cfg, prior_bags: list,
                        metadata_at):
    """The trainer setup the teacher and the student share: their loaders, the export of
    ``models["depth"]`` as a checkpoint folder with ``metadata_at(step)``, validation by
    :func:`predict_depth` against ``depth_cfg``'s range and the image-blind prior of
    ``prior_bags``, the resolved config ``dcfg`` beside the checkpoints."""
    from depth_perception_training.train.trainer import (Trainer, build_train_loader,
                                                         build_val_loader)

    train_loader = build_train_loader(train_set, cfg.data.batch_size, seed=cfg.seed,
                                      num_workers=cfg.data.num_workers)
    val_loader = (build_val_loader(val_set, cfg.data.val_batch_size, cfg.data.num_workers)
                  if val_set is not None and len(val_set) else None)

    def export(models: dict, folder: Path) -> None:
        from depth_perception.models import save_depth_model

        save_depth_model(folder, models["depth"], depth_cfg, metadata_at(trainer.state.step))

    trainer = Trainer(cfg.trainer, cfg.optim, models, groups, train_loader, objective,
                      Path(cfg.output_dir), val_loader=val_loader,
                      predict_fn=lambda models, batch: predict_depth(models, batch, objective),
                      export_fn=export, accelerator=accelerator, config_yaml=to_yaml(dcfg),
                      min_depth=depth_cfg.min_depth, max_depth=cfg.trainer.val_max_depth,
                      median_scaling=validation_median_scaling(cfg),
                      prior=training_prior(cfg, prior_bags) if val_loader is not None else None)
    return trainer


def validation_median_scaling(cfg: TrainConfig) -> bool:
    """``trainer.val_median_scaling``: on, off, or auto (on when there is no velocity loss)."""
    mode = cfg.trainer.val_median_scaling
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"trainer.val_median_scaling must be auto, on or off, got {mode!r}")
    return mode == "on" or (mode == "auto" and cfg.loss.velocity_weight <= 0)


def training_prior(cfg: TrainConfig, train_bags: list[Path]):
    """[H,W] image-blind prior (per-pixel median ground truth of the training bags, at
    the training size) for validation, or None (``data.val_prior`` off, or no ground
    truth in the training bags)."""
    if not cfg.data.val_prior:
        return None
    from depth_perception.evaluation.prior import prior_from_bags

    topics = dict(cfg.data.sample).get("topics") or {}
    topic = topics.get("gt_depth", "/ground_truth/depth") if isinstance(topics, dict) \
        else "/ground_truth/depth"
    try:
        return prior_from_bags(train_bags, topic, size=(cfg.data.width, cfg.data.height),
                               max_depth=cfg.trainer.val_max_depth)
    except ValueError as exc:
        logger.warning("validation without the image-blind prior: %s", exc)
        return None


def train_teacher(cfg):
    """Run the teacher training described by a resolved config (DictConfig or TrainConfig).

    Returns the :class:`~depth_perception_training.train.trainer.TrainResult`.
    """
    return build_teacher_trainer(cfg).fit()
