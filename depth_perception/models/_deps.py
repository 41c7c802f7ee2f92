"""The model classes need PyTorch; the onboard install may leave it out."""
from __future__ import annotations

import importlib


def require_torch(module: str):
    """``import torch`` for ``module``, or ImportError saying how to get it."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            f"{module} needs PyTorch, which this install does not have ({exc}). Install "
            "it with `pip install 'depth_perception[torch]'` (on Jetson: NVIDIA's torch "
            "wheel for your JetPack), or run an exported .onnx model with onnxruntime "
            "or TensorRT, which need no torch.") from exc
