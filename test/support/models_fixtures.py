"""Tiny models and ONNX files for tests (random weights, built from configs, CPU).

Reusable by every test file (``from models_fixtures import ...``; pytest puts ``test/``
on ``sys.path``):

* :func:`tiny_depth_anything` / :func:`save_tiny_depth_anything`: a real transformers
  ``DepthAnythingForDepthEstimation`` (DINOv2 + DPT) with a few thousand parameters,
  re-initialised so its outputs are O(1), saved with ``save_pretrained``.
* :func:`export_depth_onnx` / :func:`tiny_depth_anything_onnx`: ONNX export (opset 17)
  with :class:`ModelMetadata` in ``metadata_props``.
* :class:`FunctionBackend`: a :class:`Backend` whose output is any numpy function of
  the input, for estimator/node tests that need known depths and no model.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec

TINY_MAX_DEPTH = 20


def tiny_depth_anything(metric: bool = True, max_depth: int = TINY_MAX_DEPTH, seed: int = 0):
    """A DepthAnythingForDepthEstimation with a 4-layer, 32-wide DINOv2 (eval mode)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, patch_size=14, image_size=56,
                            out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    extra = ({"depth_estimation_type": "metric", "max_depth": int(max_depth)} if metric
             else {"depth_estimation_type": "relative"})
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 patch_size=14, neck_hidden_sizes=[8, 16, 32, 32],
                                 reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16,
                                 head_hidden_size=8, **extra)
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config)
    # default init gives outputs ~1e-6; standard conv/linear init gives O(1) outputs
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    return model.eval()


def save_tiny_depth_anything(folder, **kwargs) -> Path:
    """save_pretrained of :func:`tiny_depth_anything` into ``folder``."""
    folder = Path(folder)
    tiny_depth_anything(**kwargs).save_pretrained(folder)
    return folder


def export_depth_onnx(module, path, height: int, width: int, metadata: ModelMetadata,
                      input_name: str = "image", output_name: str = "depth") -> Path:
    """Export ``module`` (image [1,3,H,W] -> depth [1,1,H,W]) at one static size, with
    ``metadata`` stored in the file. Names in the graph are ``input_name``/``output_name``
    (the metadata is written as given, so tests can make them disagree)."""
    import torch

    from depth_perception.runtime.onnx_metadata import write_onnx_metadata

    path = Path(path)
    x = torch.rand(1, 3, height, width)
    with warnings.catch_warnings():  # tracer warnings about shape-dependent Python code
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), input_names=[input_name],
                          output_names=[output_name], opset_version=17, dynamo=False)
    write_onnx_metadata(path, metadata)
    return path


def tiny_depth_anything_onnx(path, height: int, width: int, metric: bool = True,
                             seed: int = 0, model=None, **metadata_overrides) -> Path:
    """The tiny Depth Anything (or ``model``, e.g. one loaded from a saved folder)
    exported to ONNX with matching metadata (input 'image', output 'depth', fixed
    height x width)."""
    from depth_perception.runtime.backends.torch_backend import transformers_depth_module

    model = model if model is not None else tiny_depth_anything(metric=metric, seed=seed)
    meta = dict(output_kind="metric_depth" if metric else "relative_disparity",
                input_height=height, input_width=width, max_depth=float(TINY_MAX_DEPTH),
                min_depth=0.1, input_name="image", output_name="depth",
                provenance={"source": "tiny_depth_anything", "seed": seed})
    meta.update(metadata_overrides)
    return export_depth_onnx(transformers_depth_module(model), path, height, width,
                             ModelMetadata(**meta))


class FunctionBackend(Backend):
    """Backend computing ``fn(input [1,3,h,w]) -> [1,1,h,w]`` with numpy.

    Dynamic size unless ``metadata`` fixes it. ``calls`` counts runs.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], metadata: ModelMetadata,
                 name: str = "function", precision: str = "fp32"):
        self.fn, self.metadata = fn, metadata
        self.name, self.precision, self.device = name, precision, "cpu"
        h, w = metadata.fixed_size or (None, None)
        self.inputs = {metadata.input_name: TensorSpec((1, 3, h, w), "float32")}
        self.outputs = {metadata.output_name: TensorSpec((1, 1, h, w), "float32")}
        self.calls = 0
        self.closed = False

    def run(self, feeds):
        self.check_feeds(feeds)
        self.calls += 1
        x = feeds[self.metadata.input_name]
        return {self.metadata.output_name: np.asarray(self.fn(x), dtype=np.float32)}

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
