"""Optimizer and learning-rate schedules of the training loop (named parameter groups;
StepLR, SSD's per-step linear decay, Marigold's iteration-wise exponential decay)."""
from __future__ import annotations

import numpy as np
import torch

from depth_perception_training.train.config import OptimConfig


def build_optimizer(param_groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam/AdamW over named parameter groups ``{"name", "params", "lr"}``.

    Groups with no trainable parameter are dropped (e.g. a frozen encoder).
    """
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({**g, "params": params})
    if not groups:
        raise ValueError("optimizer: no trainable parameters in any parameter group")
    betas = tuple(float(b) for b in cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, betas=betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name must be 'adam' or 'adamw', got {cfg.name!r}")


def iter_exponential(total: int, final_ratio: float, warmup: int = 0):
    """Marigold's ``IterExponential`` (src/util/lr_scheduler.py): the lr factor of update
    n is n / warmup during the warm-up, then final_ratio ** ((n - warmup) / (total -
    warmup)), and final_ratio from ``total`` on."""
    if not 0 <= warmup < total:
        raise ValueError(f"optim: need 0 <= warmup_steps < decay_steps, got {warmup}, {total}")
    if not 0 < final_ratio <= 1:
        raise ValueError(f"optim.final_ratio must be in (0, 1], got {final_ratio}")

    def factor(n: int) -> float:
        if n < warmup:
            return n / warmup
        if n >= total:
            return final_ratio
        return float(np.exp((n - warmup) / (total - warmup) * np.log(final_ratio)))
    return factor


def build_scheduler(optimizer, cfg: OptimConfig, total_updates: int):
    """The learning-rate schedule of ``cfg.scheduler``:

    * ``step``: StepLR(step_size, gamma) per ``interval`` (epoch or step);
    * ``linear``: per-step linear decay to 0 over the run (SSD Sec. 4.1), lr of update
      n (0-based) = lr * (1 - n / total_updates); needs ``interval: step``;
    * ``exponential``: :func:`iter_exponential` per step (Marigold);
    * ``none``: constant.
    """
    if cfg.interval not in ("epoch", "step"):
        raise ValueError(f"optim.interval must be 'epoch' or 'step', got {cfg.interval!r}")
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "linear":
        if cfg.interval != "step":
            raise ValueError("optim.scheduler=linear decays per step: set optim.interval=step")
        if total_updates < 1:
            raise ValueError(f"optim.scheduler=linear needs a run of >= 1 update, got {total_updates}")
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                                 total_iters=total_updates)
    if cfg.scheduler == "exponential":
        if cfg.interval != "step":
            raise ValueError("optim.scheduler=exponential decays per step: set optim.interval=step")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, iter_exponential(
            cfg.decay_steps or total_updates, cfg.final_ratio, cfg.warmup_steps))
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"optim.scheduler must be 'step', 'linear', 'exponential' or 'none', got "
                     f"{cfg.scheduler!r}")
