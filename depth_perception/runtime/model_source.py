"""What a ``model`` string means, decided in one place.

The node's ``model`` parameter, ``evaluate --model``, ``export --checkpoint`` and every
other entry point hand the string to :func:`resolve_model`, which says what it is:

========== ======================================================================
kind       what
========== ======================================================================
onnx       an ``.onnx`` file (onnxruntime, or TensorRT through the engine cache)
engine     a serialized TensorRT engine (``.engine``/``.plan``/``.trt``)
torch2trt  a torch2trt ``.pth``
checkpoint a checkpoint folder of this package (``model_config.json`` +
           ``depth_model.safetensors`` + ``metadata.json``)
transformers a transformers depth model folder (``config.json`` + weights)
hub        a transformers model id (``owner/name``) that is not a local path
========== ======================================================================

:func:`load_transformers_depth_model` is the one loader of transformers depth models,
with the strict weight check of :func:`depth_perception.hub.check_loading_info`: a
folder whose weights do not fit its config is refused by the node exactly as by export.
torch/transformers are imported only when such a model is loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from depth_perception.hub import check_loading_info, hub_offline, snapshot_folder

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_FILES = ("model_config.json", "depth_model.safetensors", "metadata.json")
KINDS = ("onnx", "engine", "torch2trt", "checkpoint", "transformers", "hub")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model`` string: ``kind`` (see :data:`KINDS`), the local ``path``
    (None for a hub id) and what the user typed (``spec``)."""

    spec: str
    kind: str
    path: Path | None


def is_checkpoint_folder(path: Path) -> bool:
    return (path / "model_config.json").is_file() and (path / "depth_model.safetensors").is_file()


def is_transformers_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(model: str | Path) -> ModelSource:
    """Say what ``model`` is. FileNotFoundError when it is neither an existing model
    file/folder nor something that can be a hub id; ValueError for a file of an unknown
    type."""
    text = str(model)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        kinds = {".onnx": "onnx", ".pth": "torch2trt", **{s: "engine" for s in ENGINE_SUFFIXES}}
        if suffix not in kinds:
            raise ValueError(f"{path}: unknown model file type '{suffix}'; expected .onnx, "
                             f"{'/'.join(ENGINE_SUFFIXES)} (TensorRT), .pth (torch2trt), a "
                             "checkpoint folder or a transformers model folder")
        return ModelSource(text, kinds[suffix], path)
    if path.is_dir():
        if is_checkpoint_folder(path):
            return ModelSource(text, "checkpoint", path)
        if is_transformers_folder(path):
            return ModelSource(text, "transformers", path)
        raise FileNotFoundError(
            f"{path} is a folder but not a model: expected {' + '.join(CHECKPOINT_FILES)} "
            "(a checkpoint of this package) or config.json + weights (transformers); it "
            f"holds {sorted(p.name for p in path.iterdir())[:10]}")
    looks_like_path = (suffix in (".onnx", ".pth", ".json", *ENGINE_SUFFIXES)
                       or text.startswith((".", "/", "~")) or text.count("/") != 1)
    if looks_like_path:
        raise FileNotFoundError(f"model {text} not found (no such file or folder; a hub id "
                                "looks like owner/name)")
    return ModelSource(text, "hub", None)


def load_transformers_depth_model(source: ModelSource | str, local_files_only: bool | None = None,
                                  allow_weight_mismatch: bool = False):
    """(model, processor_config or None, folder) of a transformers depth model.

    ``source``: a resolved ``transformers`` or ``hub`` source (or its string). A hub id
    resolves to its local snapshot (:func:`depth_perception.hub.snapshot_folder`,
    downloaded only when the hub is not offline). Weights that do not fit the config
    are refused (ValueError) unless ``allow_weight_mismatch``.
    """
    if isinstance(source, str):
        source = resolve_model(source)
    if source.kind not in ("transformers", "hub"):
        raise ValueError(f"{source.spec} is a {source.kind} model, not a transformers one")
    try:
        from transformers import AutoConfig, AutoModelForDepthEstimation
    except ImportError as exc:
        raise RuntimeError("loading a transformers depth model needs torch and "
                           "transformers: pip install 'depth_perception[torch]'") from exc
    folder = source.path or snapshot_folder(source.spec, hub_offline(bool(local_files_only)))
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        model, info = AutoModelForDepthEstimation.from_pretrained(
            folder, local_files_only=True, output_loading_info=True)
    except ValueError as exc:
        raise ValueError(f"{source.spec}: not a transformers depth-estimation model "
                         f"({type(config).__name__}): {exc}") from exc
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"{source.spec}: the transformers weights do not load into its "
                         f"config: {exc}") from exc
    check_loading_info(source.spec, info, allow_weight_mismatch)
    pre_path = Path(folder) / "preprocessor_config.json"
    processor_config = json.loads(pre_path.read_text()) if pre_path.is_file() else None
    return model, processor_config, Path(folder)
