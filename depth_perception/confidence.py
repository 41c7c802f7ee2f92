"""Per-pixel confidence of a depth image: what it means and where it comes from.

A confidence image is ``32FC1`` in [0, 1] beside the depth (same header and geometry;
NaN where the depth has none). Its sources (:data:`SOURCES`):

* ``model``: a model with a second output named for its uncertainty
  (:func:`uncertainty_output`, e.g. ``log_variance``: ``s = log sigma^2`` of the error
  of the log-depth, as a self-taught student predicts it). The confidence is the
  probability that the depth is within 10 % of the truth when that error is Laplacian
  with the predicted variance: ``1 - exp(-sqrt(2) ln(1.1) / sigma)``
  (:func:`from_log_variance`): 0.95 at sigma = 0.045, 0.5 at 0.19, 0.12 at 1.
* ``temporal``: the temporal fusion's agreement of the pixel with its own history
  (:mod:`depth_perception.runtime.fusion`).

Consumers rank pixels by it (sparsification, :mod:`depth_perception.evaluation.
sparsification`) or drop points under a threshold (the cloud filter,
:class:`depth_perception.cloud.CloudSettings` ``min_confidence``).
"""
from __future__ import annotations

import math

import numpy as np

SOURCES = ("model", "temporal")
#: a model output is its uncertainty when its name is one of these or contains one
UNCERTAINTY_NAMES = ("log_variance", "logvar", "log_var", "uncertainty")
#: relative depth error the model confidence is the probability of staying within
WITHIN = 0.10
_K = math.sqrt(2.0) * math.log1p(WITHIN)


def uncertainty_output(outputs, depth_output: str) -> str | None:
    """The name of the model output that carries the per-pixel uncertainty (a name
    of :data:`UNCERTAINTY_NAMES` or containing one), other than ``depth_output``; None
    when the model has none. Two such outputs are an error (which one is meant?)."""
    names = [n for n in outputs if n != depth_output
             and any(u in str(n).lower() for u in UNCERTAINTY_NAMES)]
    if len(names) > 1:
        raise ValueError(f"the model has several uncertainty outputs {names}; keep one "
                         f"(named like {UNCERTAINTY_NAMES[0]})")
    return names[0] if names else None


def from_log_variance(log_variance: np.ndarray) -> np.ndarray:
    """[H,W] ``s = log sigma^2`` (sigma: std of the log-depth error) -> [H,W] float32
    confidence ``1 - exp(-sqrt(2) ln(1.1) / sigma)`` in [0, 1]; NaN stays NaN."""
    s = np.asarray(log_variance, dtype=np.float32)
    with np.errstate(over="ignore"):
        sigma = np.exp(np.clip(0.5 * s, -30.0, 30.0))
        return (1.0 - np.exp(-np.float32(_K) / sigma)).astype(np.float32)
