"""Averaged weights (``trainer.ema_decay``): an exponential moving average of each trained
model, built on ``torch.optim.swa_utils.AveragedModel`` and stored beside checkpoints
as ``ema_<model>.safetensors`` (with the number of updates in its metadata)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def ema_file(name: str) -> str:
    """Checkpoint file of model ``name``'s averaged weights (``trainer.ema_decay``)."""
    return f"ema_{name}.safetensors"


def ema_update(decay: float):
    """``AveragedModel`` update: exponential average with decay ``min(decay, (1 + n) /
    (10 + n))`` after ``n`` updates (early weights do not linger in short runs);
    integer buffers (BatchNorm's batch counts) are copied."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    @torch.no_grad()
    def update(averaged: list, current: list, n_averaged) -> None:
        if not averaged[0].is_floating_point():
            for a, c in zip(averaged, current):
                a.copy_(c)
            return
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(averaged, current, n_averaged)

    return update


def make_ema(models: dict, decay: float) -> dict:
    """{name: AveragedModel} of the (unwrapped) ``models``, each copy in eval mode."""
    if not 0 < decay < 1:
        raise ValueError(f"trainer.ema_decay must be in [0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel

    ema = {}
    for name, model in models.items():
        ema[name] = AveragedModel(model, use_buffers=True, multi_avg_fn=ema_update(decay))
        ema[name].module.eval()
    return ema


def save_ema(ema: dict, folder: Path, decay: float) -> None:
    """Write each average into ``folder`` (a checkpoint being written)."""
    from safetensors.torch import save_file

    for name, avg in ema.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in avg.module.state_dict().items()}
        save_file(tensors, str(Path(folder) / ema_file(name)),
                  metadata={"n_averaged": str(int(avg.n_averaged)), "decay": str(decay)})


def load_ema(ema: dict, folder: Path) -> None:
    """Restore each average from ``folder``; one the checkpoint lacks (a run without
    averaging) restarts from the resumed weights at its next update."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    for name, avg in ema.items():
        path = Path(folder) / ema_file(name)
        if not path.is_file():
            logger.warning("resume: %s has no %s (a run without trainer.ema_decay): the "
                           "average restarts from the resumed weights", folder, path.name)
            avg.n_averaged.zero_()
            continue
        with safe_open(str(path), "pt") as f:
            n = int((f.metadata() or {}).get("n_averaged", "0"))
        avg.module.load_state_dict(load_file(str(path), device=str(avg.n_averaged.device)))
        avg.n_averaged.fill_(n)
