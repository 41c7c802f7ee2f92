"""TensorRT engine cache: keys, engine metadata files, the machine's GPU and TensorRT.

An engine is only valid for the GPU model, TensorRT version, precision, input shape and
ONNX bytes it was built from: :func:`engine_cache_key` covers all five, the key is part
of the engine's file name and recorded in ``<engine>.json`` (a :class:`ModelMetadata`
JSON whose ``provenance["tensorrt"]`` holds the key, its digest and the build settings).
Building is :mod:`depth_perception.runtime.engine`; nothing here imports TensorRT at
module import.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.tensorrt_backend import import_tensorrt

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    return precision


# -- engine cache key ------------------------------------------------------------------

@dataclass(frozen=True)
class EngineCacheKey:
    """What an engine depends on. Two builds with equal keys are interchangeable."""

    onnx_sha256: str
    gpu_name: str
    tensorrt_version: str
    precision: str
    input_shape: tuple

    @property
    def digest(self) -> str:
        """Hex sha256 of the key's canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_shape"] = [int(s) for s in self.input_shape]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EngineCacheKey":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) != names:
            raise ValueError(f"engine cache key: expected keys {sorted(names)}, got {sorted(d)}")
        return engine_cache_key(**d)


def engine_cache_key(onnx_sha256: str, gpu_name: str, tensorrt_version: str,
                     precision: str, input_shape: Sequence[int]) -> EngineCacheKey:
    """Validated :class:`EngineCacheKey` (GPU name whitespace-normalised)."""
    if not re.fullmatch(r"[0-9a-f]{64}", str(onnx_sha256)):
        raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got '{onnx_sha256}'")
    gpu = " ".join(str(gpu_name).split())
    if not gpu:
        raise ValueError("engine cache key: empty GPU name")
    if not str(tensorrt_version).strip():
        raise ValueError("engine cache key: empty TensorRT version")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"engine cache key: input shape must be static and positive, got "
                         f"{tuple(input_shape)} (export one ONNX per resolution)")
    return EngineCacheKey(str(onnx_sha256), gpu, str(tensorrt_version).strip(),
                          check_precision(precision), shape)


def engine_file_name(onnx_path: str | Path, key: EngineCacheKey) -> str:
    """``<onnx stem>.<precision>.<H>x<W>.<digest[:16]>.engine``."""
    hw = "x".join(str(s) for s in key.input_shape[-2:])
    return f"{Path(onnx_path).stem}.{key.precision}.{hw}.{key.digest[:16]}.engine"


def engine_json_path(engine_path: str | Path) -> Path:
    """``<engine>.json``: the metadata file beside an engine."""
    return Path(str(engine_path) + ".json")


def read_engine_key(engine_path: str | Path) -> EngineCacheKey | None:
    """The cache key recorded beside an engine, None if absent or unreadable."""
    path = engine_json_path(engine_path)
    if not path.is_file():
        return None
    try:
        meta = ModelMetadata.load(path)
        return EngineCacheKey.from_dict(meta.provenance["tensorrt"]["cache_key"])
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("engine metadata %s unreadable (%s): the engine will be rebuilt",
                       path, exc)
        return None


def write_engine_metadata(engine_path: str | Path, metadata: ModelMetadata,
                          key: EngineCacheKey, build: dict | None = None) -> Path:
    """Write ``<engine>.json``: ``metadata`` with ``provenance['tensorrt']`` filled in."""
    provenance = dict(metadata.provenance)
    provenance["precision"] = key.precision   # what the runtime backend reports
    provenance["tensorrt"] = {"cache_key": key.to_dict(), "cache_key_digest": key.digest,
                              "engine_file": Path(engine_path).name, **(build or {})}
    meta = dataclasses.replace(metadata, provenance=provenance)
    return meta.save(engine_json_path(engine_path))


# -- the engine cache ----------------------------------------------------------------------

@dataclass(frozen=True)
class TensorRTEnvironment:
    """What the engine cache key needs to know about this machine."""

    gpu_name: str
    tensorrt_version: str


def detect_gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` (via torch, else cuda-python); RuntimeError if none."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device)
    except ImportError:
        pass
    try:
        try:
            from cuda.bindings import runtime as cudart   # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart                       # older cuda-python

        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = props.name
            return name.decode().rstrip("\0") if isinstance(name, bytes) else str(name)
    except ImportError:
        pass
    raise RuntimeError("no CUDA device visible (torch.cuda and cuda-python found none): "
                       "TensorRT engines are built on the GPU that will run them")


def detect_environment() -> TensorRTEnvironment:
    trt = import_tensorrt()
    return TensorRTEnvironment(detect_gpu_name(), str(trt.__version__))


def default_engine_cache_dir() -> Path:
    """Where engines are cached unless told otherwise: ``$DEPTH_PERCEPTION_ENGINE_CACHE``,
    else ``$XDG_CACHE_HOME/depth_perception/engines`` (``~/.cache/...``)."""
    explicit = os.environ.get("DEPTH_PERCEPTION_ENGINE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "depth_perception" / "engines"
