"""Inference backends behind one contract (:class:`~.base.Backend`) and the loader.

:func:`load_backend` opens a model from any of:

* an ``.onnx`` file (metadata in ``metadata_props``) -> onnxruntime
  (TensorRT/CUDA/CPU execution providers);
* a TensorRT ``.engine``/``.plan`` file with ``<engine>.json`` metadata beside it, or a
  torch2trt ``.pth`` module -> TensorRT;
* a checkpoint folder of this package (``model_config.json`` +
  ``depth_model.safetensors`` + ``metadata.json``) -> torch;
* a transformers depth model id or local folder (``config.json``) -> torch.

``backend="auto"`` picks the fastest that can run the model here (TensorRT engine >
onnxruntime with TensorRT/CUDA EP > torch CUDA > onnxruntime CPU > torch CPU) and logs
what it chose and why. Backend modules import torch/onnxruntime/tensorrt lazily.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
from pathlib import Path
from typing import Callable

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec
from depth_perception.runtime.model_source import resolve_model

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")

__all__ = ["Backend", "TensorSpec", "BACKENDS", "load_backend"]


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return torch.cuda.is_available()


def _ort_accelerated() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    from depth_perception.runtime.backends.onnxruntime_backend import available_providers
    return [p for p in available_providers()
            if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]


def choose_backend(fmt: str) -> tuple[str, str]:
    """(backend, reason) for ``backend='auto'`` given the model format."""
    if fmt in ("engine", "torch2trt"):
        return "tensorrt", f"a {fmt} file runs only on TensorRT"
    if fmt == "onnx":
        if importlib.util.find_spec("tensorrt") is not None and _cuda_available():
            return "tensorrt", ("ONNX model, TensorRT and a CUDA device present: the engine "
                                "is built once from the ONNX and cached")
        accel = _ort_accelerated()
        if accel:
            return "onnxruntime", f"ONNX model, onnxruntime offers {accel}"
        return "onnxruntime", "ONNX model, onnxruntime CPU (no TensorRT/CUDA provider here)"
    if _cuda_available():
        return "torch", f"{fmt} model, torch with CUDA"
    return "torch", f"{fmt} model, torch on CPU (no CUDA device; export to ONNX/TensorRT " \
                    "for speed)"


def _call(factory, model, options: dict, backend: str):
    accepted = list(inspect.signature(factory).parameters)[1:]  # first one is the model
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the {backend} backend; "
                         f"it accepts {accepted}")
    return factory(model, **options)


def load_backend(model: str | Path, backend: str = "auto", *,
                 engine_builder: Callable | None = None, **options
                 ) -> tuple[Backend, ModelMetadata]:
    """Open ``model`` on ``backend``; returns the backend and the model's metadata.

    ``engine_builder(onnx_path, precision, cache_dir) -> engine path`` turns an .onnx
    into a TensorRT engine when ``backend`` is (or ``auto`` picks) TensorRT; the layer
    above passes it (:meth:`DepthEstimator.load` passes
    :func:`depth_perception.runtime.engine.ensure_engine`, which builds once and caches),
    so the backends never import the engine builder.

    Options go to the chosen backend (unknown ones are refused):
    onnxruntime: ``providers``, ``metadata``, ``intra_op_threads``;
    tensorrt: ``metadata``, ``device`` (CUDA index); for an .onnx model also
    ``precision`` ('fp32', 'fp16' (default), 'int8') and ``engine_cache_dir``;
    torch: ``device`` ('auto', 'cpu', 'cuda[:i]'), ``precision`` ('fp32', 'fp16'),
    and for transformers models ``local_files_only``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
    source = resolve_model(model)
    fmt = source.kind
    if backend == "auto":
        backend, reason = choose_backend(fmt)
        logger.info("backend auto -> %s for %s: %s", backend, model, reason)

    if backend == "tensorrt":
        from depth_perception.runtime.backends import tensorrt_backend as trt_mod
        trt_mod.import_tensorrt()  # RuntimeError naming what to install, whatever the model
        if fmt == "onnx":
            # Build the engine once from the ONNX and cache it under a key of GPU,
            # TensorRT version, precision and shape; later starts reuse it.
            if engine_builder is None:
                raise ValueError(f"backend 'tensorrt' on the ONNX model {model} needs an "
                                 "engine builder (DepthEstimator.load passes the engine "
                                 "cache); or pass a built .engine")
            options = dict(options)
            precision = options.pop("precision", "fp16")
            cache_dir = options.pop("engine_cache_dir", None)
            engine = engine_builder(model, precision, cache_dir)
            logger.info("TensorRT engine for %s (%s): %s", model, precision, engine)
            model, fmt = engine, "engine"
        if fmt == "engine":
            opened = _call(trt_mod.TensorRTBackend, model, options, backend)
        elif fmt == "torch2trt":
            opened = _call(trt_mod.Torch2TRTBackend, model, options, backend)
        else:
            raise ValueError(f"backend 'tensorrt' needs an .onnx file (an engine is built "
                             f"from it and cached), a serialized engine (.engine/.plan) or "
                             f"a torch2trt .pth, got a {fmt} model {model}; export it with "
                             "`depth-perception export` or use backend='torch'")
    elif backend == "onnxruntime":
        if fmt != "onnx":
            raise ValueError(f"backend 'onnxruntime' needs an .onnx file, got a {fmt} model "
                             f"{model}; export it with `depth-perception export` or use "
                             "backend='torch'")
        from depth_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        opened = _call(OnnxRuntimeBackend, model, options, backend)
    else:  # torch
        from depth_perception.runtime.backends.torch_backend import TorchBackend
        if fmt == "checkpoint":
            opened = _call(TorchBackend.from_checkpoint, model, options, backend)
        elif fmt in ("transformers", "hub"):
            opened = _call(TorchBackend.from_transformers, source, options, backend)
        else:
            raise ValueError(f"backend 'torch' loads checkpoint folders and transformers "
                             f"models, got a {fmt} file {model}; use backend='auto'")
    logger.info("opened %s: backend %s, precision %s, device %s, output %s", model,
                opened.name, opened.precision, opened.device, opened.metadata.output_kind)
    return opened, opened.metadata
