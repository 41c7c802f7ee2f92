"""Numerical parity between a model's backends: one error measure, one reference run.

Used by export (torch vs ONNX), engine building (TensorRT vs ONNX) and quantisation
(INT8 vs FP32 ONNX). Imports onnxruntime only when a reference run is made.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from depth_perception.metadata import ModelMetadata


def max_relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """``max |candidate - reference| / max |reference|`` (inf if either has NaN/inf).

    Normalising by the reference's largest magnitude (not element-wise) keeps the
    measure meaningful where the output crosses zero and for near-zero outputs of
    random-weight test models; 1e-3 means "off by 0.1 % of the output range".
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    if not (np.isfinite(reference).all() and np.isfinite(candidate).all()):
        return float("inf")
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    diff = float(np.abs(candidate - reference).max()) if reference.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def run_onnxruntime(onnx_path: str | Path, frames: np.ndarray,
                    metadata: ModelMetadata | None = None) -> list[np.ndarray]:
    """onnxruntime (CPU) outputs per frame, through the runtime's onnxruntime backend
    (which also checks the metadata against the graph)."""
    from depth_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"],
                                 metadata=metadata)
    try:
        name_in, name_out = backend.metadata.input_name, backend.metadata.output_name
        return [backend.run({name_in: frames[i:i + 1]})[name_out]
                for i in range(frames.shape[0])]
    finally:
        backend.close()
