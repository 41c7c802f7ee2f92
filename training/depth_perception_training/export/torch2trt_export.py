"""torch -> TensorRT through torch2trt (optional; CUDA machines with torch2trt built).

Saves the ``TRTModule`` state dict (``.pth``) that the runtime's torch2trt path
(:class:`depth_perception.runtime.backends.tensorrt_backend.Torch2TRTBackend`) loads,
with the model metadata beside it as ``<file>.json``. torch2trt and TensorRT are
imported inside :func:`export_torch2trt`; without them it raises RuntimeError saying
what to install.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from depth_perception.metadata import ModelMetadata

logger = logging.getLogger(__name__)

TORCH2TRT_MISSING = (
    "torch2trt is not available here (`import torch2trt` failed{reason}). It is not on "
    "PyPI: on a CUDA machine with TensorRT (JetPack on Jetson, or NVIDIA's `tensorrt` "
    "wheel) and a CUDA build of torch, install it from its source repository "
    "(NVIDIA-AI-IOT/torch2trt, `pip install .` in a checkout). Without it, build a "
    "TensorRT engine from the ONNX (--engine) or run the ONNX with onnxruntime.")


def import_torch2trt():
    """The ``torch2trt`` function, or RuntimeError saying what to install."""
    try:
        from torch2trt import torch2trt
    except ImportError as exc:
        raise RuntimeError(TORCH2TRT_MISSING.format(reason=f": {exc}")) from exc
    return torch2trt


def export_torch2trt(module, metadata: ModelMetadata, out_path: str | Path, *,
                     precision: str = "fp16", workspace_gb: float = 4.0,
                     check_frames: np.ndarray | None = None, tolerance: float = 2e-2,
                     device: str = "cuda") -> Path:
    """Convert ``module`` (image [1,3,H,W] -> depth [1,1,H,W]) at the metadata's fixed
    input size; save the TRTModule state dict to ``out_path`` and ``<out_path>.json``.

    ``check_frames`` [N,3,H,W]: the converted module is compared with torch on them
    (max relative error <= ``tolerance``, no NaN) before anything is saved.
    """
    convert = import_torch2trt()
    import torch

    from depth_perception_training.export.onnx_export import max_relative_error

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"torch2trt export supports precision fp32 or fp16, got '{precision}' "
                         "(INT8 goes through the TensorRT engine build with calibration)")
    if metadata.fixed_size is None:
        raise ValueError("torch2trt export needs a fixed input size in the metadata")
    if not torch.cuda.is_available():
        raise RuntimeError("torch2trt needs a CUDA device; torch sees none")
    h, w = metadata.fixed_size
    out_path = Path(out_path)
    module = module.to(device).eval()
    example = torch.zeros(1, 3, h, w, device=device)
    with torch.inference_mode():
        trt_module = convert(module, [example], fp16_mode=(precision == "fp16"),
                             max_workspace_size=int(workspace_gb * (1 << 30)),
                             input_names=[metadata.input_name],
                             output_names=[metadata.output_name])
        if check_frames is not None:
            for i in range(check_frames.shape[0]):
                x = torch.from_numpy(np.ascontiguousarray(check_frames[i:i + 1])).to(device)
                ref = module(x).float().cpu().numpy()
                out = trt_module(x).float().cpu().numpy()
                error = max_relative_error(ref, out)
                if not error <= tolerance:
                    raise RuntimeError(f"torch2trt module differs from torch by {error:.3e} "
                                       f"(tolerance {tolerance:.1e}) or gives NaN: not saved")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trt_module.state_dict(), str(out_path))
    provenance = {**metadata.provenance, "precision": precision,
                  "torch2trt": {"precision": precision, "workspace_gb": workspace_gb}}
    dataclasses.replace(metadata, provenance=provenance).save(Path(str(out_path) + ".json"))
    logger.info("torch2trt module saved to %s (%s)", out_path, precision)
    return out_path
