"""TensorRT backend (TensorRT 10 Python API) and torch2trt modules.

The engine is deserialised once; the execution context, device buffers and a CUDA
stream are created once; tensors are bound by name (``set_tensor_address``) and each
frame runs ``execute_async_v3`` on the backend's own stream. CUDA memory comes from
``cuda-python`` (``cuda.bindings.runtime``) or, without it, from ``torch.cuda``.

Metadata lives beside the engine: ``model.engine.json`` (or ``model.json``) holding a
:class:`ModelMetadata`, checked against the engine's tensor names and shapes.

The metadata checks and the binding plan (which name gets which shape, dtype and
buffer size) are plain functions over any object with the TensorRT 10 engine methods
(``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_shape``,
``get_tensor_dtype``), so they are tested without TensorRT.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec, check_metadata_against_io
from depth_perception.runtime.model_source import ENGINE_SUFFIXES  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT is not installed: it needs an NVIDIA GPU. On a Jetson install JetPack (it "
    "ships TensorRT and its Python bindings: apt install nvidia-tensorrt / "
    "python3-libnvinfer); on an x86 CUDA machine `pip install tensorrt` (NVIDIA's wheel "
    "matching your CUDA version) plus `pip install cuda-python`. Meanwhile the .onnx model "
    "runs as it is with onnxruntime (backend:=onnxruntime) or the checkpoint with "
    "backend='torch'; `depth-perception export` writes the ONNX alone without --engine")

#: TensorRT DataType names -> numpy dtype names.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
              "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


def import_tensorrt():
    """The ``tensorrt`` module, or RuntimeError saying how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} ({exc})") from exc
    return tensorrt


@dataclass(frozen=True)
class EngineTensor:
    """One I/O tensor of an engine as TensorRT reports it (-1 = dynamic dimension)."""

    name: str
    is_input: bool
    shape: tuple
    dtype: str


@dataclass(frozen=True)
class Binding:
    """A tensor with its resolved shape and the bytes its device buffer needs."""

    name: str
    is_input: bool
    shape: tuple
    dtype: str
    nbytes: int


def _enum_name(value) -> str:
    return getattr(value, "name", str(value).rsplit(".", 1)[-1])


def engine_io(engine) -> dict[str, EngineTensor]:
    """Name -> :class:`EngineTensor` for every I/O tensor of a TensorRT 10 engine."""
    io = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = _enum_name(engine.get_tensor_mode(name))
        dtype_name = _enum_name(engine.get_tensor_dtype(name))
        if dtype_name not in TRT_DTYPES:
            raise ValueError(f"engine tensor '{name}' has TensorRT type {dtype_name}, which "
                             f"this runtime cannot feed (supported: {sorted(TRT_DTYPES)})")
        io[name] = EngineTensor(name, mode == "INPUT", tuple(int(d) for d in
                                engine.get_tensor_shape(name)), TRT_DTYPES[dtype_name])
    return io


def _specs(io: dict[str, EngineTensor], inputs: bool) -> dict[str, TensorSpec]:
    return {t.name: TensorSpec(tuple(None if d < 0 else d for d in t.shape), t.dtype)
            for t in io.values() if t.is_input == inputs}


def check_engine_metadata(io: dict[str, EngineTensor], metadata: ModelMetadata,
                          source: str) -> None:
    """Refuse an engine whose metadata does not describe its tensors (ValueError)."""
    inputs, outputs = _specs(io, True), _specs(io, False)
    if len(inputs) != 1:
        raise ValueError(f"{source}: the runtime feeds one image tensor, the engine has "
                         f"inputs {sorted(inputs)}")
    check_metadata_against_io(metadata, inputs, outputs, source)
    if metadata.fixed_size is None:
        raise ValueError(f"{source}: TensorRT engines run at one input size; set "
                         "input_height/input_width in the engine metadata")


def resolve_input_shapes(io: dict[str, EngineTensor], metadata: ModelMetadata
                         ) -> dict[str, tuple]:
    """Input shapes to set on the context: [1,3,H,W] from the metadata."""
    h, w = metadata.fixed_size
    want = (1, 3, h, w)
    shapes = {}
    for t in io.values():
        if t.is_input:
            shapes[t.name] = tuple(want[i] if d < 0 else d for i, d in enumerate(t.shape))
    return shapes


def plan_bindings(io: dict[str, EngineTensor], shapes: dict[str, tuple]) -> list[Binding]:
    """One :class:`Binding` per engine tensor, from fully resolved shapes.

    ``shapes``: name -> shape for every tensor (inputs as set, outputs as the context
    reports them after the input shapes were set).
    """
    plan = []
    for t in io.values():
        if t.name not in shapes:
            raise ValueError(f"no resolved shape for engine tensor '{t.name}'")
        shape = tuple(int(d) for d in shapes[t.name])
        if len(shape) != len(t.shape) or any(d < 0 for d in shape) or any(
                e >= 0 and e != d for e, d in zip(t.shape, shape)):
            raise ValueError(f"engine tensor '{t.name}': resolved shape {shape} does not fit "
                             f"the engine shape {t.shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
        plan.append(Binding(t.name, t.is_input, shape, t.dtype, nbytes))
    return plan


def engine_metadata_path(engine_path) -> Path:
    """``model.engine.json`` if present, else ``model.json`` (FileNotFoundError naming both)."""
    engine_path = Path(engine_path)
    candidates = [engine_path.with_name(engine_path.name + ".json"), engine_path.with_suffix(".json")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no metadata beside {engine_path}: expected {candidates[0]} (or "
                            f"{candidates[1]}) holding the model metadata JSON that export "
                            "writes; copy it from the export folder or write one with "
                            "ModelMetadata(...).save(path)")


def load_engine_metadata(engine_path) -> ModelMetadata:
    return ModelMetadata.load(engine_metadata_path(engine_path))


# -- CUDA memory and streams ---------------------------------------------------------
class _CudaPythonMemory:
    """Device buffers and a stream through cuda-python's runtime API."""

    def __init__(self, device: int):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self.cudart = cudart
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.ptrs: dict[str, int] = {}

    def _check(self, result, what):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA {what} failed: {err}")
        return rest[0] if rest else None

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def alloc(self, b: Binding) -> int:
        self.ptrs[b.name] = int(self._check(self.cudart.cudaMalloc(b.nbytes), "cudaMalloc"))
        return self.ptrs[b.name]

    def upload(self, name: str, host: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(self.ptrs[name], host.ctypes.data, host.nbytes,
                                                kind, self.stream), "cudaMemcpyAsync")

    def download(self, name: str, host: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, self.ptrs[name], host.nbytes,
                                                kind, self.stream), "cudaMemcpyAsync")

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self.ptrs.values():
            self.cudart.cudaFree(ptr)
        self.ptrs.clear()
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class _TorchCudaMemory:
    """Device buffers and a stream through torch.cuda (when cuda-python is absent)."""

    def __init__(self, device: int):
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT needs a CUDA device; torch sees none")
        self.torch = torch
        self.device = torch.device(f"cuda:{device}")
        self.stream = torch.cuda.Stream(device=self.device)
        self.tensors: dict = {}

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def alloc(self, b: Binding) -> int:
        dtype = getattr(self.torch, b.dtype)
        self.tensors[b.name] = self.torch.empty(b.shape, dtype=dtype, device=self.device)
        return int(self.tensors[b.name].data_ptr())

    def upload(self, name: str, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            self.tensors[name].copy_(self.torch.from_numpy(host), non_blocking=True)

    def download(self, name: str, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            self.stream.synchronize()
            host[...] = self.tensors[name].cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.tensors.clear()
        self.torch.cuda.empty_cache()


def _cuda_memory(device: int):
    try:
        return _CudaPythonMemory(device)
    except ImportError:
        pass
    try:
        return _TorchCudaMemory(device)
    except ImportError as exc:
        raise RuntimeError("TensorRT needs CUDA memory management: pip install cuda-python "
                           "(or a CUDA build of torch)") from exc


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (``.engine``/``.plan``) with metadata beside it."""

    name = "tensorrt"

    def __init__(self, engine_path, metadata: ModelMetadata | None = None, device: int = 0):
        trt = import_tensorrt()
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {engine_path} not found")
        self.metadata = metadata if metadata is not None else load_engine_metadata(engine_path)
        self._memory = None
        # 1. engine, deserialised once
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not deserialize {engine_path}: "
                               "engines are tied to the TensorRT version and GPU they were "
                               "built on; rebuild it from the .onnx on this machine")
        io = engine_io(self._engine)
        check_engine_metadata(io, self.metadata, str(engine_path))
        # 2. context with the input shape set, then the binding plan
        self._context = self._engine.create_execution_context()
        for name, shape in resolve_input_shapes(io, self.metadata).items():
            self._context.set_input_shape(name, shape)
        shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in io}
        self.bindings = plan_bindings(io, shapes)
        # 3. device buffers, host buffers and the stream, once
        self._memory = _cuda_memory(int(device))
        self._host = {}
        for b in self.bindings:
            self._context.set_tensor_address(b.name, self._memory.alloc(b))
            self._host[b.name] = np.empty(b.shape, dtype=b.dtype)
        self.inputs = {b.name: TensorSpec(b.shape, b.dtype) for b in self.bindings if b.is_input}
        self.outputs = {b.name: TensorSpec(b.shape, b.dtype) for b in self.bindings
                        if not b.is_input}
        self.device = f"cuda:{int(device)}"
        self.precision = str(self.metadata.provenance.get("precision", "fp32"))
        logger.info("tensorrt: %s (%s, TensorRT %s) bindings %s", engine_path.name,
                    self.precision, trt.__version__,
                    [(b.name, b.shape, b.dtype) for b in self.bindings])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._memory is None:
            raise RuntimeError("tensorrt backend is closed")
        self.check_feeds(feeds)
        for name, array in feeds.items():
            self._host[name][...] = array
            self._memory.upload(name, self._host[name])
        if not self._context.execute_async_v3(self._memory.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name in self.outputs:
            self._memory.download(name, self._host[name])
        self._memory.synchronize()
        return {name: self._host[name].copy() for name in self.outputs}

    def close(self) -> None:
        if getattr(self, "_memory", None) is not None:
            self._memory.close()
            self._memory = None
        self._context = self._engine = self._runtime = None


class Torch2TRTBackend(Backend):
    """A torch2trt ``TRTModule`` saved as a state dict (``.pth``), metadata beside it."""

    name = "tensorrt"

    def __init__(self, path, metadata: ModelMetadata | None = None, device: int = 0):
        import_tensorrt()
        try:
            import torch
            from torch2trt import TRTModule
        except ImportError as exc:
            raise RuntimeError("loading a torch2trt module needs torch2trt (build it from "
                               "source on the CUDA machine) and a CUDA build of torch; or "
                               "export the model to ONNX and build a TensorRT engine") from exc
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"torch2trt module {path} not found")
        self.metadata = metadata if metadata is not None else load_engine_metadata(path)
        self._torch = torch
        self._module = TRTModule()
        self._module.load_state_dict(torch.load(str(path), weights_only=True))
        io = engine_io(self._module.engine)
        check_engine_metadata(io, self.metadata, str(path))
        shapes = {**resolve_input_shapes(io, self.metadata),
                  **{n: t.shape for n, t in io.items() if not t.is_input}}
        self.bindings = plan_bindings(io, shapes)
        self.inputs = {b.name: TensorSpec(b.shape, b.dtype) for b in self.bindings if b.is_input}
        self.outputs = {b.name: TensorSpec(b.shape, b.dtype) for b in self.bindings
                        if not b.is_input}
        self.device = f"cuda:{int(device)}"
        self.precision = str(self.metadata.provenance.get("precision", "fp32"))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        self.check_feeds(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
                for n in self.inputs]
        with torch.inference_mode():
            out = self._module(*args)
        out = out if isinstance(out, (tuple, list)) else [out]
        return {n: o.float().cpu().numpy() for n, o in zip(self.outputs, out)}

    def close(self) -> None:
        self._module = None
