"""Training: layered configs, an Accelerate trainer that only orchestrates, checkpoints,
TensorBoard logging, and the tasks that build models / losses / data for it.

* :mod:`.config`: schema dataclasses and ``load_config(yaml, overrides)`` (light).
* :mod:`.trainer`: :class:`~.trainer.Trainer` (collaborators passed in), optimizer and
  StepLR, NaN/Inf guard, validation with :mod:`depth_perception.metrics`.
* :mod:`.checkpoint`: atomic ``checkpoints/step_XXXXXXXX`` folders, exact resume.
* :mod:`.logging`: TensorBoard scalars and colour-mapped depth.
* :mod:`.teacher`: the self-supervised teacher task (``depth-perception train teacher``).

Submodules import torch; this package's ``__init__`` does not.
"""
from __future__ import annotations

__all__ = ["config", "trainer", "checkpoint", "logging", "teacher"]
