"""ONNX -> TensorRT engine: build, cache, check.

The TensorRT Python API (TensorRT 10) is imported only inside the functions that build
or run engines; without it they raise a :class:`RuntimeError` saying what to install.
Everything that does not need TensorRT is a plain function tested on any machine:

* :func:`engine_cache_key` / :class:`EngineCacheKey`: GPU name + TensorRT version +
  precision + input shape + ONNX sha256. :func:`ensure_engine` builds only when the
  engine for that key is missing (a changed key gives another file name, so a stale
  engine is never loaded and a valid one is never rebuilt at start-up).
* :func:`select_fp32_layers`: which layers stay FP32 in an FP16/INT8 engine
  (LayerNorm, Softmax, attention score MatMuls: ViTs overflow there in FP16 and give
  NaN), decided by layer name and type on an abstract list of :class:`LayerInfo`, built
  from a TensorRT network (:func:`layers_from_network`) or from the ONNX graph
  (:func:`layers_from_onnx`; TensorRT's ONNX parser names layers after ONNX nodes).
* :func:`trtexec_command`: the equivalent ``trtexec`` command line.

Engine metadata: ``<engine>.json`` beside the engine is a :class:`ModelMetadata` JSON
(loadable with ``ModelMetadata.load``) whose ``provenance["tensorrt"]`` holds the cache
key, its digest and the build settings.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from depth_perception.files import sha256_file
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.engine_cache import (  # noqa: F401  (re-exported)
    PRECISIONS,
    EngineCacheKey,
    TensorRTEnvironment,
    check_precision,
    default_engine_cache_dir,
    detect_environment,
    detect_gpu_name,
    engine_cache_key,
    engine_file_name,
    engine_json_path,
    read_engine_key,
    write_engine_metadata,
)
from depth_perception.runtime.backends.tensorrt_backend import import_tensorrt

logger = logging.getLogger(__name__)

PRECISION_CONSTRAINTS = ("obey", "prefer")

#: Default acceptance of an engine against onnxruntime (max |engine - ort| / max |ort|).
DEFAULT_ENGINE_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1.5e-1}

# LayerType names of TensorRT's ILayer.type (also used for layers read from ONNX).
_ALWAYS_FP32_KINDS = {"NORMALIZATION", "SOFTMAX"}
_NORM_PART_KINDS = {"REDUCE", "ELEMENTWISE", "UNARY"}
_NORM_SCOPE = re.compile(r"(^|[/._])(layer_?norm\w*|norm\d*|ln_?\d*)([/._]|$)", re.IGNORECASE)
_ATTENTION_SCOPE = re.compile(r"attention|attn", re.IGNORECASE)
_PROJECTION_SCOPE = re.compile(
    r"/(query|key|value|q|k|v|qkv|q_proj|k_proj|v_proj|in_proj|out_proj|o_proj|proj|"
    r"dense|output)(/|$)", re.IGNORECASE)

#: ONNX op type -> the TensorRT layer type its parser creates (for the layers that matter).
ONNX_TO_TRT_KIND = {
    "LayerNormalization": "NORMALIZATION", "InstanceNormalization": "NORMALIZATION",
    "GroupNormalization": "NORMALIZATION", "Softmax": "SOFTMAX",
    "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY",
    "ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "ReduceMax": "REDUCE",
    "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE",
    "Pow": "ELEMENTWISE", "Sqrt": "UNARY", "Exp": "UNARY", "Erf": "UNARY",
    "Reciprocal": "UNARY", "Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION",
    "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION",
    "Resize": "RESIZE", "Concat": "CONCATENATION", "Transpose": "SHUFFLE",
    "Reshape": "SHUFFLE", "Constant": "CONSTANT", "Gather": "GATHER", "Slice": "SLICE",
}


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except RuntimeError:
        return False
    return True


# -- precision constraints ---------------------------------------------------------------

@dataclass(frozen=True)
class LayerInfo:
    """One layer of a network: its name and TensorRT layer type name (``LayerType.name``)."""

    name: str
    kind: str


def fp32_reason(layer: LayerInfo) -> str | None:
    """Why ``layer`` must stay FP32 in a reduced-precision engine, None if it need not."""
    kind = layer.kind.upper()
    if kind in _ALWAYS_FP32_KINDS:
        return kind.lower()
    if kind in _NORM_PART_KINDS and _NORM_SCOPE.search(layer.name):
        return "layernorm part"
    if (kind in ("MATRIX_MULTIPLY", "ELEMENTWISE") and _ATTENTION_SCOPE.search(layer.name)
            and not _PROJECTION_SCOPE.search(layer.name)):
        return "attention " + ("matmul" if kind == "MATRIX_MULTIPLY" else "scaling")
    return None


def select_fp32_layers(layers: Iterable[LayerInfo]) -> list[str]:
    """Names of the layers kept in FP32: normalisation, softmax, the pieces of a
    decomposed LayerNorm, and the attention core: score MatMuls (Q K^T, attn V) and the
    scalings feeding them. The Q/K/V and output projections are plain linear layers
    and may run in FP16/INT8."""
    return [layer.name for layer in layers if fp32_reason(layer) is not None]


def layers_from_network(network) -> list[LayerInfo]:
    """:class:`LayerInfo` of every layer of a TensorRT ``INetworkDefinition``."""
    return [LayerInfo(network.get_layer(i).name, network.get_layer(i).type.name)
            for i in range(network.num_layers)]


def layers_from_onnx(model) -> list[LayerInfo]:
    """:class:`LayerInfo` per ONNX node (``model``: path or ``onnx.ModelProto``).

    TensorRT's ONNX parser names the layer of a node after the node, so the names can
    be handed to ``trtexec --layerPrecisions`` before any TensorRT is around.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return [LayerInfo(node.name or f"{node.op_type}_{i}", ONNX_TO_TRT_KIND.get(node.op_type,
                                                                             node.op_type))
            for i, node in enumerate(model.graph.node)]


def onnx_input_shape(onnx_path: str | Path) -> tuple[int, ...]:
    """Static shape of the ONNX graph's first input; ValueError if any dim is dynamic."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ValueError(f"{onnx_path}: the graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{onnx_path}: input '{inputs[0].name}' has a dynamic shape "
                         f"{[d.dim_param or d.dim_value for d in dims]}; TensorRT engines "
                         "here are built from static-shape ONNX (one file per resolution, "
                         "see `depth-perception export`)")
    return shape


# -- trtexec --------------------------------------------------------------------------

def trtexec_command(onnx_path: str | Path, engine_path: str | Path, precision: str,
                    workspace_gb: float | None = None, timing_cache: str | Path | None = None,
                    calibration_cache: str | Path | None = None,
                    fp32_layers: Sequence[str] = (),
                    precision_constraints: str = "obey") -> str:
    """The ``trtexec`` command that builds the same engine (shell-quoted, one line).

    INT8: trtexec cannot calibrate from bags; ``--calib`` reads the calibration cache
    this package writes during its own build.
    """
    check_precision(precision)
    if precision_constraints not in PRECISION_CONSTRAINTS:
        raise ValueError(f"precision_constraints must be one of {PRECISION_CONSTRAINTS}")
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if precision in ("fp16", "int8"):
        args.append("--fp16")
    if precision == "int8":
        args.append("--int8")
        if calibration_cache is not None:
            args.append(f"--calib={calibration_cache}")
    if precision != "fp32" and fp32_layers:
        spec = ",".join(f"{name}:fp32" for name in fp32_layers)
        args += [f"--precisionConstraints={precision_constraints}",
                 f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]
    if workspace_gb is not None:
        args.append(f"--memPoolSize=workspace:{int(round(workspace_gb * 1024))}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(str(a)) for a in args)


# -- building ----------------------------------------------------------------------------

@dataclass
class EngineBuildConfig:
    """Builder settings. ``tolerance=None``: :data:`DEFAULT_ENGINE_TOLERANCE` of the precision."""

    precision: str = "fp16"
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    precision_constraints: str = "obey"
    tolerance: float | None = None
    verify_frames: int = 4

    def __post_init__(self):
        check_precision(self.precision)
        if self.precision_constraints not in PRECISION_CONSTRAINTS:
            raise ValueError(f"precision_constraints must be one of {PRECISION_CONSTRAINTS}, "
                             f"got '{self.precision_constraints}'")
        if not self.workspace_gb > 0:
            raise ValueError(f"workspace_gb must be > 0, got {self.workspace_gb}")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache)

    @property
    def effective_tolerance(self) -> float:
        return self.tolerance if self.tolerance is not None else \
            DEFAULT_ENGINE_TOLERANCE[self.precision]


class _TrtLogger:
    """A TensorRT ILogger that forwards to :mod:`logging` (built lazily)."""

    @staticmethod
    def create(trt):
        levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
                  trt.ILogger.Severity.ERROR: logging.ERROR,
                  trt.ILogger.Severity.WARNING: logging.WARNING,
                  trt.ILogger.Severity.INFO: logging.DEBUG,
                  trt.ILogger.Severity.VERBOSE: logging.DEBUG}

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                logger.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

        return Logger()


def apply_fp32_constraints(network, config, trt, precision_constraints: str = "obey") -> list[str]:
    """Pin the layers chosen by :func:`select_fp32_layers` to FP32 (precision and float
    output types) and tell the builder to obey (or prefer) it. Returns their names."""
    chosen = set(select_fp32_layers(layers_from_network(network)))
    float_types = {trt.DataType.FLOAT, trt.DataType.HALF}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in chosen:
            continue
        layer.precision = trt.DataType.FLOAT
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in float_types:
                layer.set_output_type(j, trt.DataType.FLOAT)
    flag = (trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS if precision_constraints == "obey"
            else trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    config.set_flag(flag)
    logger.info("%d layers kept in FP32 (layernorm/softmax/attention)", len(chosen))
    return sorted(chosen)


def build_engine(onnx_path: str | Path, engine_path: str | Path,
                 config: EngineBuildConfig | None = None, calibration=None,
                 verify_frames: np.ndarray | None = None,
                 metadata: ModelMetadata | None = None,
                 key: EngineCacheKey | None = None,
                 run_engine: Callable[[Path, np.ndarray], np.ndarray] | None = None) -> Path:
    """Build a TensorRT engine from a static-shape ONNX, check it, save it.

    ``calibration``: a :class:`~depth_perception.runtime.calibration.CalibrationSource`
    (required for INT8). ``verify_frames``: [N,3,H,W] float32 normalised frames the
    engine is compared on against onnxruntime (default: the calibration frames when
    given, else deterministic synthetic frames). An engine giving NaN or an error above
    the tolerance is deleted and RuntimeError raised. Writes ``<engine>.json``.
    ``run_engine``: how the check runs the engine (default: the runtime's TensorRT
    backend), see :func:`verify_engine`.
    """
    trt = import_tensorrt()
    config = config or EngineBuildConfig()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} not found")
    if config.precision == "int8" and calibration is None:
        raise ValueError("INT8 engine needs calibration frames: pass bags (--calib-bag) or "
                         "an existing calibration cache")
    metadata = metadata or _read_metadata(onnx_path)
    shape = onnx_input_shape(onnx_path)
    started = time.monotonic()

    # 1. network from ONNX
    trt_logger = _TrtLogger.create(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    # 2. builder config: workspace, timing cache, precision
    bconfig = builder.create_builder_config()
    bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                  int(config.workspace_gb * (1 << 30)))
    timing_cache = _load_timing_cache(bconfig, config.timing_cache)
    fp32_layers: list[str] = []
    calibrator = None
    if config.precision in ("fp16", "int8"):
        bconfig.set_flag(trt.BuilderFlag.FP16)
        fp32_layers = apply_fp32_constraints(network, bconfig, trt, config.precision_constraints)
    if config.precision == "int8":
        from depth_perception.runtime.calibration import make_int8_calibrator

        bconfig.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_int8_calibrator(calibration)
        bconfig.int8_calibrator = calibrator

    # 3. build and save (to a temporary name until it passed the check)
    logger.info("building %s TensorRT engine from %s (input %s); this can take minutes",
                config.precision, onnx_path, shape)
    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT errors logged above)")
    if timing_cache is not None:
        _save_timing_cache(bconfig, config.timing_cache)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_name(f".{engine_path.name}.partial-{os.getpid()}")
    partial.write_bytes(bytes(serialized))
    build_seconds = time.monotonic() - started

    # 4. check against onnxruntime; refuse NaN or a large error
    try:
        if verify_frames is None:
            verify_frames = _default_verify_frames(metadata, calibration, config.verify_frames)
        error = verify_engine(partial, onnx_path, verify_frames, config.effective_tolerance,
                              metadata, run_engine=run_engine)
        os.replace(partial, engine_path)
    finally:
        partial.unlink(missing_ok=True)

    # 5. metadata beside the engine
    if key is None:
        key = engine_cache_key(sha256_file(onnx_path), detect_gpu_name(), trt.__version__,
                               config.precision, shape)
    write_engine_metadata(engine_path, metadata, key, {
        "precision": config.precision, "workspace_gb": config.workspace_gb,
        "fp32_layers": len(fp32_layers), "max_rel_error_vs_onnxruntime": error,
        "build_seconds": round(build_seconds, 1), "onnx_file": onnx_path.name})
    logger.info("engine %s built in %.0f s; max relative error vs onnxruntime %.2e",
                engine_path, build_seconds, error)
    logger.info("equivalent trtexec command: %s", trtexec_command(
        onnx_path, engine_path, config.precision, config.workspace_gb, config.timing_cache,
        getattr(calibration, "cache_path", None), fp32_layers, config.precision_constraints))
    return engine_path


def _network_flags(trt) -> int:
    # TensorRT 10: networks are always explicit-batch (the flag is deprecated/ignored).
    major = int(str(trt.__version__).split(".")[0])
    if major >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _load_timing_cache(bconfig, path: Path | None):
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = bconfig.create_timing_cache(data)
    bconfig.set_timing_cache(cache, ignore_mismatch=False)
    logger.info("timing cache %s (%s)", path, "loaded" if data else "new")
    return cache


def _save_timing_cache(bconfig, path: Path) -> None:
    data = bconfig.get_timing_cache().serialize()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    logger.info("timing cache saved to %s", path)


def _read_metadata(onnx_path: Path) -> ModelMetadata:
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    return read_onnx_metadata(onnx_path)


def _default_verify_frames(metadata: ModelMetadata, calibration, n: int) -> np.ndarray:
    if calibration is not None and getattr(calibration, "has_frames", False):
        frames = calibration.frames()
        return frames[:max(1, n)]
    from depth_perception.runtime.calibration import synthetic_frames

    return synthetic_frames(metadata, n)


def verify_engine(engine_path: str | Path, onnx_path: str | Path, frames: np.ndarray,
                  tolerance: float, metadata: ModelMetadata | None = None,
                  run_engine: Callable[[Path, np.ndarray], np.ndarray] | None = None) -> float:
    """Compare an engine with onnxruntime on ``frames`` [N,3,H,W]; return the max
    relative error, or raise RuntimeError on NaN / error > tolerance (the caller
    deletes the engine).

    ``run_engine(engine_path, frame[1,3,H,W]) -> output``: defaults to the runtime's
    TensorRT backend.
    """
    from depth_perception.runtime.parity import max_relative_error, run_onnxruntime

    metadata = metadata or _read_metadata(Path(onnx_path))
    frames = np.asarray(frames, dtype=np.float32)
    reference = run_onnxruntime(onnx_path, frames, metadata)
    backend = None
    if run_engine is None:
        from depth_perception.runtime.backends.tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(engine_path, metadata=metadata)

        def run_engine(_path, frame):
            return backend.run({metadata.input_name: frame})[metadata.output_name]
    worst = 0.0
    try:
        for i in range(frames.shape[0]):
            out = np.asarray(run_engine(Path(engine_path), frames[i:i + 1]), dtype=np.float32)
            if out.shape != reference[i].shape:
                raise RuntimeError(f"engine {engine_path}: output shape {out.shape} differs "
                                   f"from onnxruntime's {reference[i].shape}")
            if not np.isfinite(out).all():
                raise RuntimeError(
                    f"engine {engine_path} produced NaN/inf on check frame {i} (onnxruntime "
                    f"did not): refusing it. FP16 overflow in LayerNorm/attention is the "
                    f"usual cause; try --precision fp32 or precision_constraints 'obey'")
            worst = max(worst, max_relative_error(reference[i], out))
    finally:
        if backend is not None:
            backend.close()
    if worst > tolerance:
        raise RuntimeError(f"engine {engine_path}: max relative error vs onnxruntime "
                           f"{worst:.3e} exceeds the tolerance {tolerance:.1e}: refusing it "
                           "(a TensorRT version with known wrong outputs, or precision too "
                           "low for this model)")
    return worst


@dataclass
class EnsureResult:
    """What :func:`ensure_engine` did."""

    engine_path: Path
    key: EngineCacheKey
    built: bool
    stale: list = field(default_factory=list)


def ensure_engine(onnx_path: str | Path, precision: str,
                  cache_dir: str | Path | None = None, *,
                  config: EngineBuildConfig | None = None, calibration=None,
                  environment: TensorRTEnvironment | None = None,
                  builder: Callable[..., Path] | None = None,
                  return_result: bool = False):
    """Path of a TensorRT engine for ``onnx_path`` at ``precision`` in ``cache_dir``
    (default :func:`default_engine_cache_dir`), building it only when no engine with the
    same cache key is there: meant for TensorRT start-up from an .onnx model.

    The key (:func:`engine_cache_key`) covers the ONNX bytes, GPU name, TensorRT
    version, precision and input shape; it is part of the file name and recorded in
    ``<engine>.json``. An engine whose recorded key differs (or has no ``.json``) is
    rebuilt. Engines of the same model for other keys are listed as ``stale`` (not
    deleted: a cache folder may be shared by several GPUs).

    ``environment`` / ``builder``: collaborators, default :func:`detect_environment` and
    :func:`build_engine` (called as ``builder(onnx_path, engine_path, config=...,
    calibration=..., key=...)``).
    """
    onnx_path = Path(onnx_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_engine_cache_dir()
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} not found")
    check_precision(precision)
    config = dataclasses.replace(config, precision=precision) if config else \
        EngineBuildConfig(precision=precision)
    environment = environment or detect_environment()
    key = engine_cache_key(sha256_file(onnx_path), environment.gpu_name,
                           environment.tensorrt_version, precision, onnx_input_shape(onnx_path))
    engine_path = cache_dir / engine_file_name(onnx_path, key)
    stale = sorted(p for p in cache_dir.glob(f"{onnx_path.stem}.*.engine") if p != engine_path)

    if engine_path.is_file() and read_engine_key(engine_path) == key:
        logger.info("using cached TensorRT engine %s", engine_path)
        result = EnsureResult(engine_path, key, False, stale)
        return result if return_result else engine_path

    if stale:
        logger.info("other engines of %s in %s (other GPU/TensorRT/precision/model): %s",
                    onnx_path.name, cache_dir, [p.name for p in stale])
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path.unlink(missing_ok=True)
    engine_json_path(engine_path).unlink(missing_ok=True)
    builder = builder or build_engine
    builder(onnx_path, engine_path, config=config, calibration=calibration, key=key)
    if not engine_path.is_file():
        raise RuntimeError(f"engine build for {onnx_path} left no file at {engine_path}")
    if read_engine_key(engine_path) != key:
        raise RuntimeError(f"engine build for {onnx_path} did not record its cache key in "
                           f"{engine_json_path(engine_path)}")
    result = EnsureResult(engine_path, key, True, stale)
    return result if return_result else engine_path
