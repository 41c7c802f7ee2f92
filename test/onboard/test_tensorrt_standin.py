"""TensorRT's build wiring without TensorRT: :func:`build_engine` against a stand-in
``tensorrt`` module (:mod:`support.tensorrt_standin`) with onnxruntime running the
"engine": FP16 flags, workspace and timing cache, FP32 layers, refusal of a bad engine,
INT8 calibration and its cache, and :func:`ensure_engine` with the real builder.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime import engine as tb
from depth_perception.runtime.engine import (EngineBuildConfig, TensorRTEnvironment,
                                             engine_cache_key, engine_json_path,
                                             ensure_engine, layers_from_onnx,
                                             read_engine_key, select_fp32_layers,
                                             sha256_file)
from support.tensorrt_standin import HostMemory, StandInTrt

H, W = 56, 84


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from support.models_fixtures import tiny_depth_anything_onnx

    return tiny_depth_anything_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", H, W)


@pytest.fixture
def stand_in_trt(monkeypatch):
    from depth_perception.runtime.backends import tensorrt_backend

    trt = StandInTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_backend, "_cuda_memory", HostMemory)
    return trt


def _onnxruntime_as_engine(onnx_path, scale=1.0, nan=False):
    from depth_perception_training.export.onnx_export import run_onnxruntime

    def run(_engine, frame):
        out = run_onnxruntime(onnx_path, frame)[0] * scale
        if nan:
            out[0, 0, 0, 0] = np.nan
        return out

    return run


def test_build_engine_fp16_wiring(stand_in_trt, tiny_onnx, tmp_path):
    key = engine_cache_key(sha256_file(tiny_onnx), "g", "10.3.0", "fp16", (1, 3, H, W))
    config = EngineBuildConfig("fp16", workspace_gb=2, timing_cache=tmp_path / "t.cache")
    engine = tb.build_engine(tiny_onnx, tmp_path / "m.engine", config, key=key,
                             run_engine=_onnxruntime_as_engine(tiny_onnx))
    flags, pools, precisions = stand_in_trt.built[-1]
    assert flags == {"FP16", "OBEY"}
    assert pools == {"WORKSPACE": 2 << 30}
    assert set(precisions) == set(select_fp32_layers(layers_from_onnx(tiny_onnx)))
    assert set(precisions.values()) == {"FLOAT"}
    assert engine.read_bytes() == b"serialized engine"
    assert read_engine_key(engine) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json",
                                                         "t.cache"]
    # the timing cache is loaded by the next build
    assert (tmp_path / "t.cache").read_bytes() == b"+timings"
    tb.build_engine(tiny_onnx, tmp_path / "m2.engine", config, key=key,
                    run_engine=_onnxruntime_as_engine(tiny_onnx))
    assert stand_in_trt.timing_cache_inputs == [b"", b"+timings"]
    fp32 = tb.build_engine(tiny_onnx, tmp_path / "m3.engine", EngineBuildConfig("fp32"),
                           key=key, run_engine=_onnxruntime_as_engine(tiny_onnx))
    assert stand_in_trt.built[-1][0] == set() and stand_in_trt.built[-1][2] == {}
    assert fp32.is_file()


@pytest.mark.parametrize("kwargs,match", [({"nan": True}, "NaN"),
                                          ({"scale": 1.1}, "exceeds the tolerance")])
def test_build_engine_refuses_a_bad_engine(stand_in_trt, tiny_onnx, tmp_path, kwargs, match):
    key = engine_cache_key(sha256_file(tiny_onnx), "g", "10.3.0", "fp16", (1, 3, H, W))
    with pytest.raises(RuntimeError, match=match):
        tb.build_engine(tiny_onnx, tmp_path / "m.engine", EngineBuildConfig("fp16"), key=key,
                        run_engine=_onnxruntime_as_engine(tiny_onnx, **kwargs))
    assert list(tmp_path.iterdir()) == []          # no engine, no partial file, no json


def test_build_engine_int8_calibrates_once_then_reuses_the_cache(stand_in_trt, tiny_onnx,
                                                                 tmp_path):
    from depth_perception.runtime.calibration import (CalibrationConfig, CalibrationSource,
                                                     synthetic_frames)
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata

    meta = read_onnx_metadata(tiny_onnx)
    frames = synthetic_frames(meta, 6, seed=4)
    cache = tmp_path / "m.calib"
    key = engine_cache_key(sha256_file(tiny_onnx), "g", "10.3.0", "int8", (1, 3, H, W))
    source = CalibrationSource(meta, cache, config=CalibrationConfig(6, batch_size=1),
                               frames_loader=lambda: frames)
    tb.build_engine(tiny_onnx, tmp_path / "a.engine", EngineBuildConfig("int8"),
                    calibration=source, key=key, run_engine=_onnxruntime_as_engine(tiny_onnx))
    assert stand_in_trt.built[-1][0] >= {"INT8", "FP16", "OBEY"}
    # TensorRT saw exactly the calibration frames, one batch at a time
    np.testing.assert_array_equal(np.concatenate(stand_in_trt.calibration_batches), frames)
    assert cache.read_bytes() == b"TRT-fake-EntropyCalibration2\n"

    stand_in_trt.calibration_batches.clear()
    reused = CalibrationSource(meta, cache)          # no frames: the cache has to do
    tb.build_engine(tiny_onnx, tmp_path / "b.engine", EngineBuildConfig("int8"),
                    calibration=reused, key=key, run_engine=_onnxruntime_as_engine(tiny_onnx))
    assert stand_in_trt.calibration_batches == []
    assert (tmp_path / "b.engine").is_file()


def test_ensure_engine_with_the_real_builder_function(stand_in_trt, tiny_onnx, tmp_path):
    import functools

    env = TensorRTEnvironment("NVIDIA Orin", "10.3.0")
    build = functools.partial(tb.build_engine, run_engine=_onnxruntime_as_engine(tiny_onnx))
    first = ensure_engine(tiny_onnx, "fp16", tmp_path, environment=env, builder=build,
                          return_result=True)
    again = ensure_engine(tiny_onnx, "fp16", tmp_path, environment=env, builder=build,
                          return_result=True)
    assert first.built and not again.built and len(stand_in_trt.built) == 1
    meta = ModelMetadata.load(engine_json_path(first.engine_path))
    assert meta.provenance["tensorrt"]["cache_key"]["gpu_name"] == "NVIDIA Orin"
