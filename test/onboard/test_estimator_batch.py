"""DepthEstimator.estimate_batch: frames of several cameras through one model call."""
import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.estimator import DepthEstimator, FrameInput
from depth_perception.runtime.scale import FixedScale
from support.models_fixtures import FunctionBackend

#: identity normalisation: the model sees pixel values in [0, 1]
META = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                     min_depth=0.5, max_depth=50.0)


def red_depth(x: np.ndarray) -> np.ndarray:
    """[B,3,h,w] -> [B,1,h,w]: 1 + 30 * red, NaN where green is full (a 'bad' frame)."""
    depth = 1.0 + 30.0 * x[:, :1]
    return np.where(x[:, 1:2] > 0.99, np.nan, depth).astype(np.float32)


def camera(width: int, height: int, red: int, green: int = 40):
    """A camera of that size and a frame whose red ramps left to right from ``red``."""
    K = Intrinsics(fx=0.8 * width, fy=0.8 * width, cx=(width - 1) / 2, cy=(height - 1) / 2,
                   width=width, height=height)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = np.linspace(red, min(255, red + 60), width)[None, :].astype(np.uint8)
    rgb[..., 1] = green
    return rgb, K


def estimator(batch, **kwargs):
    backend = FunctionBackend(red_depth, META, batch=batch)
    return DepthEstimator(backend, META, short_side=28, **kwargs), backend


def test_same_model_input_shape_runs_as_one_batch_and_matches_single_frames():
    # 64x48 and 128x96 (4:3) both become a 42x28 model input; 112x56 (2:1) a 56x28 one
    frames = [FrameInput(*camera(64, 48, 20)), FrameInput(*camera(128, 96, 120)),
              FrameInput(*camera(112, 56, 60))]
    est, backend = estimator(batch=None)
    results = est.estimate_batch(frames)
    assert sorted(backend.batches) == [1, 2] and backend.calls == 2
    assert [r.batch for r in results] == [2, 2, 1]
    assert [r.prepared.model_size for r in results] == [(42, 28), (42, 28), (56, 28)]
    single, single_backend = estimator(batch=1)
    for frame, result in zip(frames, results):
        want = single.estimate(frame.rgb, frame.intrinsics)
        assert result.depth.shape == (frame.intrinsics.height, frame.intrinsics.width)
        assert result.intrinsics == frame.intrinsics
        np.testing.assert_array_equal(result.depth, want.depth)
    assert single_backend.batches == [1, 1, 1]
    # each frame kept its own content: the 120-red camera is deeper than the 20-red one
    assert np.nanmedian(results[1].depth) > np.nanmedian(results[0].depth) + 10


def test_batch_limit_one_runs_frames_one_after_another():
    frames = [FrameInput(*camera(64, 48, 20 + 40 * i)) for i in range(3)]
    est, backend = estimator(batch=1)
    assert backend.max_batch(META.input_name) == 1
    results = est.estimate_batch(frames)
    assert backend.batches == [1, 1, 1] and [r.batch for r in results] == [1, 1, 1]
    batched, batched_backend = estimator(batch=None)
    want = batched.estimate_batch(frames)
    assert batched_backend.batches == [3]
    for got, ref in zip(results, want):
        np.testing.assert_array_equal(got.depth, ref.depth)


def test_each_frame_keeps_its_own_scale_policy_and_its_own_failure():
    good_a, good_b = camera(64, 48, 20), camera(64, 48, 20)
    bad = camera(64, 48, 20, green=255)                  # the model outputs NaN for it
    frames = [FrameInput(*good_a, scale_policy=FixedScale(2.0)), FrameInput(*bad),
              FrameInput(*good_b, scale_policy=FixedScale(3.0)),
              FrameInput(good_a[0][:10], good_a[1])]    # wrong size for its intrinsics
    est, backend = estimator(batch=None)
    results = est.estimate_batch(frames)
    assert backend.batches == [3]                        # the wrong-size frame never ran
    assert isinstance(results[1], RuntimeError) and "NaN" in str(results[1])
    assert isinstance(results[3], ValueError) and "intrinsics" in str(results[3])
    base = est.estimate(*good_a).depth                   # the estimator's own policy: 1
    finite = np.isfinite(base)
    np.testing.assert_allclose(results[0].depth[finite], 2.0 * base[finite], rtol=1e-6)
    np.testing.assert_allclose(results[2].depth[finite], 3.0 * base[finite], rtol=1e-6)
    assert (results[0].scale, results[2].scale) == (2.0, 3.0)
    with pytest.raises(RuntimeError, match="NaN"):
        est.estimate(*bad)


def test_backend_returning_the_wrong_batch_fails_every_frame_of_the_call():
    est, _ = estimator(batch=None)
    est.backend.fn = lambda x: red_depth(x)[:1]          # drops all but the first frame
    results = est.estimate_batch([FrameInput(*camera(64, 48, 20)),
                                  FrameInput(*camera(64, 48, 90))])
    assert all(isinstance(r, RuntimeError) and "batch of 2" in str(r) for r in results)


def test_onnx_fixed_batch_falls_back_to_sequential_calls_with_identical_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from support.models_fixtures import tiny_depth_anything_onnx

    from depth_perception.runtime.backends.onnxruntime_backend import (OnnxRuntimeBackend,
                                                                       dynamic_batch)

    fixed = tiny_depth_anything_onnx(tmp_path / "b1.onnx", 56, 56)
    dynamic = tiny_depth_anything_onnx(tmp_path / "bn.onnx", 56, 56, dynamic_batch=True)
    frames = [FrameInput(*camera(64, 48, 20 + 50 * i)) for i in range(3)]
    runs = {}
    outputs = {}
    for label, path in (("fixed", fixed), ("dynamic", dynamic)):
        backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
        assert backend.max_batch("image") == (1 if label == "fixed" else None)
        assert dynamic_batch(path, "image") == (label == "dynamic")
        shapes = runs.setdefault(label, [])
        run = backend.run
        backend.run = lambda feeds, run=run, shapes=shapes: (
            shapes.append(next(iter(feeds.values())).shape[0]) or run(feeds))
        est = DepthEstimator(backend, backend.metadata)
        outputs[label] = est.estimate_batch(frames)
        singles = [est.estimate(f.rgb, f.intrinsics).depth for f in frames]
        for got, want in zip(outputs[label], singles):
            np.testing.assert_allclose(got.depth, want, rtol=1e-5, atol=1e-5)
    assert runs["fixed"][:3] == [1, 1, 1]                # batch fixed at 1: one call each
    assert runs["dynamic"][0] == 3                       # dynamic: one call for all three
    for got, want in zip(outputs["dynamic"], outputs["fixed"]):
        finite = np.isfinite(want.depth)
        assert finite.mean() > 0.5
        np.testing.assert_array_equal(np.isfinite(got.depth), finite)
        np.testing.assert_allclose(got.depth[finite], want.depth[finite], rtol=1e-4)
