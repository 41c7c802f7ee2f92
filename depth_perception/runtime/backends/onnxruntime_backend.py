"""onnxruntime backend: TensorRT, CUDA or CPU execution providers.

The model's :class:`ModelMetadata` comes from the ONNX ``metadata_props`` (or is passed
in) and is checked against the graph's input/output names and shapes before use.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec, check_metadata_against_io
from depth_perception.runtime.onnx_metadata import read_onnx_metadata

logger = logging.getLogger(__name__)

#: Default preference, fastest first; only the available ones are used.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(double)": "float64", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
               "tensor(bool)": "bool"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeError("the onnxruntime backend needs the 'onnxruntime' package: "
                           "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA/TensorRT "
                           "execution providers)") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    return list(import_onnxruntime().get_available_providers())


def select_providers(requested: list[str] | None, available: list[str]) -> list[str]:
    """Providers to use: ``requested`` verbatim (each must be available) or, if None,
    the available ones of :data:`PROVIDER_ORDER` in that order."""
    if requested is None:
        chosen = [p for p in PROVIDER_ORDER if p in available]
        if not chosen:
            raise RuntimeError(f"onnxruntime offers none of {PROVIDER_ORDER} "
                               f"(available: {available})")
        return chosen
    if isinstance(requested, str):
        requested = [requested]
    missing = [p for p in requested if p not in available]
    if missing or not requested:
        raise ValueError(f"onnxruntime providers {missing or requested} are not available in "
                         f"this build (available: {available}); CUDA/TensorRT providers need "
                         "onnxruntime-gpu on a CUDA machine")
    return list(requested)


def dynamic_batch(path: Path, input_name: str) -> bool:
    """True when the graph input ``input_name`` of the ONNX file has a dynamic leading
    (batch) dimension; False when fixed, or when ``onnx`` is missing to tell."""
    try:
        import onnx
    except ImportError:
        return False
    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.input:
        if node.name == input_name:
            dims = node.type.tensor_type.shape.dim
            return bool(dims) and not dims[0].HasField("dim_value")
    return False


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorSpec(shape, _ORT_DTYPES.get(node.type, node.type))


class OnnxRuntimeBackend(Backend):
    """An ONNX file run by an ``onnxruntime.InferenceSession``.

    ``providers``: explicit execution provider list, or None for the fastest available.
    ``metadata``: overrides/supplies the metadata (else read from the file).
    ``intra_op_threads``: onnxruntime CPU threads (None: its default).
    """

    name = "onnxruntime"

    def __init__(self, path, providers: list[str] | None = None,
                 metadata: ModelMetadata | None = None, intra_op_threads: int | None = None):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        # 1. metadata first: a model without it is refused before the session is built
        self.metadata = metadata if metadata is not None else read_onnx_metadata(path)
        # 2. session on the chosen providers
        chosen = select_providers(providers, list(ort.get_available_providers()))
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        if dynamic_batch(path, self.metadata.input_name):
            # batches of 1..N frames (several cameras): onnxruntime's memory pattern
            # would keep a plan per batch size (measured: 284 -> 175 MB resident for a
            # U-Net run at batches 1-4, same speed)
            options.enable_mem_pattern = False
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        self.providers = list(self._session.get_providers())
        self.device = self.providers[0]
        # 3. tensors, checked against the metadata
        self.inputs = {i.name: _spec(i) for i in self._session.get_inputs()}
        self.outputs = {o.name: _spec(o) for o in self._session.get_outputs()}
        check_metadata_against_io(self.metadata, self.inputs, self.outputs, str(path))
        in_dtype = self.inputs[self.metadata.input_name].dtype
        self.precision = "fp16" if in_dtype == "float16" else "fp32"
        quantized = self.metadata.provenance.get("quantization")
        if isinstance(quantized, dict) and quantized.get("precision"):
            self.precision = str(quantized["precision"])      # e.g. int8 (QDQ)
        self.path = path
        logger.info("onnxruntime: %s on %s (%s, input %s %s)", path.name, self.providers,
                    self.precision, self.metadata.input_name,
                    self.inputs[self.metadata.input_name].shape)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("onnxruntime backend is closed")
        self.check_feeds(feeds)
        cast = {k: np.ascontiguousarray(v, dtype=self.inputs[k].dtype) for k, v in feeds.items()}
        names = list(self.outputs)
        values = self._session.run(names, cast)
        return dict(zip(names, values))

    def close(self) -> None:
        self._session = None
