"""Tiny random-weight models built from configs, for tests, benches and CPU demos.

Real transformers classes (a DINOv2 + DPT ``DepthAnythingForDepthEstimation`` with a
few thousand parameters), re-initialised so their outputs are O(1), saved with
``save_pretrained`` or exported to ONNX with :class:`ModelMetadata` inside, exactly as a
real model would be. No weights are downloaded.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from depth_perception.metadata import ModelMetadata

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
