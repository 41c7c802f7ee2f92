"""A training loop that only orchestrates (HF Accelerate: CPU, one GPU, DDP, AMP).

The trainer receives its collaborators: the models (a name -> ``nn.Module`` dict),
optimizer parameter groups, data loaders, a loss callable, an optional prediction
callable for validation and an optional export callable. It owns the optimizer and
LR schedule, the NaN/Inf guard, gradient clipping, logging, validation with
:mod:`depth_perception.metrics`, and checkpoints (:mod:`.checkpoint`) that resume
exactly: same weights, optimizer and scheduler state, RNG states, and data position.

Exact resume needs data whose order and augmentation do not depend on when batches are
fetched: build the training loader with :func:`build_train_loader` (a sampler that
shuffles with ``seed + epoch`` and a dataset wrapper that seeds python/numpy/torch RNGs
from ``(seed, epoch, index)`` around each sample).
"""
from __future__ import annotations

import json
import logging
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from depth_perception.metrics import MetricAccumulator
from depth_perception_training.train import checkpoint as ckpt
from depth_perception_training.train.config import OptimConfig, TrainerConfig
from depth_perception_training.train.ema import load_ema, make_ema, save_ema
from depth_perception_training.train.logging import ProgressLines, TensorBoardLogger
from depth_perception_training.train.optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


# -- collaborator contracts ---------------------------------------------------------------

@dataclass
class StepOutput:
    """What a loss callable returns for one batch.

    loss: scalar tensor to minimise. terms: named scalars to log (detached tensors or
    floats). images: optional tensors to show in TensorBoard: keys ending in ``depth``
    are [B,1,H,W] metres (colour-mapped), others [B,3,H,W] in [0,1].
    """

    loss: torch.Tensor
    terms: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)


#: loss_fn(models, batch) -> StepOutput; models are the (possibly DDP-wrapped) modules.
LossFn = Callable[[dict, dict], StepOutput]
#: predict_fn(models, batch) -> depth [B,1,H,W] metres at the size of the batch's ground truth.
PredictFn = Callable[[dict, dict], torch.Tensor]
#: export_fn(models, folder) writes a deployable model (e.g. save_depth_model).
ExportFn = Callable[[dict, Path], None]


@dataclass
class TrainResult:
    step: int
    epoch: int
    nan_skips: int
    history: list                  # one dict per step: step, loss, skipped, terms
    validation: dict | None        # last validation summary (MetricAccumulator.summary())
    last_checkpoint: Path | None
    export_dir: Path | None


# -- deterministic data --------------------------------------------------------------------

class EpochShuffleSampler(Sampler):
    """Random permutation of ``range(n)`` seeded with ``seed + epoch`` (no global RNG)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class SeededDataset(Dataset):
    """Makes a dataset's random augmentation a function of ``(seed, epoch, index)``.

    Around each ``__getitem__`` the python, numpy and torch global RNGs are seeded from
    ``(seed, epoch, index)`` and restored afterwards, so a sample is identical whenever
    (and in whichever worker) it is fetched, and the trainer's own RNG stream is untouched.
    """

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)])
                          .generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            torch.manual_seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name):          # pass through e.g. dataset.samples
        if name in ("dataset", "seed", "epoch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_train_loader(dataset, batch_size: int, seed: int = 0, num_workers: int = 0,
                       drop_last: bool = True, collate_fn=None) -> DataLoader:
    """Shuffled, resumable training loader (see the module docstring)."""
    if len(dataset) < batch_size and drop_last:
        raise ValueError(f"training set has {len(dataset)} samples, fewer than one batch of "
                         f"{batch_size}: lower data.batch_size or add data")
    return DataLoader(SeededDataset(dataset, seed), batch_size=batch_size,
                      sampler=EpochShuffleSampler(len(dataset), seed), num_workers=num_workers,
                      drop_last=drop_last, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def build_val_loader(dataset, batch_size: int, num_workers: int = 0, collate_fn=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      drop_last=False, collate_fn=collate_fn)


def channels_last_batch(batch):
    """``batch`` with its images ([B,C,H,W] floating point, C <= 4 channels: RGB and
    depth maps, not stacks of 4x4 transforms) in channels-last order."""
    if not isinstance(batch, dict):
        return batch
    return {k: v.contiguous(memory_format=torch.channels_last)
            if torch.is_tensor(v) and v.dim() == 4 and v.is_floating_point()
            and v.shape[1] <= 4 and min(v.shape[2:]) > 4 else v
            for k, v in batch.items()}


# -- accelerator ---------------------------------------------------------------------------

def make_accelerator(cfg: TrainerConfig, project_dir: str | Path | None = None):
    """An ``accelerate.Accelerator`` for this trainer config (DDP kwargs, AMP, CPU).

    Accelerate keeps one mixed-precision setting per process (``AcceleratorState``): a
    second trainer in the same process (the demo's student after its teacher,
    ``train.reproduce``) would silently inherit the first one's precision when its own
    is unset, or be refused when it differs. The state of a previous trainer is reset
    first (the process group, ``PartialState``, stays), so each trainer runs at its own
    config's precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    if AcceleratorState._shared_state:          # a previous trainer's, in this process
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=cfg.cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=cfg.find_unused_parameters)],
        project_dir=str(project_dir) if project_dir else None,
    )


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices) identically on every process."""
    from accelerate.utils import set_seed

    set_seed(seed, deterministic=deterministic)


# -- the trainer ---------------------------------------------------------------------------

class Trainer:
    """Runs the optimisation of ``models`` with ``loss_fn`` over ``train_loader``.

    Args:
        config: loop/logging/checkpoint settings.
        optim: optimizer and schedule settings.
        models: name -> module; all are prepared (DDP-wrapped when distributed) and saved
            in checkpoints in this order.
        param_groups: optimizer groups ``[{"name", "params", "lr"}, ...]``.
        train_loader: from :func:`build_train_loader` for exact resume.
        loss_fn: ``(models, batch) -> StepOutput``.
        output_dir: run folder (checkpoints/, tensorboard/, model/, config.yaml).
        val_loader, predict_fn: validation data (with ``gt_depth`` or ``lidar_depth``
            [B,1,H,W], NaN = none, and ``condition``) and ``(models, batch) -> depth``.
        export_fn: ``(models, folder)`` called at the end (and at each checkpoint when
            ``config.export_every_checkpoint``) with ``output_dir/model``.
        accelerator: an existing ``Accelerator`` (default: built from ``config``).
        config_yaml: resolved configuration text stored in every checkpoint.
        min_depth, max_depth: validation metric range (the cap, e.g. 80 m).
        median_scaling: per-image median scaling in validation (scale-ambiguous training).
        prior: optional [H,W] image-blind depth prior (e.g. the per-pixel median ground
            truth of the training bags): validation then also scores it (group
            ``prior``) and adds ``abs_rel_structure`` (abs_rel where the prior is off
            by more than 20 %) to both.
    """

    def __init__(self, config: TrainerConfig, optim: OptimConfig, models: dict,
                 param_groups: list[dict], train_loader, loss_fn: LossFn,
                 output_dir: str | Path, val_loader=None, predict_fn: PredictFn | None = None,
                 export_fn: ExportFn | None = None, accelerator=None,
                 config_yaml: str | None = None, min_depth: float = 1e-3,
                 max_depth: float = 80.0, median_scaling: bool = False,
                 prior: np.ndarray | None = None):
        if not models:
            raise ValueError("Trainer: no models given")
        if val_loader is not None and predict_fn is None:
            raise ValueError("Trainer: a validation loader needs a predict_fn")
        self.config, self.optim_config = config, optim
        self.output_dir = Path(output_dir)
        self.loss_fn, self.predict_fn, self.export_fn = loss_fn, predict_fn, export_fn
        self.config_yaml = config_yaml
        self.min_depth, self.max_depth = min_depth, max_depth
        self.median_scaling = median_scaling
        self.prior = None if prior is None else np.asarray(prior, np.float32)
        self.accelerator = accelerator or make_accelerator(config, self.output_dir)
        acc = self.accelerator

        # 1. Optimizer; prepare models, optimizer and loaders for the device / DDP / AMP
        if config.channels_last:
            for m in models.values():
                m.to(memory_format=torch.channels_last)      # in place: same parameters
        optimizer = build_optimizer(param_groups, optim)
        names = list(models)
        prepared = acc.prepare(*[models[n] for n in names], optimizer, train_loader)
        self.models = dict(zip(names, prepared[:len(names)]))
        self.optimizer, self.train_loader = prepared[len(names)], prepared[len(names) + 1]
        self.val_loader = val_loader
        self.state = ckpt.TrainerState()
        self.history: list[dict] = []
        self.last_validation: dict | None = None
        self.tb = TensorBoardLogger(self.output_dir / "tensorboard", enabled=acc.is_main_process)
        self._epoch_len = len(self.train_loader)
        if self._epoch_len == 0:
            raise ValueError("Trainer: the training loader yields no batch")

        # 2. Schedule over the run's optimizer updates (not prepared: accelerate would
        #    step it once per process; registered so checkpoints carry its state)
        updates = -(-self.total_steps // max(config.gradient_accumulation_steps, 1))
        self.scheduler = build_scheduler(optimizer, optim, updates)
        acc.register_for_checkpointing(self.scheduler)
        # 3. Averaged weights (trainer.ema_decay): a copy per model, never trained
        self.ema: dict = {}
        if config.ema_decay != 0:
            self.ema = make_ema({n: acc.unwrap_model(m) for n, m in self.models.items()},
                                config.ema_decay)

    # -- helpers ------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        c = self.config
        return c.max_steps if c.max_steps > 0 else c.max_epochs * self._epoch_len

    def _set_train(self, mode: bool) -> None:
        for m in self.models.values():
            m.train(mode)

    def eval_models(self) -> dict:
        """The models validation and export use: the averaged weights when
        ``trainer.ema_decay`` > 0, else the trained ones (unwrapped from DDP)."""
        if self.ema:
            return {n: e.module for n, e in self.ema.items()}
        return {n: self.accelerator.unwrap_model(m) for n, m in self.models.items()}

    def _update_ema(self) -> None:
        for name, ema in self.ema.items():
            ema.update_parameters(self.accelerator.unwrap_model(self.models[name]))

    def _write_ema(self, folder: Path) -> None:
        save_ema(self.ema, folder, self.config.ema_decay)

    def _trainable_params(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _any_process(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (collective: call on all of them)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
        return bool(acc.reduce(t, reduction="sum").item() > 0)

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        """Forward, backward, guard, clip, update. Returns the logged record of the step."""
        acc, cfg = self.accelerator, self.config
        if cfg.channels_last:
            batch = channels_last_batch(batch)
        with acc.accumulate(*self.models.values()):
            # 1. Loss (the callable runs the models; autocast under AMP)
            with acc.autocast():
                out = self.loss_fn(self.models, batch)
            loss = out.loss
            loss_finite = bool(torch.isfinite(loss.detach()).all())
            # 2. Backward always (keeps DDP's collectives in step on every process)
            acc.backward(loss)
            skipped = False
            grad_norm = float("nan")
            if acc.sync_gradients:
                # 3. Clip (unscales AMP gradients first) and measure the global norm
                max_norm = self.optim_config.grad_clip if self.optim_config.grad_clip > 0 \
                    else float("inf")
                grad_norm = float(acc.clip_grad_norm_(self._trainable_params(), max_norm))
                # 4. NaN/Inf guard: skip the update everywhere if anything went wrong anywhere.
                #    Under fp16 the GradScaler owns gradient overflow (it skips the step and
                #    lowers its scale); a non-finite *loss* is always ours to skip.
                if self._any_process(not loss_finite):
                    skipped = True
                elif acc.scaler is not None:
                    self.optimizer.step()
                    skipped = bool(acc.optimizer_step_was_skipped)
                else:
                    skipped = self._any_process(not math.isfinite(grad_norm))
                    if not skipped:
                        self.optimizer.step()
                if skipped:
                    self.state.nan_skips += 1
                    logger.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s): "
                                   "update skipped (%d so far)", self.state.step + 1,
                                   float(loss.detach()), grad_norm, self.state.nan_skips)
                elif self.optim_config.interval == "step":
                    self.scheduler.step()
                if not skipped:
                    self._update_ema()
            self.optimizer.zero_grad(set_to_none=True)
        record = {"step": self.state.step + 1, "loss": float(loss.detach()),
                  "skipped": skipped, "grad_norm": grad_norm,
                  "terms": {k: float(v) for k, v in out.terms.items()}}
        self._last_images = out.images
        return record

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> dict | None:
        """Metrics of ``predict_fn`` on the validation loader (main process; others wait).

        RNG-neutral: python, numpy and torch RNG states are restored afterwards (creating
        a DataLoader iterator draws a seed from the torch RNG), so validating or not
        never changes the training that follows, and resumed runs stay exact.
        """
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return self._validate()
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    @torch.no_grad()
    def _validate(self) -> dict | None:
        acc = self.accelerator
        if self.val_loader is None:
            return None
        summary = None
        if acc.is_main_process:
            self._set_train(False)
            models = self.eval_models()
            from depth_perception.evaluation.prior import fit_to
            from depth_perception.metrics import structure_mask

            metrics = MetricAccumulator(min_depth=self.min_depth, max_depth=self.max_depth,
                                        median_scaling=self.median_scaling)
            prior_metrics = MetricAccumulator(min_depth=self.min_depth, max_depth=self.max_depth,
                                              median_scaling=self.median_scaling)
            skipped = 0
            for i, batch in enumerate(self.val_loader):
                if 0 < self.config.val_max_batches <= i:
                    break
                batch = _to_device(batch, acc.device)
                depth = self.predict_fn(models, batch).float().cpu().numpy()   # [B,1,H,W]
                gt = _ground_truth(batch)                                        # [B,1,H,W]
                if gt is None:
                    raise ValueError("validation batch has neither 'gt_depth' nor "
                                     "'lidar_depth': validation bags need ground truth or LiDAR")
                conditions = batch.get("condition", [None] * len(depth))
                for b in range(depth.shape[0]):
                    prior = structure = None
                    if self.prior is not None:
                        prior = fit_to(self.prior, gt.shape[-2:])
                        structure = structure_mask(prior, gt[b, 0])
                    try:
                        metrics.update(gt[b, 0], depth[b, 0], condition=conditions[b] or None,
                                       structure=structure)
                        if prior is not None:
                            prior_metrics.update(gt[b, 0], prior, structure=structure)
                    except ValueError:
                        skipped += 1       # an image without any valid ground-truth pixel
            if skipped:
                logger.info("validation: %d images without valid ground truth skipped", skipped)
            summary = metrics.summary() if metrics.count else None
            if summary is not None and prior_metrics.count:
                summary["prior"] = prior_metrics.summary()["all"]
            if summary is None:
                logger.warning("validation: no image with valid ground truth")
            else:
                for group, values in summary.items():
                    self.tb.scalars({k: v for k, v in values.items()
                                     if k not in ("n_valid", "n_images")},
                                    self.state.step, prefix=f"val/{group}/")
                logger.info("validation step %d: abs_rel %.4f rmse %.3f a1 %.3f scale %.3f",
                            self.state.step, summary["all"]["abs_rel"], summary["all"]["rmse"],
                            summary["all"]["a1"], summary["all"]["scale_ratio"])
                if "prior" in summary:
                    logger.info("validation step %d: structure abs_rel %.4f; image-blind prior "
                                "abs_rel %.4f, structure abs_rel %.4f", self.state.step,
                                summary["all"].get("abs_rel_structure", float("nan")),
                                summary["prior"]["abs_rel"],
                                summary["prior"].get("abs_rel_structure", float("nan")))
            self._set_train(True)
        acc.wait_for_everyone()
        self.last_validation = summary
        return summary

    # -- checkpoint / export --------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = ckpt.save_checkpoint(self.accelerator, self.output_dir, self.state,
                                    self.config_yaml, self.config.keep_checkpoints,
                                    write_extra=self._write_ema if self.ema else None)
        if self.config.export_every_checkpoint:
            self.export()
        return path

    def export(self) -> Path | None:
        acc = self.accelerator
        if self.export_fn is None:
            return None
        folder = self.output_dir / "model"
        if acc.is_main_process:
            self.export_fn(self.eval_models(), folder)
            logger.info("exported depth model to %s", folder)
        acc.wait_for_everyone()
        return folder

    def resume(self, resume: str | None) -> Path | None:
        path = ckpt.resolve_resume(resume, self.output_dir)
        if path is not None:
            self.state = ckpt.load_checkpoint(self.accelerator, path)
            if self.ema:
                load_ema(self.ema, path)
        return path

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        acc, cfg = self.accelerator, self.config
        self.resume(cfg.resume)
        total = self.total_steps
        last_ckpt = None
        bar = None
        if cfg.progress and acc.is_main_process and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.state.step, desc="train", dynamic_ncols=True)
        # without a bar (a file, a pipe, progress off): a line at most every progress_seconds
        self._progress = ProgressLines(self.state.step, total, cfg.progress_seconds)
        log_path = self.output_dir / "train_log.jsonl"
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._set_train(True)

        # 1. Epochs; the first one may be a resumed, partly consumed epoch
        while self.state.step < total:
            self.train_loader.set_epoch(self.state.epoch)
            loader = self.train_loader
            if self.state.batch_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, self.state.batch_in_epoch)
            stopped = False
            for batch in loader:
                # 2. One step, then the bookkeeping of the step
                record = self.train_step(batch)
                self.state.step += 1
                self.state.batch_in_epoch += 1
                record["epoch"] = self.state.epoch
                record["lr"] = {g.get("name", str(i)): g["lr"]
                                for i, g in enumerate(self.optimizer.param_groups)}
                self.history.append(record)
                self._log(record, log_path, bar)
                step = self.state.step
                if cfg.val_every > 0 and step % cfg.val_every == 0 and step < total:
                    self.validate()
                if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < total:
                    last_ckpt = self.save_checkpoint()
                if step >= total:
                    stopped = True
                    break
            if stopped and self.state.batch_in_epoch < self._epoch_len:
                break
            # 3. End of epoch
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            if self.optim_config.interval == "epoch":
                self.scheduler.step()

        # 4. Final validation, checkpoint, export
        if bar is not None:
            bar.close()
        if cfg.val_every >= 0:
            self.validate()
        last_ckpt = self.save_checkpoint()
        export_dir = self.export()
        self.tb.close()
        return TrainResult(self.state.step, self.state.epoch, self.state.nan_skips,
                           self.history, self.last_validation, last_ckpt, export_dir)

    def _log(self, record: dict, log_path: Path, bar) -> None:
        acc, cfg = self.accelerator, self.config
        if not acc.is_main_process:
            return
        step = record["step"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", skips=self.state.nan_skips)
        else:
            line = self._progress.line(step, record["loss"])
            if line:
                logger.info("%s: %s", self.output_dir.name, line)
        with log_path.open("a") as f:
            f.write(json.dumps({**record, "nan_skips": self.state.nan_skips}) + "\n")
        if cfg.log_every > 0 and step % cfg.log_every == 0:
            self.tb.scalars({"loss": record["loss"], "grad_norm": record["grad_norm"],
                             "nan_skips": self.state.nan_skips,
                             **{f"lr/{k}": v for k, v in record["lr"].items()}},
                            step, prefix="train/")
            self.tb.scalars(record["terms"], step, prefix="train/terms/")
        if cfg.image_every > 0 and step % cfg.image_every == 0:
            for name, tensor in (getattr(self, "_last_images", None) or {}).items():
                if name.endswith("depth"):
                    self.tb.depth(f"train/{name}", tensor, step)
                else:
                    self.tb.images(f"train/{name}", tensor, step)


def _to_device(batch: Any, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _ground_truth(batch: dict) -> np.ndarray | None:
    """[B,1,H,W] float metres (NaN = none): ground truth where present, else LiDAR."""
    gt = batch.get("gt_depth")
    lidar = batch.get("lidar_depth")
    out = None
    for src in (gt, lidar):
        if src is None:
            continue
        arr = src.float().cpu().numpy() if hasattr(src, "cpu") else np.asarray(src, np.float32)
        out = arr if out is None else np.where(np.isfinite(out), out, arr)
    return out
