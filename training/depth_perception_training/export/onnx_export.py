"""Checkpoint -> static-shape ONNX with its metadata, checked against torch.

Sources (:func:`load_export_source`):

* a checkpoint folder of this package (``model_config.json``,
  ``depth_model.safetensors``, ``metadata.json``) via
  :func:`depth_perception.models.load_depth_model`;
* a transformers depth model (``AutoModelForDepthEstimation``: Depth Anything V1/V2,
  DPT, ...) as a local folder or a model id already in the local cache (no download
  while ``HF_HUB_OFFLINE`` is set), wrapped so the graph maps ``image`` [1,3,H,W] to
  ``depth`` [1,1,H,W]. Its metadata comes from its config: ``metric_depth`` (with the
  config's ``max_depth``) if ``depth_estimation_type == "metric"``, else
  ``relative_disparity``.

:func:`export_onnx` writes one file per input resolution (H and W multiples of the
patch size, 14): opset 17 through the TorchScript exporter, fixed input/output names
from the metadata, the metadata (now with the fixed input size and provenance:
source, weights sha256, exporter versions, parity) in ``metadata_props``,
``onnx.checker`` passed, and onnxruntime compared with torch on real (bag) or
synthetic frames. The file appears at its path only once all of this passed.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depth_perception import __version__
from depth_perception.files import sha256_files
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.model_source import CHECKPOINT_FILES, resolve_model
from depth_perception.runtime.parity import max_relative_error, run_onnxruntime  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: the second output of a model with a log-variance head (what the runtime reads as the
#: model's uncertainty, depth_perception.confidence)
UNCERTAINTY_OUTPUT = "log_variance"
DEFAULT_TOLERANCE = 1e-3
PACKAGE_CHECKPOINT_FILES = CHECKPOINT_FILES


def check_export_size(height: int, width: int, multiple: int = 14) -> tuple[int, int]:
    """(height, width) if both are positive multiples of ``multiple``, else ValueError."""
    bad = [f"{name} {v}" for name, v in (("height", height), ("width", width))
           if int(v) <= 0 or int(v) % multiple]
    if bad:
        def near(v):
            return max(multiple, int(round(v / multiple)) * multiple)
        raise ValueError(f"export size {height}x{width} (HxW): {', '.join(bad)} is not a "
                         f"positive multiple of {multiple} (the model's size multiple, e.g. "
                         f"the ViT patch size 14); nearest valid size "
                         f"{near(height)}x{near(width)}")
    return int(height), int(width)


# -- sources ----------------------------------------------------------------------------

@dataclass
class ExportSource:
    """A torch module mapping a normalised image [B,3,H,W] to [B,1,H,W], its metadata
    (dynamic or fixed size) and where it came from (``provenance``)."""

    module: object
    metadata: ModelMetadata
    provenance: dict = field(default_factory=dict)


def load_export_source(checkpoint: str | Path, device: str = "cpu") -> ExportSource:
    """Open a package checkpoint folder or a transformers depth model (folder or id),
    as resolved by :func:`depth_perception.runtime.model_source.resolve_model` (the
    runtime's resolver).

    FileNotFoundError for a path that does not exist or an id not in the local cache;
    ValueError for weights that do not fit their config (with the reason).
    """
    source = resolve_model(checkpoint)
    if source.kind == "checkpoint":
        return _load_package_checkpoint(source.path, device)
    if source.kind in ("transformers", "hub"):
        return _load_transformers(source, device)
    raise ValueError(f"{checkpoint} is a {source.kind} model: export starts from a checkpoint "
                     "folder of this package or a transformers depth model")


def _load_package_checkpoint(folder: Path, device: str) -> ExportSource:
    from depth_perception.models import load_depth_model

    missing = [n for n in PACKAGE_CHECKPOINT_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint folder {folder} lacks {missing} (a checkpoint has "
                                f"{', '.join(PACKAGE_CHECKPOINT_FILES)})")
    try:
        module, metadata = load_depth_model(folder, device=device)
    except (FileNotFoundError, ValueError):
        raise
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys, size mismatch
        raise ValueError(f"checkpoint {folder}: the weights in depth_model.safetensors do not "
                         f"fit model_config.json: {exc}") from exc
    weights = folder / "depth_model.safetensors"
    provenance = {"source_checkpoint": str(folder.resolve()), "source_format": "depth_perception",
                  "weights_file": weights.name, "weights_sha256": sha256_files([weights])}
    try:
        provenance["architecture"] = json.loads(
            (folder / "model_config.json").read_text()).get("arch")
    except (ValueError, AttributeError):
        pass
    return ExportSource(module.eval(), metadata, provenance)


def _load_transformers(source, device: str) -> ExportSource:
    import torch

    from depth_perception.runtime.backends.torch_backend import (metadata_from_transformers,
                                                                 transformers_depth_module)
    from depth_perception.runtime.model_source import load_transformers_depth_model

    name = source.spec
    model, pre, folder = load_transformers_depth_model(source)
    config = model.config
    metadata = dataclasses.replace(metadata_from_transformers(config, pre, name),
                                   input_name="image", output_name="depth")
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    provenance = {"source_checkpoint": str(Path(name).resolve()) if Path(name).exists()
                  else name, "source_format": "transformers",
                  "architecture": type(model).__name__,
                  "depth_estimation_type": getattr(config, "depth_estimation_type", None),
                  "weights_file": [w.name for w in weights],
                  "weights_sha256": sha256_files(weights) if weights else None}
    module = transformers_depth_module(model).to(torch.device(device)).eval()
    return ExportSource(module, metadata, provenance)


# -- running ------------------------------------------------------------------------------

def run_torch(module, frames: np.ndarray) -> list[np.ndarray]:
    """Torch outputs per frame: ``frames`` [N,3,H,W] -> N arrays [1,1,H,W] float32."""
    import torch

    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    outputs = []
    with torch.inference_mode():
        for i in range(frames.shape[0]):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + 1])).to(device)
            y = module(x)
            outputs.append((y[0] if isinstance(y, tuple) else y).float().cpu().numpy())
    return outputs


# -- export -------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What :func:`export_onnx` produced."""

    path: Path
    metadata: ModelMetadata
    max_rel_error: float
    parity_frames: int
    seconds: float


def _torch_export(module, dummy, path: Path, metadata: ModelMetadata, opset: int,
                  dynamic_batch: bool = False) -> None:
    """The TorchScript-based exporter (static shapes; with ``dynamic_batch`` the leading
    dimension of input and output is dynamic)."""
    import warnings

    import torch

    outputs = [metadata.output_name] + (
        [UNCERTAINTY_OUTPUT] if getattr(module, "uncertainty", False) else [])
    names = (metadata.input_name, *outputs)
    with warnings.catch_warnings():
        # shape checks in transformers code become constants: intended, the graph is static
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter is the one whose graphs TensorRT parses best here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[metadata.input_name],
                          output_names=outputs, do_constant_folding=True,
                          dynamic_axes={n: {0: "batch"} for n in names}
                          if dynamic_batch else None)


def _run_batch(path: Path, frames: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """[N,3,H,W] frames through the ONNX file in one onnxruntime call -> [N,1,H,W]."""
    from depth_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], metadata=meta) as backend:
        return backend.run({meta.input_name: frames})[meta.output_name]


def export_onnx(source: ExportSource, out_path: str | Path, height: int, width: int, *,
                opset: int = DEFAULT_OPSET, parity_frames: np.ndarray | None = None,
                parity_source: str = "synthetic", tolerance: float = DEFAULT_TOLERANCE,
                dynamic_batch: bool = False) -> ExportResult:
    """Export ``source`` at ``height x width`` to ``out_path`` and check it.

    ``dynamic_batch``: the batch dimension stays dynamic, so the depth node runs frames of
    several cameras in one onnxruntime call; the parity frames then also run as one
    batch, which must match them run one by one (TensorRT engines are built from
    batch-1 ONNX).

    ``parity_frames``: [N,3,H,W] normalised frames (default: 4 deterministic synthetic
    frames through the node's Preprocessor). On any failure (bad output shape, checker,
    parity error > ``tolerance`` or NaN) no file is left at ``out_path`` from this run
    and ValueError/RuntimeError says why.
    """
    import time

    import onnx
    import torch

    from depth_perception.runtime.calibration import synthetic_frames
    from depth_perception.runtime.onnx_metadata import write_onnx_metadata

    started = time.monotonic()
    height, width = check_export_size(height, width, source.metadata.size_multiple)
    if opset < 17:
        raise ValueError(f"opset {opset} < 17: LayerNormalization needs opset 17+")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output {out_path} should end in .onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = source.module.eval()
    # 1. the fixed-size metadata (before export: the Preprocessor needs the size)
    meta = dataclasses.replace(source.metadata, input_height=height, input_width=width,
                               package_version=__version__)
    if parity_frames is None:
        parity_frames = synthetic_frames(meta, 4)
        parity_source = "synthetic"
    parity_frames = np.asarray(parity_frames, dtype=np.float32)
    if parity_frames.ndim != 4 or parity_frames.shape[1:] != (3, height, width):
        raise ValueError(f"parity frames have shape {parity_frames.shape}; expected "
                         f"[N,3,{height},{width}]")

    # 2. torch reference, which also checks the module's output contract
    reference = run_torch(module, parity_frames)
    if reference[0].shape != (1, 1, height, width):
        raise ValueError(f"the model maps [1,3,{height},{width}] to {reference[0].shape}; "
                         f"exported models must output depth [1,1,{height},{width}]")
    if not all(np.isfinite(r).all() for r in reference):
        raise RuntimeError("the torch model itself outputs NaN/inf on the parity frames")

    partial = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    try:
        # 3. export to a temporary name
        dummy = torch.from_numpy(parity_frames[:1].copy()).to(
            next((p.device for p in module.parameters()), torch.device("cpu")))
        with torch.inference_mode():
            _torch_export(module, dummy, partial, meta, opset, dynamic_batch)
        model = onnx.load(str(partial), load_external_data=False)
        # dims the exporter could not infer are 0 here; onnxruntime's outputs are checked below
        out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        expected = [1, 1, height, width]
        if out_shape and (len(out_shape) != 4 or any(
                d and d != e for d, e in zip(out_shape, expected))):
            raise ValueError(f"exported graph output shape {out_shape} != {expected}")

        # 4. parity onnxruntime vs torch
        outputs = run_onnxruntime(partial, parity_frames, meta)
        shapes = {tuple(o.shape) for o in outputs}
        if shapes != {tuple(expected)}:
            raise ValueError(f"the exported graph maps [1,3,{height},{width}] to {sorted(shapes)}; "
                             f"expected {expected}")
        errors = [max_relative_error(r, o) for r, o in zip(reference, outputs)]
        worst = max(errors)
        if not worst <= tolerance:
            raise RuntimeError(
                f"ONNX parity check failed: onnxruntime differs from torch by max relative "
                f"error {worst:.3e} (> tolerance {tolerance:.1e}) on {len(errors)} "
                f"{parity_source} frames (per frame {[f'{e:.2e}' for e in errors]}); "
                f"{out_path} was not written")
        if dynamic_batch:       # 4b. all parity frames as one batch = one by one
            batched = _run_batch(partial, parity_frames, meta)
            batch_error = max(max_relative_error(o, batched[k:k + 1])
                              for k, o in enumerate(outputs))
            if not batch_error <= tolerance:
                raise RuntimeError(f"ONNX batch check failed: {len(outputs)} frames in one "
                                   f"call differ from one call each by max relative error "
                                   f"{batch_error:.3e} (> {tolerance:.1e}); {out_path} was "
                                   "not written")

        # 5. metadata with provenance, then the checker on the final bytes
        provenance = dict(source.metadata.provenance)
        provenance.update(source.provenance)
        provenance["export"] = {
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "opset": int(opset), "torch": torch.__version__, "onnx": onnx.__version__,
            "input_shape": ["batch" if dynamic_batch else 1, 3, height, width],
            "parity": {"frames": len(errors), "source": parity_source,
                       "max_rel_error": worst, "tolerance": tolerance}}
        meta = dataclasses.replace(meta, provenance=provenance)
        write_onnx_metadata(partial, meta)
        onnx.checker.check_model(str(partial))
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    logger.info("exported %s (%dx%d, opset %d) in %.1f s; onnxruntime vs torch max relative "
                "error %.2e on %d %s frames", out_path, height, width, opset, seconds, worst,
                len(errors), parity_source)
    return ExportResult(out_path, meta, worst, len(errors), seconds)
