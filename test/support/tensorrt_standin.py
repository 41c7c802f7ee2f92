"""A stand-in for the ``tensorrt`` module: the TensorRT 10 Python API surface that
:func:`depth_perception.runtime.engine.build_engine` uses, following TensorRT's
calibrator protocol, so the build wiring (flags, workspace, timing cache, FP32 layers,
calibration and its cache, checks, files) runs where TensorRT cannot. The real builds
are the ``tensorrt``-marked tests.
"""
from __future__ import annotations

import types

from depth_perception.runtime.engine import layers_from_onnx


class FakeLayer:
    """A network layer: name, type, precision and output dtypes as TensorRT has them."""

    def __init__(self, name, kind, out_dtypes=("HALF",)):
        self.name, self.type = name, types.SimpleNamespace(name=kind)
        self.precision = None
        self._outs = [types.SimpleNamespace(dtype=d) for d in out_dtypes]
        self.output_types = {}

    @property
    def num_outputs(self):
        return len(self._outs)

    def get_output(self, j):
        return self._outs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


class FakeNetwork:
    """A network definition: its layers by index."""

    def __init__(self, layers):
        self.layers = layers

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class StandInTrt(types.ModuleType):
    """``sys.modules["tensorrt"]`` for a test; records what was built and calibrated."""

    def __init__(self):
        super().__init__("tensorrt")
        self.__version__ = "10.3.0"
        self.built = []                      # (flags, workspace, layer precisions) per build
        self.calibration_batches = []
        self.timing_cache_inputs = []
        Enum = types.SimpleNamespace
        self.DataType = Enum(FLOAT="FLOAT", HALF="HALF")
        self.BuilderFlag = Enum(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY",
                                PREFER_PRECISION_CONSTRAINTS="PREFER")
        self.MemoryPoolType = Enum(WORKSPACE="WORKSPACE")
        trt = self

        class ILogger:
            Severity = Enum(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

            def __init__(self):
                pass

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.num_errors = network, 0

            def parse_from_file(self, path):
                self.network.layers = [FakeLayer(layer.name, layer.kind, ("FLOAT",))
                                       for layer in layers_from_onnx(path)]
                return True

        class TimingCache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"+timings"

        class Config:
            def __init__(self):
                self.flags, self.pools, self.int8_calibrator, self.cache = set(), {}, None, None

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def set_flag(self, flag):
                self.flags.add(flag)

            def create_timing_cache(self, data):
                trt.timing_cache_inputs.append(bytes(data))
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                assert flags == 0, "TensorRT 10 networks take no creation flags"
                return FakeNetwork([])

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                if "INT8" in config.flags:      # TensorRT's calibrator protocol
                    cal = config.int8_calibrator
                    if not cal.read_calibration_cache():
                        while (ptrs := cal.get_batch(["image"])) is not None:
                            trt.calibration_batches.append(HostMemory.read(ptrs[0]))
                        cal.write_calibration_cache(b"TRT-fake-EntropyCalibration2\n")
                precisions = {layer.name: layer.precision for layer in network.layers
                              if layer.precision is not None}
                trt.built.append((set(config.flags), config.pools, precisions))
                return bytearray(b"serialized engine")

        self.ILogger, self.IInt8EntropyCalibrator2 = ILogger, IInt8EntropyCalibrator2
        self.Builder, self.OnnxParser = Builder, OnnxParser


class HostMemory:
    """Stands in for the runtime's CUDA memory: 'device pointers' index host copies."""

    store: dict = {}

    def __init__(self, device):
        self.ptrs = {}

    def alloc(self, binding):
        self.ptrs[binding.name] = 1000 + len(HostMemory.store)
        return self.ptrs[binding.name]

    def upload(self, name, host):
        HostMemory.store[self.ptrs[name]] = host.copy()

    def synchronize(self):
        pass

    @classmethod
    def read(cls, ptr):
        return cls.store[ptr]
