"""A finished training run's deployable files: ``model/`` -> ``model.onnx`` (and a
TensorRT engine where TensorRT and a CUDA GPU exist), as the student trainer and the
small-scale reproduction write them."""
from __future__ import annotations

from pathlib import Path


def export_deployable(model_dir: Path, height: int, width: int, engine: bool = True) -> dict:
    """``model_dir`` -> ``model_dir.parent/model.onnx`` (metadata, parity-checked against
    torch) and, where TensorRT and a CUDA GPU exist, ``model.engine``. Returns what was
    written (``engine`` is a reason string when it could not be built here)."""
    import torch

    from depth_perception_training.export.onnx_export import export_onnx, load_export_source

    onnx_path = model_dir.parent / "model.onnx"
    result = export_onnx(load_export_source(model_dir), onnx_path, height, width)
    written = {"onnx": str(result.path), "onnx_max_rel_error": result.max_rel_error}
    if engine:
        from depth_perception.runtime.engine import tensorrt_available

        if tensorrt_available() and torch.cuda.is_available():
            from depth_perception.runtime.engine import build_engine

            written["engine"] = str(build_engine(onnx_path, model_dir.parent / "model.engine"))
        else:
            written["engine"] = ("not built: TensorRT with a CUDA GPU is not available here "
                                 "(`depth-perception export --checkpoint OUTPUT_DIR/model "
                                 "--engine model.engine` on a machine with TensorRT)")
    return written
