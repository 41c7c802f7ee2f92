"""The SSD student task: distillation from a frozen day teacher on translated frames.

SSD Sec. 3.3 (Eq. 4-7) on top of md4all-DD. Per step, for a batch of
:class:`~depth_perception_training.student_data.StudentDataset` samples:

1. the frozen teacher depth net sees the original day-clear frame (never the
   translated, jittered or flipped one): scaled disparity ``d_t`` [B,1,H,W] (and, for the
   semantic loss at CPU scale, its encoder tokens);
2. the student sees ``student_image`` (day-clear or a translation, augmented, maybe
   flipped); its outputs are flipped back; each scale is upsampled to H x W;
3. md4all-DD distillation per pixel ``Ld = |d_s - d_t| / d_s`` on scaled disparities;
4. ``loss: teacher`` (SSD Eq. 4-6): the teacher PoseNet gives T_{t'->t} from the day
   frames; the adjacent day frames are warped into the day target with the teacher's
   and with the student's depth; ``M = teacher_loss_mask(...)`` and ``Lt = mean(M * Ld)``
   (``loss: distillation``: ``mean(Ld)``), averaged over the student's scales;
5. semantic loss (Eq. 7) ``1 - mean cos(f_student, f_frozen)`` between the student
   encoder's tokens (un-flipped) and a frozen encoder's tokens of the day-clear frame:
   a pretrained DINOv2 (hub id or folder), or at CPU scale the frozen teacher's encoder.
6. with ``student.self_teaching_weight`` > 0 (not in SSD: Poggi et al.'s self-teaching,
   a named addition), a log-variance head on the student learns the Laplacian NLL of
   the student's log depth against the teacher's (:mod:`depth_perception.models.
   uncertainty`); it is exported as the model's second output ``log_variance``.

With ``student.pseudo_labels`` (a ``depth-perception refine`` folder: Re-Depth Anything
or Marigold labels) step 1 reads the day frame's label instead of running the teacher:
``d_t = 1 / label``, and pixels without a label carry no loss.

The student's own pose net is dropped (as in SSD). Teacher networks stay outside the
trainer's models: never optimised, never checkpointed (the config names the teacher
run, so resuming rebuilds them). The finished run exports ``OUTPUT_DIR/model`` (a depth
model folder like the teacher's) and, with ``student.export_onnx``, a parity-checked
``OUTPUT_DIR/model.onnx`` (plus a TensorRT engine where TensorRT exists).
"""
from __future__ import annotations

import copy
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from depth_perception.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMetadata
from depth_perception.models.uncertainty import self_teaching_loss
from depth_perception_training.geometry import full_precision
from depth_perception_training.losses import (MASK_READINGS, _ssim, abs_rel_distillation_map,
                                              photometric_error, semantic_cosine_loss,
                                              teacher_loss_mask, upsample_to)
from depth_perception_training.train.config import TrainConfig, save_config
from depth_perception_training.train.student_parts import (  # noqa: F401 (names of the task)
    FrozenDinov2, FrozenStatsBatchNorm2d, _freeze, freeze_batchnorm_statistics, teacher_sized,
    unflip, unflip_tokens)
from depth_perception_training.train.teacher_cache import TeacherCache
from depth_perception_training.train.trainer import StepOutput

logger = logging.getLogger(__name__)

STUDENT_LOSSES = ("teacher", "distillation")
STUDENT_INITS = ("teacher", "model")


# -- the frozen teacher -------------------------------------------------------------------

@dataclass
class Teacher:
    """Frozen networks of a teacher run: depth net (raw, not the inference wrapper),
    its config dataclass and arch, the pose net, the exported metadata."""

    depth: nn.Module
    depth_cfg: object
    arch: str
    pose: nn.Module
    metadata: ModelMetadata
    run_dir: Path


def load_teacher(run_dir: str | Path) -> Teacher:
    """The frozen depth and pose nets of a finished teacher run folder.

    Reads ``model/`` (the exported depth net), ``config.yaml`` (the pose net's config)
    and the pose weights of the newest checkpoint: the averaged ones
    (``ema_pose.safetensors``) when the teacher trained with ``trainer.ema_decay``, as its
    exported depth net is, else ``model_1.safetensors`` (the trainer saves its models in
    the order depth, pose).
    """
    from safetensors.torch import load_file

    from depth_perception.models import build_pose_model, load_depth_model
    from depth_perception_training.train.checkpoint import latest_checkpoint
    from depth_perception_training.train.config import load_config

    run = Path(run_dir)
    if not str(run_dir) or not run.is_dir():
        raise FileNotFoundError(f"student.teacher: teacher run folder '{run_dir}' not found "
                                "(train one with `depth-perception train teacher`)")
    module, metadata = load_depth_model(run / "model")
    depth = module.net
    model_config = json.loads((run / "model" / "model_config.json").read_text())
    from depth_perception.models import depth_config

    arch, depth_cfg = depth_config({k: v for k, v in model_config.items() if k != "hf_config"})
    cfg = load_config(run / "config.yaml")
    ckpt = latest_checkpoint(run)
    weights = None
    if ckpt is not None:
        from depth_perception_training.train.ema import ema_file

        weights = ckpt / ema_file("pose")
        if not weights.is_file():
            weights = ckpt / "model_1.safetensors"
    if weights is None or not weights.is_file():
        raise FileNotFoundError(f"student.teacher: {run} has no checkpoint with pose weights "
                                "(checkpoints/step_*/model_1.safetensors); the teacher PoseNet "
                                "is needed for the teacher loss")
    pose = build_pose_model(dict(cfg.model.pose))
    pose.load_state_dict(load_file(str(weights)))
    return Teacher(_freeze(depth), depth_cfg, arch, _freeze(pose), metadata, run)


class StudentObjective:
    """``(models, batch) -> StepOutput`` of the student task (steps in the module doc).

    models: ``{"depth": student depth net}`` (possibly DDP-wrapped). The teacher and
    the semantic encoder are held here, frozen, and moved with :meth:`to`.
    ``timing`` accumulates seconds spent in the teacher's forwards and in whole calls.
    """

    def __init__(self, teacher: Teacher, offsets: list[int], loss: str = "teacher",
                 mask_reading: str = "text", distill_weight: float = 1.0,
                 semantic_weight: float = 0.0, semantic_encoder: nn.Module | None = None,
                 ssim_alpha: float = 0.85, padding_mode: str = "border",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, pseudo_labels: bool = False,
                 depth_size: tuple[int, int] | None = None, cache_teacher: bool = False,
                 self_teaching_weight: float = 0.0):
        if loss not in STUDENT_LOSSES:
            raise ValueError(f"student.loss must be one of {STUDENT_LOSSES}, got {loss!r}")
        if mask_reading not in MASK_READINGS:
            raise ValueError(f"student.mask_reading must be one of {MASK_READINGS}, got "
                             f"{mask_reading!r}")
        from depth_perception_training.train.teacher import TeacherObjective

        self.teacher = teacher
        # the teacher task's pose plumbing (ordered pairs, inversion rule), reused as is
        # and its depth-net input sizing (``depth_size``: the student net's input (H, W))
        self._poses = TeacherObjective(None, offsets, mean=mean, std=std, depth_size=depth_size)
        self.loss, self.mask_reading = loss, mask_reading
        self.distill_weight, self.semantic_weight = float(distill_weight), float(semantic_weight)
        self.self_teaching_weight = float(self_teaching_weight)
        self.semantic_encoder = semantic_encoder       # None: the teacher's encoder
        self.pseudo_labels = bool(pseudo_labels)
        #: ``student.cache_teacher``: the frozen teacher's outputs per sample
        #: (:class:`~.teacher_cache.TeacherCache`); None: computed at every step
        self.teacher_cache = TeacherCache() if cache_teacher and not pseudo_labels else None
        self.ssim_alpha, self.padding_mode = ssim_alpha, padding_mode
        self.timing = {"teacher": 0.0, "total": 0.0, "calls": 0}
        #: what the student was shown: {condition: samples} over the calls of this process,
        #: and the share of each the mixing probabilities give (set with the data)
        self.shown: Counter = Counter()
        self.expected_mix: dict = {}
        from depth_perception.models import depth_network_class

        self.teacher_multiple = depth_network_class(teacher.arch).size_multiple
        m = teacher.metadata                 # the teacher sees frames at its training size
        self.teacher_size = (int(m.train_height), int(m.train_width)) \
            if m.train_height > 0 and m.train_width > 0 else None

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return self._poses.normalize(image)

    def depth_forward(self, depth_net, image: torch.Tensor, **kwargs) -> dict:
        """The student net on ``image`` at its input size, outputs at the image's size
        (:meth:`TeacherObjective.depth_forward`)."""
        return self._poses.depth_forward(depth_net, image, **kwargs)

    def to(self, device) -> "StudentObjective":
        self.teacher.depth.to(device)
        self.teacher.pose.to(device)
        if self.semantic_encoder is not None:
            self.semantic_encoder.to(device)
        return self

    # -- the teacher's side: only ever the day-clear frames ---------------------------
    @torch.no_grad()
    def teacher_forward(self, batch: dict) -> dict:
        """Teacher depth / scaled disparity [B,1,H,W] of ``batch['image']``, its tokens
        when the semantic loss uses the teacher's encoder, and (teacher loss) the poses
        T_src_tgt [B,n,4,4] from the day frames."""
        started = time.perf_counter()
        H, W = batch["image"].shape[-2:]
        day = self.normalize(batch["image"])
        day = upsample_to(day, self.teacher_size) if self.teacher_size is not None \
            else teacher_sized(day, self.teacher_multiple)
        want_tokens = self.semantic_weight > 0 and self.semantic_encoder is None
        kwargs = {"return_features": True} if want_tokens else {}
        out = full_precision(self.teacher.depth(day, **kwargs))
        result = {"depth": upsample_to(out["depth"][0], (H, W)),
                  "scaled_disp": upsample_to(out["scaled_disp"][0], (H, W))}
        if want_tokens:
            result["tokens"] = out["features"]
        if self.loss == "teacher":
            result["T"], _ = self._poses.poses(self.teacher.pose, batch["image"], batch["context"])
        self.timing["teacher"] += time.perf_counter() - started
        return result

    @torch.no_grad()
    def teacher_side(self, batch: dict, target_stats: tuple | None = None) -> dict:
        """:meth:`teacher_forward`, and with ``loss: teacher`` the photometric errors of the
        day frames warped with the teacher's depth (``errors``, one [B,1,H,W] per adjacent
        frame), from :attr:`teacher_cache` when it knows every sample of the batch."""
        cache = self.teacher_cache
        index = [int(i) for i in batch["index"]] if cache is not None else []
        started = time.perf_counter()
        out = cache.batch(index) if cache is not None else None
        if out is not None:
            self.timing["teacher"] += time.perf_counter() - started
            return out
        out = self.teacher_forward(batch)
        if self.loss == "teacher":
            out["errors"] = self.day_errors(batch, out["depth"], out["T"], target_stats)
        if cache is not None:
            cache.put(index, out)
        return out

    @torch.no_grad()
    def label_targets(self, batch: dict, fill: torch.Tensor) -> dict:
        """``teacher_forward`` with pseudo labels: depth / scaled disparity [B,1,H,W] from
        ``batch['label_depth']`` (``fill`` where there is no label), ``valid`` [B,1,H,W]
        (1 where labelled), and (teacher loss) the teacher PoseNet's poses."""
        started = time.perf_counter()
        label = batch["label_depth"]
        valid = torch.isfinite(label) & (label > 0)
        depth = torch.where(valid, label, fill)
        result = {"depth": depth, "scaled_disp": 1.0 / depth, "valid": valid.to(depth.dtype)}
        if self.loss == "teacher":
            result["T"], _ = self._poses.poses(self.teacher.pose, batch["image"], batch["context"])
        self.timing["teacher"] += time.perf_counter() - started
        return result

    def frozen_tokens(self, batch: dict, teacher_out: dict) -> torch.Tensor:
        if self.semantic_encoder is None:
            return teacher_out["tokens"]
        with torch.no_grad():             # the day frame at the student net's input size
            day = self.normalize(batch["image"])
            size = self._poses.depth_size
            return self.semantic_encoder(day if size is None else upsample_to(day, size))

    def day_errors(self, batch: dict, depth: torch.Tensor, T: torch.Tensor,
                   target_stats: tuple | None = None) -> list:
        """pe(I_t, I_{t'->t}) [B,1,H,W] per adjacent day frame, warped with ``depth``;
        ``target_stats``: the day target's SSIM statistics (``SSIM.stats``), if known."""
        from depth_perception_training.geometry import warp

        target, context, K = batch["image"], batch["context"], batch["K"]
        ssim = _ssim(3)
        stats = target_stats if target_stats is not None else ssim.stats(target)
        errors = []
        for i in range(context.shape[1]):
            warped, _ = warp(context[:, i], depth, K, T[:, i], padding_mode=self.padding_mode)
            errors.append(photometric_error(warped, target, alpha=self.ssim_alpha, ssim=ssim,
                                            target_stats=stats))
        return errors

    def __call__(self, models: dict, batch: dict) -> StepOutput:
        started = time.perf_counter()
        H, W = batch["image"].shape[-2:]
        flip = batch["flip"]
        # 1. Teacher on the original day-clear frame (or its pseudo label, after step 2)
        stats = None
        if self.loss == "teacher":          # the day target's SSIM statistics, computed once
            with torch.no_grad():
                stats = _ssim(3).stats(batch["image"])
        t = None if self.pseudo_labels else self.teacher_side(batch, stats)
        # 2. Student on its own input; outputs mirrored back where it was flipped
        want_tokens = self.semantic_weight > 0
        out = self.depth_forward(models["depth"], batch["student_image"],
                                 **({"return_features": True} if want_tokens else {}))
        s_disp = [unflip(upsample_to(d, (H, W)), flip) for d in out["scaled_disp"]]   # [B,1,H,W]
        s_depth = unflip(upsample_to(out["depth"][0], (H, W)), flip)
        if t is None:
            t = self.label_targets(batch, s_depth.detach())
        # 3. Teacher loss mask from the day frames (teacher PoseNet for both depths)
        terms = {}
        mask = None
        if self.loss == "teacher":
            with torch.no_grad():       # the mask carries no gradient
                teacher_errors = t["errors"] if "errors" in t else \
                    self.day_errors(batch, t["depth"], t["T"], stats)
                mask = teacher_loss_mask(teacher_errors,
                                         self.day_errors(batch, s_depth.detach(), t["T"], stats),
                                         reading=self.mask_reading)                 # [B,1,H,W]
            terms["mask_fraction"] = mask.mean()
        if "valid" in t:
            mask = t["valid"] if mask is None else mask * t["valid"]
            terms["label_fraction"] = t["valid"].mean()
        # 4. Distillation on scaled disparity, per scale, masked by M (Eq. 6)
        per_scale = []
        for d in s_disp:
            ld = abs_rel_distillation_map(d, t["scaled_disp"])
            per_scale.append((ld * mask).mean() if mask is not None else ld.mean())
        distill = torch.stack(per_scale).mean()
        total = self.distill_weight * distill
        terms["distillation"] = distill.detach()
        # 5. Semantic loss (Eq. 7) on un-flipped student tokens vs the frozen encoder's
        if want_tokens:
            student_tokens = unflip_tokens(out["features"], flip, out["feature_grid"])
            frozen = self.frozen_tokens(batch, t)
            if frozen.shape != student_tokens.shape:
                raise ValueError(
                    f"semantic loss: the student's tokens {tuple(student_tokens.shape)} and the "
                    f"frozen encoder's {tuple(frozen.shape)} differ: use an encoder of the "
                    "student's width and patch grid (student.semantic.encoder)")
            semantic = semantic_cosine_loss(student_tokens, frozen.detach())
            total = total + self.semantic_weight * semantic
            terms["semantic"] = semantic.detach()
        # 6. Self-teaching (Poggi et al.): the log-variance head against the teacher's depth
        if self.self_teaching_weight > 0:
            log_var = unflip(upsample_to(out["log_variance"], (H, W)), flip)
            nll = self_teaching_loss(s_depth, log_var, t["depth"])               # [B,1,H,W]
            self_teaching = (nll * t["valid"]).sum() / t["valid"].sum().clamp_min(1) \
                if "valid" in t else nll.mean()
            total = total + self.self_teaching_weight * self_teaching
            terms["self_teaching"] = self_teaching.detach()
        self.shown.update(batch["student_condition"])
        terms["translated_fraction"] = torch.tensor(
            sum(c != "day-clear" for c in batch["student_condition"]) / len(flip))
        terms["total"] = total.detach()
        self.timing["total"] += time.perf_counter() - started
        self.timing["calls"] += 1
        return StepOutput(total, terms, {"image": batch["image"], "student_image":
                                         batch["student_image"], "depth": s_depth.detach(),
                                         "teacher_depth": t["depth"]})


# -- builders -----------------------------------------------------------------------------

def check_config(cfg: TrainConfig) -> None:
    s = cfg.student
    if cfg.task != "student":
        raise ValueError(f"config task is '{cfg.task}', this is the student trainer")
    if not s.teacher:
        raise ValueError("student.teacher is empty: name the teacher run folder "
                         "(student.teacher=runs/teacher)")
    if s.init not in STUDENT_INITS:
        raise ValueError(f"student.init must be one of {STUDENT_INITS}, got {s.init!r}")
    if s.init == "teacher" and dict(cfg.model.depth):
        raise ValueError("student.init=teacher copies the teacher's architecture and weights: "
                         "leave model.depth empty, or set student.init=model")
    if s.init == "model" and not dict(cfg.model.depth):
        raise ValueError("student.init=model needs model.depth (arch, size, pretrained ...)")
    if not cfg.data.bags:
        raise ValueError("data.bags is empty: list the day-clear rosbag2 folders the "
                         "translations were made from (data.bags=[a,b])")
    if not s.translations:
        raise ValueError("student.translations is empty: list output folders of "
                         "`depth-perception translate` over data.bags")
    if s.semantic.weight < 0 or s.distill_weight < 0:
        raise ValueError("student loss weights must be >= 0")
    if s.pseudo_labels and s.semantic.weight > 0 and s.semantic.encoder == "teacher":
        raise ValueError("student.pseudo_labels replaces the teacher's forward pass, which "
                         "student.semantic.encoder=teacher needs: name a DINOv2 id or folder "
                         "(student.semantic.encoder=facebook/dinov2-base), or set "
                         "student.semantic.weight=0")


def build_student_net(cfg: TrainConfig, teacher: Teacher):
    """(arch, student depth net, its config dataclass): a copy of the teacher, or a new
    net from ``model.depth`` (pretrained weights by id / folder, or random)."""
    from depth_perception_training.train.teacher import set_initial_depth

    if cfg.student.init == "teacher":
        net = copy.deepcopy(teacher.depth)
        for p in net.parameters():
            p.requires_grad_(True)
        return teacher.arch, net.train(), teacher.depth_cfg
    from depth_perception.models import build_depth_model, depth_config

    try:
        arch, depth_cfg = depth_config(dict(cfg.model.depth))
        net = build_depth_model(depth_cfg)
    except ValueError as exc:
        raise ValueError(f"model.depth: {exc}") from exc
    if cfg.model.reset_random_init:
        net.reset_random_layers()
    if cfg.model.init_depth is not None:
        set_initial_depth(net, depth_cfg, cfg.model.init_depth)
    return arch, net, depth_cfg


def build_student_datasets(cfg: TrainConfig):
    """(StudentDataset, validation DepthDataset or None)."""
    from depth_perception_training.augment import AugmentConfig
    from depth_perception_training.dataset import DepthDataset
    from depth_perception_training.student_data import StudentDataset
    from depth_perception_training.train.teacher import _config_object, _sample_config
    from depth_perception_training.translate.pairs import TranslationPairs

    s = cfg.student
    for b in list(cfg.data.bags) + list(cfg.data.val_bags):
        if not Path(b).exists():
            raise FileNotFoundError(f"bag {b} not found")
    day = DepthDataset([str(b) for b in cfg.data.bags], _sample_config(cfg), augment=None,
                       cache_dir=cfg.data.cache_dir, seed=cfg.seed)
    if len(day) == 0:
        raise ValueError(f"no training sample in {list(cfg.data.bags)}")
    pairs = [TranslationPairs(p, conditions=list(s.conditions)) for p in s.translations]
    if s.translator is not None:
        for p in pairs:
            made_by = {t.record.get("translator") for f in p for t in f.translations.values()}
            if made_by - {s.translator}:
                raise ValueError(f"student.translator is '{s.translator}' but {p.root} holds "
                                 f"translations made by {sorted(map(str, made_by))}")
    augment = (_config_object(AugmentConfig, dict(cfg.data.augmentation), "data.augmentation")
               if cfg.data.augment else None)
    train = StudentDataset(day, pairs, s.conditions, s.keep_probability, augment, cfg.seed)
    if s.pseudo_labels:
        from depth_perception_training.refine.labels import PseudoLabels
        from depth_perception_training.student_data import LabelledStudentDataset

        try:
            labels = PseudoLabels(s.pseudo_labels)
        except (OSError, ValueError) as exc:
            raise type(exc)(f"student.pseudo_labels: {exc}") from exc
        train = LabelledStudentDataset(train, labels)
    val = None
    if cfg.data.val_bags:
        val = DepthDataset([str(b) for b in cfg.data.val_bags], _sample_config(cfg, validation=True),
                           augment=None, cache_dir=cfg.data.cache_dir, seed=cfg.seed)
    return train, val


def student_provenance(cfg: TrainConfig, teacher: Teacher) -> dict:
    """What the exported student's metadata records beyond a teacher's: the teacher run,
    translations, conditions, loss, semantic weight, pseudo labels."""
    s = cfg.student
    return {"teacher": str(teacher.run_dir), "translations": list(s.translations),
            "conditions": list(s.conditions), "loss": s.loss,
            "semantic_weight": s.semantic.weight, "pseudo_labels": s.pseudo_labels}


# -- entry point --------------------------------------------------------------------------

def build_student_trainer(cfg):
    """(Trainer, StudentObjective) of the student task, from a resolved config."""
    from omegaconf import OmegaConf

    from depth_perception_training.train.config import to_dataclass
    from depth_perception_training.train.trainer import make_accelerator, seed_everything
    from depth_perception_training.train.teacher import (build_depth_trainer,
                                                         check_input_size, depth_input_size,
                                                         freeze_unused_parameters,
                                                         make_metadata, training_focal,
                                                         check_teacher_focal)

    dcfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    cfg = to_dataclass(dcfg)
    check_config(cfg)
    s = cfg.student
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.trainer, out)

    # 1. Seeds, then the resolved config beside the checkpoints
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    if accelerator.is_main_process:
        save_config(dcfg, out / "config.yaml")

    # 2. Frozen teacher, the student (copy of the teacher or from model.depth), objective
    teacher = load_teacher(s.teacher)
    arch, student, depth_cfg = build_student_net(cfg, teacher)
    if s.freeze_batchnorm:
        logger.info("student: %d BatchNorm layers keep their running statistics",
                    freeze_batchnorm_statistics(student))
    if s.self_teaching_weight > 0:           # the self-taught log-variance head
        student.add_uncertainty_head()
        depth_cfg = student.config
    check_input_size(cfg, arch)
    freeze_unused_parameters(student, torch.zeros(1, 3, *depth_input_size(cfg)))
    semantic_encoder = None
    if s.semantic.weight > 0:
        for net, who in ((student, "student"), (teacher.depth, "teacher")):
            if who == "teacher" and s.semantic.encoder != "teacher":
                continue
            if not net.returns_features:
                raise ValueError(f"student.semantic.weight > 0: the {who}'s depth net "
                                 f"({type(net).__name__}) returns no encoder features")
        if s.semantic.encoder != "teacher":
            semantic_encoder = FrozenDinov2(s.semantic.encoder, s.semantic.local_files_only)
    objective = StudentObjective(teacher, cfg.data.context, loss=s.loss,
                                 mask_reading=s.mask_reading, distill_weight=s.distill_weight,
                                 semantic_weight=s.semantic.weight,
                                 semantic_encoder=semantic_encoder,
                                 ssim_alpha=cfg.loss.ssim_alpha,
                                 padding_mode=cfg.loss.padding_mode,
                                 pseudo_labels=bool(s.pseudo_labels),
                                 depth_size=depth_input_size(cfg),
                                 cache_teacher=s.cache_teacher,
                                 self_teaching_weight=s.self_teaching_weight
                                 ).to(accelerator.device)
    o = cfg.optim
    groups = student.param_groups(o.lr_encoder, o.lr_decoder)

    # 3. Data
    train_set, val_set = build_student_datasets(cfg)
    focal = training_focal(train_set.day)
    check_teacher_focal(teacher.metadata, focal, cfg.data.width, cfg.data.height)
    logger.info("student: %d training samples (%.0f%% with translations, keep p=%.3f), %s "
                "validation samples", len(train_set), 100 * train_set.coverage,
                train_set.keep_probability, len(val_set) if val_set else 0)
    objective.expected_mix = train_set.expected_mix()
    logger.info("student: expected mix %s", ", ".join(
        f"{c} {p:.3f}" for c, p in objective.expected_mix.items()))

    # 4. Loaders, export of the student's depth net (then ONNX after fit, see
    #    train_student), the trainer
    trainer = build_depth_trainer(
        cfg, dcfg, {"depth": student}, groups, objective, train_set, val_set, accelerator,
        depth_cfg, [Path(b) for b in cfg.data.bags],
        lambda step: make_metadata(cfg, "student", arch, depth_cfg, step, focal,
                                   student_provenance(cfg, teacher)))
    return trainer, objective


def write_mixing(objective: StudentObjective, main_process: bool, out: Path) -> dict:
    """{"shown": {condition: samples}, "expected": {condition: share}}: what this
    process's student saw since it started (a resumed run counts from the resume)
    against what the mixing probabilities give; logged, and written by the main process
    to ``OUTPUT_DIR/student_mixing.json``."""
    expected = objective.expected_mix
    shown = {c: int(objective.shown.get(c, 0)) for c in expected}
    total = max(sum(shown.values()), 1)
    logger.info("student: shown %s", ", ".join(
        f"{c} {n} ({n / total:.3f}, expected {expected[c]:.3f})" for c, n in shown.items()))
    mixing = {"shown": shown, "expected": expected}
    if main_process:
        (out / "student_mixing.json").write_text(json.dumps(mixing, indent=2) + "\n")
    return mixing


def train_student(cfg):
    """Run the student training of a resolved config; export the result for deployment.

    Returns the :class:`~depth_perception_training.train.trainer.TrainResult` with
    ``deployable`` (what
    :func:`~depth_perception_training.export.deployable.export_deployable` wrote) and
    ``mixing`` (:func:`write_mixing`) set on it.
    """
    from depth_perception_training.export.deployable import export_deployable
    from depth_perception_training.train.config import to_dataclass
    from omegaconf import OmegaConf

    trainer, objective = build_student_trainer(cfg)
    result = trainer.fit()
    c = to_dataclass(cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg))
    result.mixing = write_mixing(objective, trainer.accelerator.is_main_process,
                                  Path(c.output_dir))
    deployable = {}
    if c.student.export_onnx and result.export_dir is not None \
            and trainer.accelerator.is_main_process:
        from depth_perception_training.train.teacher import depth_input_size

        height, width = depth_input_size(c)
        deployable = export_deployable(Path(result.export_dir), height, width,
                                       engine=c.student.export_engine)
        (Path(c.output_dir) / "deployable.json").write_text(json.dumps(deployable, indent=2) + "\n")
    result.deployable = deployable
    return result
