"""Model metadata inside ONNX files (``metadata_props`` key ``depth_perception``).

The metadata travels inside the .onnx file, so the runtime configures itself from the
model alone: ``write_onnx_metadata(path_or_model, meta)`` stores it,
``read_onnx_metadata(path)`` reads it back. ``onnx`` is imported inside the functions.
"""
from __future__ import annotations

import logging
from pathlib import Path

from depth_perception.metadata import METADATA_KEY, ModelMetadata

logger = logging.getLogger(__name__)

HOW_TO_ADD = ("add it with depth_perception.runtime.onnx_metadata.write_onnx_metadata(path, "
              "ModelMetadata(output_kind=..., input_height=..., input_width=..., "
              "input_name=..., output_name=...)), export the model with "
              "`depth-perception export`, or pass metadata=ModelMetadata(...) to load_backend")


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError("reading ONNX metadata needs the 'onnx' package: "
                           "pip install onnx") from exc
    return onnx


def write_onnx_metadata(path_or_model, meta: ModelMetadata):
    """Store ``meta`` in an ONNX model (replacing an older entry).

    ``path_or_model``: a path (the file is rewritten in place, returns the path) or an
    ``onnx.ModelProto`` (modified in place, returned).
    """
    onnx = _import_onnx()
    meta.validate()
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} not found")
        model = onnx.load(str(path), load_external_data=False)
        _set_prop(model, meta)
        onnx.save(model, str(path))
        return path
    _set_prop(path_or_model, meta)
    return path_or_model


def _set_prop(model, meta: ModelMetadata) -> None:
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()


def read_onnx_metadata(path) -> ModelMetadata:
    """The :class:`ModelMetadata` stored in an ONNX file.

    FileNotFoundError if the file is missing; ValueError if it is not an ONNX model or
    carries no ``depth_perception`` metadata (the message says how to add it).
    """
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise ValueError(f"{path} is not a readable ONNX model ({exc})") from exc
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelMetadata.from_json(prop.value, f"{path} metadata_props['{METADATA_KEY}']")
    keys = [p.key for p in model.metadata_props]
    raise ValueError(f"{path} has no '{METADATA_KEY}' entry in its metadata_props "
                     f"(found keys {keys}); the runtime needs it to know the input size, "
                     f"normalisation and output kind: {HOW_TO_ADD}")
