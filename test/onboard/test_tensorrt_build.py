"""TensorRT build: cache key, engine cache, FP32 layer selection, trtexec, checks.

Everything but the tests marked ``tensorrt`` runs without TensorRT: the builder and the
environment are collaborators of :func:`ensure_engine`, the precision constraints are
applied to a stand-in network with TensorRT's API shape.
"""
from __future__ import annotations

import dataclasses
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from depth_perception.runtime import engine as tb
from depth_perception.runtime.engine import (EngineBuildConfig, LayerInfo,
                                                    TensorRTEnvironment, engine_cache_key,
                                                    engine_json_path, ensure_engine,
                                                    layers_from_onnx, onnx_input_shape,
                                                    read_engine_key, select_fp32_layers,
                                                    sha256_file, trtexec_command,
                                                    verify_engine, write_engine_metadata)
from depth_perception.metadata import ModelMetadata
from support.tensorrt_standin import FakeLayer, FakeNetwork

SHA = "a" * 64
H, W = 56, 84


def _tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from support.models_fixtures import tiny_depth_anything_onnx

    return tiny_depth_anything_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", H, W)


# -- cache key 

def test_cache_key_depends_on_every_field():
    base = engine_cache_key(SHA, "NVIDIA GeForce RTX 4090", "10.3.0", "fp16", (1, 3, H, W))
    assert base.digest == engine_cache_key(SHA, " NVIDIA  GeForce RTX 4090 ", "10.3.0", "fp16",
                                           [1, 3, H, W]).digest   # whitespace-normalised
    variants = [
        engine_cache_key("b" * 64, "NVIDIA GeForce RTX 4090", "10.3.0", "fp16", (1, 3, H, W)),
        engine_cache_key(SHA, "Orin (nvgpu)", "10.3.0", "fp16", (1, 3, H, W)),
        engine_cache_key(SHA, "NVIDIA GeForce RTX 4090", "10.7.0", "fp16", (1, 3, H, W)),
        engine_cache_key(SHA, "NVIDIA GeForce RTX 4090", "10.3.0", "int8", (1, 3, H, W)),
        engine_cache_key(SHA, "NVIDIA GeForce RTX 4090", "10.3.0", "fp16", (1, 3, W, H)),
    ]
    digests = {v.digest for v in variants} | {base.digest}
    assert len(digests) == 6
    assert tb.EngineCacheKey.from_dict(base.to_dict()) == base


def test_cache_key_refuses_bad_input():
    with pytest.raises(ValueError, match="precision"):
        engine_cache_key(SHA, "gpu", "10.3", "fp8", (1, 3, H, W))
    with pytest.raises(ValueError, match="static"):
        engine_cache_key(SHA, "gpu", "10.3", "fp16", (1, 3, -1, W))
    with pytest.raises(ValueError, match="hex"):
        engine_cache_key("xyz", "gpu", "10.3", "fp16", (1, 3, H, W))
    with pytest.raises(ValueError, match="GPU"):
        engine_cache_key(SHA, "  ", "10.3", "fp16", (1, 3, H, W))


def test_onnx_input_shape_and_sha(tiny_onnx, tmp_path):
    import hashlib

    assert onnx_input_shape(tiny_onnx) == (1, 3, H, W)
    assert sha256_file(tiny_onnx) == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    # a dynamic-shape ONNX is refused with the reason
    import onnx

    model = onnx.load(str(tiny_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, str(tmp_path / "dyn.onnx"))
    with pytest.raises(ValueError, match="dynamic shape"):
        onnx_input_shape(tmp_path / "dyn.onnx")


# -- ensure_engine with a stand-in builder 

class FakeBuilder:
    """Writes an 'engine' (bytes naming its key) and its metadata, like build_engine."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, engine_path, config, calibration=None, key=None):
        from depth_perception.runtime.onnx_metadata import read_onnx_metadata

        self.calls.append((Path(engine_path).name, config.precision))
        Path(engine_path).write_bytes(b"engine for " + key.digest.encode())
        write_engine_metadata(engine_path, read_onnx_metadata(onnx_path), key,
                              {"precision": config.precision})
        return Path(engine_path)


def test_ensure_engine_builds_once_and_rebuilds_on_key_change(tiny_onnx, tmp_path):
    import shutil

    onnx_path = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, onnx_path)
    cache = tmp_path / "engines"
    env = TensorRTEnvironment("NVIDIA Orin", "10.3.0")
    build = FakeBuilder()

    first = ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build,
                          return_result=True)
    assert first.built and len(build.calls) == 1
    assert first.engine_path.name.startswith(f"model.fp16.{H}x{W}.")
    # the node starting again: nothing is built
    again = ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build,
                          return_result=True)
    assert not again.built and again.engine_path == first.engine_path and len(build.calls) == 1
    assert ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build) == \
        first.engine_path

    # another precision, TensorRT version or GPU: another engine, built once
    ensure_engine(onnx_path, "fp32", cache, environment=env, builder=build)
    other = ensure_engine(onnx_path, "fp16", cache, environment=TensorRTEnvironment(
        "NVIDIA Orin", "10.7.0"), builder=build, return_result=True)
    assert other.built and other.engine_path != first.engine_path
    assert first.engine_path in other.stale
    assert len(build.calls) == 3

    # a changed model (new ONNX bytes) under the same name: rebuilt
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata, write_onnx_metadata

    meta = read_onnx_metadata(onnx_path)
    write_onnx_metadata(onnx_path, dataclasses.replace(meta, max_depth=30.0))
    changed = ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build,
                            return_result=True)
    assert changed.built and changed.engine_path != first.engine_path
    assert len(build.calls) == 4

    # an engine whose recorded key does not match its name (copied, tampered): rebuilt
    json_path = engine_json_path(changed.engine_path)
    json_path.write_text(json_path.read_text().replace("NVIDIA Orin", "Other GPU"))
    assert read_engine_key(changed.engine_path) != changed.key
    assert ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build,
                         return_result=True).built
    assert len(build.calls) == 5
    # an engine without its metadata: rebuilt
    json_path.unlink()
    ensure_engine(onnx_path, "fp16", cache, environment=env, builder=build)
    assert len(build.calls) == 6


def test_engine_metadata_is_what_the_runtime_backend_reads(tiny_onnx, tmp_path):
    from depth_perception.runtime.backends.tensorrt_backend import (EngineTensor,
                                                                     check_engine_metadata,
                                                                     load_engine_metadata)
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    env = TensorRTEnvironment("NVIDIA Orin", "10.3.0")
    result = ensure_engine(tiny_onnx, "int8", tmp_path, environment=env, builder=FakeBuilder(),
                           return_result=True)
    meta = load_engine_metadata(result.engine_path)            # the runtime's loader
    assert isinstance(meta, ModelMetadata)
    assert meta.fixed_size == (H, W)
    assert meta.provenance["precision"] == "int8"
    assert meta.provenance["tensorrt"]["cache_key"] == result.key.to_dict()
    onnx_meta = read_onnx_metadata(tiny_onnx)
    assert dataclasses.replace(meta, provenance={}) == dataclasses.replace(onnx_meta,
                                                                          provenance={})
    io = {"image": EngineTensor("image", True, (1, 3, H, W), "float32"),
          "depth": EngineTensor("depth", False, (1, 1, H, W), "float32")}
    check_engine_metadata(io, meta, str(result.engine_path))   # accepted as is


def test_ensure_engine_needs_the_builder_to_record_its_key(tiny_onnx, tmp_path):
    def careless(onnx_path, engine_path, config, calibration=None, key=None):
        Path(engine_path).write_bytes(b"x")

    with pytest.raises(RuntimeError, match="did not record its cache key"):
        ensure_engine(tiny_onnx, "fp16", tmp_path, environment=TensorRTEnvironment("g", "10"),
                      builder=careless)
    with pytest.raises(FileNotFoundError):
        ensure_engine(tmp_path / "none.onnx", "fp16", tmp_path,
                      environment=TensorRTEnvironment("g", "10"), builder=careless)


# -- FP32 islands 

def test_select_fp32_layers_by_name_and_type():
    layers = [
        LayerInfo("/backbone/encoder/layer.0/norm1/LayerNormalization", "NORMALIZATION"),
        LayerInfo("/backbone/encoder/layer.0/attention/q_proj/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/attention/attention/query/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/attention/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/attention/Mul", "ELEMENTWISE"),
        LayerInfo("/backbone/encoder/layer.0/attention/Softmax", "SOFTMAX"),
        LayerInfo("/backbone/encoder/layer.0/attention/MatMul_1", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/attention/output/dense/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/mlp/fc1/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/backbone/encoder/layer.0/mlp/activation_fn/Erf", "UNARY"),
        # a LayerNorm decomposed into primitives (older opsets)
        LayerInfo("/blocks.0/ln_1/ReduceMean", "REDUCE"),
        LayerInfo("/blocks.0/ln_1/Pow", "ELEMENTWISE"),
        LayerInfo("/blocks.0/ln_1/Sqrt", "UNARY"),
        LayerInfo("/head/conv1/Conv", "CONVOLUTION"),
        LayerInfo("/neck/normalize_input/Mul", "ELEMENTWISE"),
    ]
    assert select_fp32_layers(layers) == [
        "/backbone/encoder/layer.0/norm1/LayerNormalization",
        "/backbone/encoder/layer.0/attention/MatMul",
        "/backbone/encoder/layer.0/attention/Mul",
        "/backbone/encoder/layer.0/attention/Softmax",
        "/backbone/encoder/layer.0/attention/MatMul_1",
        "/blocks.0/ln_1/ReduceMean", "/blocks.0/ln_1/Pow", "/blocks.0/ln_1/Sqrt"]


def test_fp32_layers_of_an_exported_depth_anything(tiny_onnx):
    import onnx

    model = onnx.load(str(tiny_onnx))
    ops = {n.name: n.op_type for n in model.graph.node}
    chosen = set(select_fp32_layers(layers_from_onnx(model)))
    n_layers = 4
    norms = [n for n, op in ops.items() if op == "LayerNormalization"]
    softmax = [n for n, op in ops.items() if op == "Softmax"]
    # norm1 + norm2 per layer, and the backbone's final norm on each of the 4 outputs
    assert len(norms) == 2 * n_layers + 4 and len(softmax) == n_layers
    assert set(norms) | set(softmax) <= chosen
    attention_matmuls = [n for n in chosen if ops[n] == "MatMul"]
    assert len(attention_matmuls) == 2 * n_layers          # Q K^T and attn V per layer
    assert not any("proj" in n or "mlp" in n for n in attention_matmuls)
    assert not any(ops[n] in ("Conv", "ConvTranspose", "Resize") for n in chosen)


class _FakeTrt:
    """The bits of the TensorRT module that apply_fp32_constraints touches."""

    DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32")
    BuilderFlag = types.SimpleNamespace(OBEY_PRECISION_CONSTRAINTS="OBEY",
                                        PREFER_PRECISION_CONSTRAINTS="PREFER", FP16="FP16")


class _FakeConfig:
    def __init__(self):
        self.flags = set()

    def set_flag(self, flag):
        self.flags.add(flag)


@pytest.mark.parametrize("mode,flag", [("obey", "OBEY"), ("prefer", "PREFER")])
def test_apply_fp32_constraints_sets_precision_and_output_types(mode, flag):
    norm = FakeLayer("/enc/norm1/LayerNormalization", "NORMALIZATION")
    soft = FakeLayer("/enc/attention/Softmax", "SOFTMAX", ("HALF", "INT32"))
    conv = FakeLayer("/head/Conv", "CONVOLUTION")
    config = _FakeConfig()
    chosen = tb.apply_fp32_constraints(FakeNetwork([norm, soft, conv]), config, _FakeTrt, mode)
    assert chosen == sorted([norm.name, soft.name])
    assert norm.precision == "FLOAT" and norm.output_types == {0: "FLOAT"}
    assert soft.output_types == {0: "FLOAT"}        # the integer output is left alone
    assert conv.precision is None and conv.output_types == {}
    assert config.flags == {flag}


# -- trtexec 

def test_trtexec_command():
    fp32 = trtexec_command("m.onnx", "m.engine", "fp32", workspace_gb=4)
    assert shlex.split(fp32) == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine",
                                 "--memPoolSize=workspace:4096M"]
    fp16 = shlex.split(trtexec_command("my models/m.onnx", "m.engine", "fp16",
                                       timing_cache="t.cache", fp32_layers=["/a/Softmax",
                                                                            "/b/norm/LN"]))
    assert fp16[1] == "--onnx=my models/m.onnx"        # quoted path survives
    assert "--fp16" in fp16 and "--int8" not in fp16
    assert "--precisionConstraints=obey" in fp16
    assert "--layerPrecisions=/a/Softmax:fp32,/b/norm/LN:fp32" in fp16
    assert "--layerOutputTypes=/a/Softmax:fp32,/b/norm/LN:fp32" in fp16
    assert "--timingCacheFile=t.cache" in fp16
    int8 = shlex.split(trtexec_command("m.onnx", "m.engine", "int8", calibration_cache="c.calib",
                                       workspace_gb=0.5))
    assert {"--int8", "--fp16", "--calib=c.calib", "--memPoolSize=workspace:512M"} <= set(int8)
    with pytest.raises(ValueError):
        trtexec_command("m.onnx", "m.engine", "fp64")


# -- checking an engine against onnxruntime 

def test_verify_engine_refuses_nan_and_large_errors(tiny_onnx, tmp_path):
    from depth_perception.runtime.calibration import synthetic_frames
    from depth_perception_training.export.onnx_export import run_onnxruntime
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    meta = read_onnx_metadata(tiny_onnx)
    frames = synthetic_frames(meta, 2)
    ref = run_onnxruntime(tiny_onnx, frames)
    lookup = {frames[i].tobytes(): ref[i] for i in range(2)}
    engine = tmp_path / "e.engine"

    def exact(path, frame):
        return lookup[frame[0].tobytes()]

    assert verify_engine(engine, tiny_onnx, frames, 1e-3, run_engine=exact) == 0.0

    def off_by_2_percent(path, frame):
        return exact(path, frame) * 1.02

    err = verify_engine(engine, tiny_onnx, frames, 0.05, run_engine=off_by_2_percent)
    assert err == pytest.approx(0.02, rel=1e-3)
    with pytest.raises(RuntimeError, match="exceeds the tolerance"):
        verify_engine(engine, tiny_onnx, frames, 1e-2, run_engine=off_by_2_percent)

    def nan_sometimes(path, frame):
        out = exact(path, frame).copy()
        out[0, 0, 3, 5] = np.nan
        return out

    with pytest.raises(RuntimeError, match="NaN"):
        verify_engine(engine, tiny_onnx, frames, 1.0, run_engine=nan_sometimes)


def test_build_config_validation():
    assert EngineBuildConfig("int8").effective_tolerance == tb.DEFAULT_ENGINE_TOLERANCE["int8"]
    assert EngineBuildConfig("fp16", tolerance=0.5).effective_tolerance == 0.5
    with pytest.raises(ValueError, match="precision"):
        EngineBuildConfig("bf16")
    with pytest.raises(ValueError, match="workspace"):
        EngineBuildConfig("fp16", workspace_gb=0)
    with pytest.raises(ValueError, match="precision_constraints"):
        EngineBuildConfig("fp16", precision_constraints="maybe")


# -- without TensorRT 

def test_missing_tensorrt_message(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)        # import fails even where installed
    with pytest.raises(RuntimeError) as info:
        tb.import_tensorrt()
    text = str(info.value)
    assert "JetPack" in text and "pip install tensorrt" in text and "onnxruntime" in text
    with pytest.raises(RuntimeError, match="JetPack"):
        tb.build_engine(tiny_onnx, tmp_path / "e.engine", EngineBuildConfig("fp16"))
    with pytest.raises(RuntimeError, match="JetPack"):
        ensure_engine(tiny_onnx, "fp16", tmp_path)          # default environment needs TensorRT
    assert not list(tmp_path.iterdir())


# -- with TensorRT (GPU machines) 

@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_usable(), reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_real_engine_and_reuse(tiny_onnx, tmp_path, precision):
    from depth_perception.runtime.calibration import synthetic_frames
    from depth_perception.runtime.backends.tensorrt_backend import TensorRTBackend
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    config = EngineBuildConfig(precision, workspace_gb=1, timing_cache=tmp_path / "t.cache")
    first = ensure_engine(tiny_onnx, precision, tmp_path / "cache", config=config,
                          return_result=True)
    assert first.built and (tmp_path / "t.cache").stat().st_size > 0
    second = ensure_engine(tiny_onnx, precision, tmp_path / "cache", config=config,
                           return_result=True)
    assert not second.built
    meta = read_onnx_metadata(tiny_onnx)
    frames = synthetic_frames(meta, 2, seed=9)
    with TensorRTBackend(first.engine_path) as backend:
        out = backend.run({"image": frames[:1]})["depth"]
    assert np.isfinite(out).all() and out.shape == (1, 1, H, W)


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_usable(), reason="needs TensorRT and a CUDA GPU")
def test_build_int8_engine_writes_and_reuses_calibration_cache(tiny_onnx, tmp_path):
    from depth_perception.runtime.calibration import CalibrationSource, synthetic_frames
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    meta = read_onnx_metadata(tiny_onnx)
    cache = tmp_path / "m.calib"
    source = CalibrationSource(meta, cache, frames_loader=lambda: synthetic_frames(meta, 8))
    tb.build_engine(tiny_onnx, tmp_path / "a.engine", EngineBuildConfig("int8", tolerance=0.5),
                    calibration=source)
    assert cache.stat().st_size > 0
    reused = CalibrationSource(meta, cache)       # no frames at all: the cache must do
    tb.build_engine(tiny_onnx, tmp_path / "b.engine", EngineBuildConfig("int8", tolerance=0.5),
                    calibration=reused, verify_frames=synthetic_frames(meta, 2))
    assert (tmp_path / "b.engine").stat().st_size > 0


def test_default_engine_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPTH_PERCEPTION_ENGINE_CACHE", str(tmp_path / "mine"))
    assert tb.default_engine_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DEPTH_PERCEPTION_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tb.default_engine_cache_dir() == tmp_path / "xdg" / "depth_perception" / "engines"


def test_ensure_engine_uses_the_default_cache_dir(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTH_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    path = ensure_engine(tiny_onnx, "fp32", environment=TensorRTEnvironment("g", "10.3"),
                         builder=FakeBuilder())
    assert path.parent == tmp_path / "cache" and path.is_file()
