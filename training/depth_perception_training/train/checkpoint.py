"""Training checkpoints: atomic, resumable, pruned.

Layout of ``output_dir/checkpoints/step_XXXXXXXX/``:

* what ``accelerate.Accelerator.save_state`` writes: model weights as safetensors
  (``model.safetensors``, ``model_1.safetensors``, ... in the order the models were
  prepared), ``optimizer.bin``, registered objects (the LR scheduler,
  ``custom_checkpoint_0.pkl``), the AMP grad scaler when used, and one
  ``random_states_<rank>.pkl`` per process (python, numpy, torch and CUDA RNG states);
* ``trainer_state.json``: global step, epoch, batch position within the epoch (resume
  skips exactly that many batches), NaN/Inf-skip counter;
* ``config.yaml``: the resolved training configuration.

A checkpoint is written into ``.tmp_step_XXXXXXXX`` and renamed when complete, so a
killed run never leaves a half-written ``step_*`` folder; only folders with a
``trainer_state.json`` count as checkpoints. The newest ``keep`` are kept.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
_NAME_RE = re.compile(r"^step_(\d{8,})$")


@dataclass
class TrainerState:
    """Position of a training run; everything needed besides the accelerate state."""

    step: int = 0              # optimisation steps (batches) done
    epoch: int = 0             # current epoch
    batch_in_epoch: int = 0    # batches of the current epoch already consumed
    nan_skips: int = 0         # steps skipped because loss or gradients were not finite

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> "TrainerState":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"checkpoint state {path} is not a valid trainer state ({exc})") from exc


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """Which checkpoint to resume from.

    ``None``/``""``/``"none"``: start fresh. ``"auto"``: the newest checkpoint of
    ``output_dir`` if any (fresh start otherwise). A path: a checkpoint folder, or a run
    folder / its ``checkpoints`` folder (its newest checkpoint is used).
    """
    if resume is None or str(resume).strip().lower() in ("", "none", "false", "no"):
        return None
    if str(resume).lower() == "auto":
        path = latest_checkpoint(output_dir)
        if path is None:
            logger.info("resume=auto: no checkpoint in %s, starting from scratch",
                        checkpoints_dir(output_dir))
        return path
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    run_dir = path.parent if path.name == CHECKPOINTS_DIR else path
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        return latest
    raise FileNotFoundError(f"resume: {path} is neither a checkpoint folder (with {STATE_FILE}) "
                            f"nor a run folder holding {CHECKPOINTS_DIR}/step_*")


def save_checkpoint(accelerator, output_dir: str | Path, state: TrainerState,
                    config_yaml: str | None = None, keep: int = 3,
                    write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint of everything accelerate prepared plus ``state``; prune old ones.

    ``write_extra(folder)`` adds files of the caller's (e.g. averaged weights) on the main
    process before the folder is renamed into place, so they are as atomic as the rest.
    Must be called on every process (each saves its own RNG state). Returns the folder.
    """
    root = checkpoints_dir(output_dir)
    final = root / checkpoint_name(state.step)
    tmp = root / f".tmp_{checkpoint_name(state.step)}"
    # 1. Fresh temporary folder (main process), visible to all before anyone writes
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # 2. Models, optimizer, scheduler, scaler, per-process RNG states
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    # 3. Trainer state + config, then the atomic rename and pruning
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json() + "\n")
        if write_extra is not None:
            write_extra(tmp)
        if config_yaml is not None:
            (tmp / CONFIG_FILE).write_text(config_yaml)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        prune_checkpoints(output_dir, keep)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path) -> TrainerState:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer state."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"checkpoint {path} is incomplete: no {STATE_FILE}")
    accelerator.load_state(str(path))
    state = TrainerState.load(state_file)
    logger.info("resumed from %s (step %d, epoch %d, batch %d)", path, state.step,
                state.epoch, state.batch_in_epoch)
    return state


def prune_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps all); returns deleted."""
    if keep <= 0:
        return []
    ckpts = list_checkpoints(output_dir)
    doomed = ckpts[:-keep]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
        logger.debug("pruned checkpoint %s", p)
    return doomed
