"""CPU INT8: static QDQ quantisation of an FP32 ONNX model with onnxruntime.

For robots without a GPU. The FP32 ONNX written by ``depth-perception export`` is
quantised with ``onnxruntime.quantization.quantize_static`` (QDQ format, int8 weights
per output channel, int8 activations), calibrated on frames from the user's bags taken
through the node's own preprocessing (:mod:`depth_perception.runtime.calibration`,
the same frames TensorRT INT8 calibrates on). Then the INT8 model is run against the
FP32 one on those frames; the depth error is reported, stored in the metadata with
what was done (precision, calibration frames, which ops were quantised), and a model
whose error exceeds the tolerance is not written. The node runs the result like any
ONNX model. Only onnx and onnxruntime are needed (no torch).

Which op types are quantised matters for speed: on an x86 CPU, int8 convolutions are
about twice as fast as fp32 ones, while a ViT's MatMuls gain little and every
Quantize/DequantizeLinear pair around cheap element-wise ops costs time.
:data:`DEFAULT_OP_TYPES` is the set measured fastest by ``bench/bench_quantize.py``
on a U-Net and on a ViT-S Depth Anything at equal accuracy.
"""
from __future__ import annotations

import collections
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from depth_perception.metadata import ModelMetadata

logger = logging.getLogger(__name__)

#: Op types quantised by default (chosen by measurement, see the module docstring).
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def import_quantization():
    """``onnxruntime.quantization`` or a RuntimeError saying what to install."""
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise RuntimeError("INT8 quantisation needs onnxruntime and onnx: pip install "
                           "onnxruntime onnx") from exc
    return quantization


@dataclass
class QuantizeConfig:
    """How to quantise.

    ``op_types``: op types to quantise (None: :data:`DEFAULT_OP_TYPES`; ``("all",)``:
    every type onnxruntime can quantise, the naive setting). ``exclude_op_types``:
    removed from that set. ``per_channel``: per-output-channel weight scales.
    ``calibrate_method``: activation ranges from min/max, entropy or percentile.
    ``tolerance``: largest accepted mean relative depth error of INT8 against FP32
    on the check frames (``abs_rel`` with FP32 as the reference).
    ``keep_output_layer``: leave the layer that produces the output in FP32 (see
    :func:`output_layers`): int8 steps in the last logits are directly depth errors.
    """

    op_types: tuple[str, ...] | None = None
    exclude_op_types: tuple[str, ...] = ()
    per_channel: bool = True
    calibrate_method: str = "minmax"
    tolerance: float = 0.05
    keep_output_layer: bool = True

    def __post_init__(self):
        if self.calibrate_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibrate_method must be one of {CALIBRATION_METHODS}, got "
                             f"'{self.calibrate_method}'")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")

    def resolved_op_types(self) -> list[str]:
        """The op types handed to onnxruntime, checked against what it can quantise."""
        quantization = import_quantization()
        from onnxruntime.quantization.registry import QDQRegistry

        known = sorted(QDQRegistry)
        wanted = list(DEFAULT_OP_TYPES if self.op_types is None else self.op_types)
        if wanted == ["all"]:
            wanted = known
        unknown = [op for op in list(wanted) + list(self.exclude_op_types) if op not in known]
        if unknown:
            raise ValueError(f"onnxruntime {quantization.__name__} cannot quantise op types "
                             f"{unknown}; it can quantise {known} (or 'all')")
        return [op for op in wanted if op not in set(self.exclude_op_types)]


def calibration_reader(frames: np.ndarray, input_name: str):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over [N,3,H,W] float32
    frames: one ``{input_name: [1,3,H,W]}`` feed per frame, in order."""
    quantization = import_quantization()
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"calibration frames must be [N,3,H,W] with N >= 1, got "
                         f"{frames.shape}")

    class FrameReader(quantization.CalibrationDataReader):
        def __init__(self):
            self.frames = frames
            self._next = 0

        def get_next(self):
            if self._next >= len(self.frames):
                return None
            feed = {input_name: self.frames[self._next:self._next + 1]}
            self._next += 1
            return feed

        def __len__(self):
            return len(self.frames)

        def rewind(self):
            self._next = 0

    return FrameReader()


@dataclass
class QuantizeResult:
    """What :func:`quantize_onnx` wrote and measured."""

    path: Path
    metadata: ModelMetadata
    quantized_ops: dict = field(default_factory=dict)
    abs_rel: float = float("nan")
    max_rel_error: float = float("nan")
    check_frames: int = 0
    seconds: float = 0.0


def quantized_op_counts(model, op_types: Iterable[str],
                        exclude: Iterable[str] = ()) -> dict[str, int]:
    """{op type: number of nodes} of ``op_types`` that run on int8 data in a QDQ model,
    i.e. that take an input from a DequantizeLinear node (nodes named in ``exclude``
    were left in FP32 and are not counted)."""
    op_types, exclude = set(op_types), set(exclude)
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear"
                   for out in node.output}
    counts = collections.Counter(
        node.op_type for node in model.graph.node
        if node.op_type in op_types and node.name not in exclude
        and any(name in dequantized for name in node.input))
    return dict(sorted(counts.items()))


#: Ops that pass a value on to the output without mixing pixels or channels.
_PASS_THROUGH = {"Relu", "Sigmoid", "Clip", "Mul", "Add", "Sub", "Div", "Squeeze",
                 "Unsqueeze", "Reshape", "Identity", "Cast", "Softplus", "Exp", "Resize"}


def output_layers(model, op_types: Iterable[str]) -> list[str]:
    """Names of the ``op_types`` nodes that produce the graph outputs, walking back from
    each output through element-wise ops, reshapes and resizes (e.g. a depth head's
    last Conv before ReLU/Sigmoid and the upsampling to full resolution)."""
    op_types = set(op_types)
    producer = {out: node for node in model.graph.node for out in node.output}
    initializers = {init.name for init in model.graph.initializer}
    found, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in op_types:
            found.append(node.name)
        elif node.op_type in _PASS_THROUGH:
            stack += [name for name in node.input if name and name not in initializers]
    return sorted(found)


def depth_agreement(reference: Iterable[np.ndarray], candidate: Iterable[np.ndarray],
                    metadata: ModelMetadata) -> tuple[float, float]:
    """(abs_rel, max relative error) of candidate against reference model outputs.

    Both are decoded to depth as the runtime does (:func:`output_to_depth`);
    ``abs_rel`` = mean |d_c - d_r| / d_r over pixels valid in both, the max relative
    error is on the raw outputs (:func:`max_relative_error`).
    """
    from depth_perception.runtime.parity import max_relative_error
    from depth_perception.runtime.processing import output_to_depth

    errors, worst = [], 0.0
    for ref, cand in zip(reference, candidate):
        worst = max(worst, max_relative_error(ref, cand))
        d_ref, d_cand = output_to_depth(ref, metadata), output_to_depth(cand, metadata)
        ok = np.isfinite(d_ref) & np.isfinite(d_cand)
        if ok.any():
            errors.append(np.abs(d_cand[ok] - d_ref[ok]) / d_ref[ok])
    if not errors:
        return float("nan"), worst
    return float(np.concatenate(errors).mean()), worst


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray,
                  config: QuantizeConfig | None = None, check: np.ndarray | None = None,
                  calibration_source: dict | None = None) -> QuantizeResult:
    """Quantise ``fp32_path`` to ``int8_path`` (QDQ) and check it against FP32.

    ``calibration``: [N,3,H,W] float32 frames through the node's preprocessing (see
    :func:`depth_perception.runtime.calibration.frames_from_bags`). ``check``: frames
    for the parity check (default: the calibration frames). ``calibration_source``:
    recorded in the metadata (e.g. ``{"bags": [...], "frames": N}``). Raises
    ValueError (and writes nothing) when the INT8 depth deviates from FP32 by more
    than ``config.tolerance`` (abs_rel).
    """
    import onnx

    from depth_perception.files import sha256_file
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata, write_onnx_metadata
    from depth_perception.runtime.parity import run_onnxruntime

    quantization = import_quantization()
    config = config or QuantizeConfig()
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if fp32_path.resolve() == int8_path.resolve():
        raise ValueError(f"the INT8 model must not overwrite its FP32 source {fp32_path}")
    t0 = time.perf_counter()
    # 1. what the FP32 model is, and frames that fit it
    metadata = read_onnx_metadata(fp32_path)
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    check = calibration if check is None else np.ascontiguousarray(check, dtype=np.float32)
    fixed = metadata.fixed_size
    for what, frames in (("calibration", calibration), ("check", check)):
        if frames.ndim != 4 or frames.shape[1] != 3 or (fixed and frames.shape[2:] != fixed):
            raise ValueError(f"{what} frames are {frames.shape}, the model {fp32_path.name} "
                             f"takes [N,3,{fixed[0] if fixed else 'H'},"
                             f"{fixed[1] if fixed else 'W'}]")
    op_types = config.resolved_op_types()
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=int8_path.parent) as tmp:
        # 2. graph optimisation and shape inference, as onnxruntime recommends before
        #    quantising; then QDQ quantisation calibrated on the frames
        prepared = Path(tmp) / "prepared.onnx"
        quantization.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        kept = (output_layers(onnx.load(str(prepared)), op_types)
                if config.keep_output_layer else [])
        method = {"minmax": quantization.CalibrationMethod.MinMax,
                  "entropy": quantization.CalibrationMethod.Entropy,
                  "percentile": quantization.CalibrationMethod.Percentile}
        quantization.quantize_static(
            str(prepared), str(staged), calibration_reader(calibration, metadata.input_name),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=op_types,
            nodes_to_exclude=kept,
            per_channel=config.per_channel, activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=method[config.calibrate_method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        counts = quantized_op_counts(onnx.load(str(staged)), op_types, kept)
        if not counts:
            raise ValueError(f"nothing in {fp32_path.name} was quantised: it has no "
                             f"{op_types} nodes onnxruntime could quantise")
        # 3. parity: INT8 against FP32 on the check frames, as depth
        reference = run_onnxruntime(fp32_path, check, metadata)
        candidate = run_onnxruntime(staged, check, metadata)
        abs_rel, max_rel = depth_agreement(reference, candidate, metadata)
        if not abs_rel <= config.tolerance:
            raise ValueError(f"INT8 model deviates from FP32 by abs_rel {abs_rel:.4f} on "
                             f"{len(check)} frames (tolerance {config.tolerance}); nothing "
                             f"written. Calibrate on more or more representative frames, or "
                             f"quantise fewer op types (now {op_types})")
        # 4. metadata: what was done, then the file
        provenance = dict(metadata.provenance)
        provenance["quantization"] = {
            "precision": "int8", "format": "QDQ", "tool": "onnxruntime.quantization "
            + _ort_version(), "activations": "int8 asymmetric, per tensor",
            "weights": "int8 symmetric, " + ("per channel" if config.per_channel
                                               else "per tensor"),
            "calibration": {"method": config.calibrate_method, "frames": int(len(calibration)),
                            **(calibration_source or {})},
            "op_types": op_types, "quantized_ops": counts, "kept_fp32": kept,
            "parity": {"reference": f"fp32 {fp32_path.name}", "frames": int(len(check)),
                       "abs_rel": abs_rel, "max_rel_error": max_rel},
            "fp32_onnx_sha256": sha256_file(fp32_path),
        }
        meta = ModelMetadata.from_dict({**metadata.to_dict(), "provenance": provenance})
        write_onnx_metadata(staged, meta)
        os.replace(staged, int8_path)
    logger.info("INT8 model %s: %s quantised, abs_rel vs FP32 %.4f on %d frames",
                int8_path, counts, abs_rel, len(check))
    return QuantizeResult(int8_path, meta, counts, abs_rel, max_rel, int(len(check)),
                          time.perf_counter() - t0)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
