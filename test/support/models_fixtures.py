"""Tiny models and ONNX files for tests (random weights, built from configs, CPU).

Reusable by every test file (``from support.models_fixtures import ...``; pytest puts
``test/`` on ``sys.path``):

* :func:`tiny_depth_anything`, :func:`save_tiny_depth_anything`,
  :func:`export_depth_onnx`, :func:`tiny_depth_anything_onnx`: from
  :mod:`depth_perception_training.tiny` (benches use them too).
* :class:`FunctionBackend`: a :class:`Backend` whose output is any numpy function of
  the input, for estimator/node tests that need known depths and no model.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec
from depth_perception_training.tiny import (  # noqa: F401  (re-exported for the tests)
    TINY_MAX_DEPTH,
    export_depth_onnx,
    save_tiny_depth_anything,
    tiny_depth_anything,
    tiny_depth_anything_onnx,
)

class FunctionBackend(Backend):
    """Backend computing ``fn(input [B,3,h,w]) -> [B,1,h,w]`` with numpy.

    Dynamic size unless ``metadata`` fixes it; batch fixed at ``batch`` (default 1,
    None: any). ``calls`` counts runs, ``batches`` lists the batch size of each.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], metadata: ModelMetadata,
                 name: str = "function", precision: str = "fp32", batch: int | None = 1,
                 extra_outputs: dict | None = None):
        self.fn, self.metadata = fn, metadata
        self.name, self.precision, self.device = name, precision, "cpu"
        h, w = metadata.fixed_size or (None, None)
        self.inputs = {metadata.input_name: TensorSpec((batch, 3, h, w), "float32")}
        self.outputs = {metadata.output_name: TensorSpec((batch, 1, h, w), "float32")}
        #: more outputs {name: fn(input) -> [B,1,h,w]} (e.g. a log-variance)
        self.extra_outputs = dict(extra_outputs or {})
        self.outputs.update({n: TensorSpec((batch, 1, h, w), "float32")
                             for n in self.extra_outputs})
        self.calls = 0
        self.batches: list[int] = []
        self.closed = False

    def run(self, feeds):
        self.check_feeds(feeds)
        self.calls += 1
        x = feeds[self.metadata.input_name]
        self.batches.append(int(x.shape[0]))
        out = {self.metadata.output_name: np.asarray(self.fn(x), dtype=np.float32)}
        out.update({n: np.asarray(f(x), dtype=np.float32)
                    for n, f in self.extra_outputs.items()})
        return out

    def close(self):
        self.closed = True


def constant_backend(value: float, metadata: ModelMetadata) -> FunctionBackend:
    """Outputs ``value`` everywhere at the input size."""
    return FunctionBackend(lambda x: np.full((1, 1, *x.shape[2:]), value, np.float32), metadata)


def street_depth(intrinsics, camera_height: float, pitch_deg: float = 0.0,
                 wall_offset: float = 4.0, far: float = 80.0) -> np.ndarray:
    """Analytic street depth [H,W] float32: flat road ``camera_height`` below the camera,
    vertical walls ``wall_offset`` metres left and right, sky (NaN) beyond ``far``.

    The camera is pitched down by ``pitch_deg``; world up in the optical frame is
    ``(0, -cos p, -sin p)``.
    """
    p = np.radians(pitch_deg)
    up = np.array([0.0, -np.cos(p), -np.sin(p)])
    u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
    rx, ry = np.meshgrid(u, v)                         # ray (rx, ry, 1) per pixel
    with np.errstate(divide="ignore", invalid="ignore"):
        along_up = rx * up[0] + ry * up[1] + up[2]
        road = np.where(along_up < 0, -camera_height / along_up, np.inf)
        # walls are vertical planes x = +-offset (pitch is about the optical x axis)
        wall = np.where(rx != 0, wall_offset / np.abs(rx), np.inf)
    depth = np.minimum(road, wall)
    depth[depth > far] = np.nan
    return depth.astype(np.float32)
