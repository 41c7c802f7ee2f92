"""DepthEstimator: the one path from an RGB frame to metric depth."""
import math

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.estimator import DepthEstimator
from depth_perception.runtime.scale import FixedScale, GroundPlaneScale
from support.models_fixtures import FunctionBackend, constant_backend, street_depth

CAM = Intrinsics(fx=200.0, fy=200.0, cx=167.5, cy=83.5, width=336, height=168)  # 14-multiples
RGB = np.random.default_rng(0).integers(0, 256, (168, 336, 3), dtype=np.uint8)
METRIC = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)


def test_metric_model_shapes_units_and_timings():
    backend = constant_backend(12.5, METRIC)
    est = DepthEstimator(backend, METRIC, short_side=112)
    res = est.estimate(RGB, CAM)
    assert res.depth.shape == (168, 336) and res.depth.dtype == np.float32
    assert np.all(res.depth == 12.5)
    assert res.prepared.tensor.shape == (1, 3, 112, 224)
    assert (res.scale, res.scale_source, res.scale_valid) == (1.0, "model", True)
    assert set(res.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms",
                                "rectify_ms"}
    assert all(v >= 0 for v in res.timings.values()) and res.timings["rectify_ms"] == 0
    assert (res.backend, res.precision) == ("function", "fp32")
    assert res.intrinsics == CAM and backend.calls == 1


def test_range_meanings_after_scaling():
    meta = ModelMetadata(output_kind="relative_depth", min_depth=0.5, max_depth=50.0)

    def fn(x):
        out = np.full((1, 1, *x.shape[2:]), 10.0, np.float32)
        out[..., :, :50] = 0.1        # x2 = 0.2 m: too close -> -inf
        out[..., :, -50:] = 40.0      # x2 = 80 m: beyond range -> +inf
        return out
    est = DepthEstimator(FunctionBackend(fn, meta), meta, FixedScale(2.0), short_side=168,
                         upsample="nearest")
    depth = est.estimate(RGB, CAM).depth
    assert np.all(depth[:, 100:200] == 20.0)
    assert np.isneginf(depth[:, :50]).all() and np.isposinf(depth[:, -50:]).all()


@pytest.mark.parametrize("kind,scale,low,high", [
    ("metric_depth", 1.0, 1.0, 49.0),       # within the range: nothing to mark
    ("metric_depth", 1.0, 0.5, 50.0),       # touching both bounds exactly: kept
    ("metric_depth", 1.0, 0.4, 50.5),       # beyond both
    ("relative_depth", 2.0, 1.0, 24.9),     # x2 within
    ("relative_depth", 2.0, 1.0, 26.0),     # x2 beyond max only
    ("relative_depth", 0.4, 1.0, 20.0),     # x0.4 below min only
])
def test_range_marking_skipped_only_when_the_model_range_proves_it(kind, scale, low, high):
    """The estimator marks out-of-range pixels at camera resolution unless the scaled
    range of the model output shows there are none: the same depth either way."""
    from depth_perception import units
    from depth_perception.runtime.processing import postprocess

    meta = ModelMetadata(output_kind=kind, min_depth=0.5, max_depth=50.0)

    def fn(x):                                # a bilinear-upsampled ramp, low .. high
        h, w = x.shape[2:]
        return np.tile(np.linspace(low, high, w, dtype=np.float32), (h, 1))[None, None]
    policy = FixedScale(scale) if kind == "relative_depth" else None
    est = DepthEstimator(FunctionBackend(fn, meta), meta, policy, short_side=112)
    res = est.estimate(RGB, CAM)
    full = postprocess(fn(res.prepared.tensor), res.prepared, meta) * np.float32(scale)
    np.testing.assert_array_equal(res.depth, units.mark_out_of_range(full, 0.5, 50.0))


def test_output_range_options_narrow_the_models_range():
    """min_depth / max_depth (the depth node's parameters) narrow the model's 0.5-50 m:
    a wider option keeps the model's bound, 0 or None means the model's own."""
    meta = ModelMetadata(output_kind="relative_depth", min_depth=0.5, max_depth=50.0)

    def fn(x):                                    # x2: 0.6, 4, 20, 60 m in column bands
        out = np.empty((1, 1, *x.shape[2:]), np.float32)
        for k, v in enumerate((0.3, 2.0, 10.0, 30.0)):
            out[..., :, k * 84:(k + 1) * 84] = v
        return out
    est = DepthEstimator(FunctionBackend(fn, meta), meta, FixedScale(2.0), short_side=168,
                         upsample="nearest", min_depth=1.0, max_depth=100.0)
    assert est.depth_range == (1.0, 50.0)
    bands = [est.estimate(RGB, CAM).depth[:, k * 84 + 42] for k in range(4)]
    assert np.isneginf(bands[0]).all() and np.isposinf(bands[3]).all()   # 0.6 < 1, 60 > 50
    assert np.all(bands[1] == 4.0) and np.all(bands[2] == 20.0)
    est.set_input_options(short_side=168, upsample="nearest", min_depth=0.0, max_depth=5.0)
    assert est.depth_range == (0.5, 5.0)
    depth = est.estimate(RGB, CAM).depth
    assert np.all(depth[:, 42] == 0.6) and np.isposinf(depth[:, 2 * 84 + 42]).all()
    with pytest.raises(ValueError, match="min_depth 60.0"):
        est.set_input_options(min_depth=60.0)
    assert est.depth_range == (0.5, 5.0)                   # unchanged after refusal


def test_nan_output_raises_runtime_error_and_estimator_goes_on():
    state = {"bad": True}

    def fn(x):
        out = np.full((1, 1, *x.shape[2:]), 5.0, np.float32)
        if state["bad"]:
            out[0, 0, 3, 4] = np.nan
        return out
    est = DepthEstimator(FunctionBackend(fn, METRIC), METRIC, short_side=56)
    with pytest.raises(RuntimeError, match="model output contains NaN"):
        est.estimate(RGB, CAM)
    state["bad"] = False
    assert np.all(est.estimate(RGB, CAM).depth == 5.0)


@pytest.mark.parametrize("rgb,match", [
    (RGB.astype(np.float32), "uint8"),
    (RGB[..., 0], "uint8"),
    (RGB[:100], "intrinsics"),
    (RGB.transpose(1, 0, 2), "intrinsics"),
    ([[0, 0, 0]], "numpy"),
])
def test_bad_input_is_a_value_error(rgb, match):
    est = DepthEstimator(constant_backend(3.0, METRIC), METRIC, short_side=56)
    with pytest.raises(ValueError, match=match):
        est.estimate(rgb, CAM)


def test_bad_reference_and_intrinsics():
    est = DepthEstimator(constant_backend(3.0, METRIC), METRIC, "lidar_median", short_side=56)
    with pytest.raises(ValueError, match="reference depth shape"):
        est.estimate(RGB, CAM, np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="Intrinsics"):
        est.estimate(RGB, CAM.K)


def test_relative_model_needs_a_scaling_policy():
    rel = ModelMetadata(output_kind="relative_disparity")
    backend = constant_backend(1.0, rel)
    for policy in (None, "model"):
        with pytest.raises(ValueError, match="relative_disparity"):
            DepthEstimator(backend, rel, policy)
    with pytest.raises(ValueError, match="scale_params"):
        DepthEstimator(backend, rel, FixedScale(2.0), scale_params={"factor": 3.0})
    meta_img = ModelMetadata(input_name="pixel_values")
    with pytest.raises(ValueError, match="pixel_values"):
        DepthEstimator(constant_backend(1.0, METRIC), meta_img)


def test_relative_model_made_metric_by_the_ground_plane():
    """A relative model that sees the street 3.7x too close is rescaled to metres."""
    height, factor = 1.5, 3.7
    true = street_depth(CAM, height, pitch_deg=2.0, far=45.0)
    rel_meta = ModelMetadata(output_kind="relative_depth", min_depth=0.5, max_depth=50.0)
    sky_zero = np.nan_to_num(true / factor, nan=0.0)       # networks output finite values
    backend = FunctionBackend(lambda x: sky_zero[None, None], rel_meta)
    est = DepthEstimator(backend, rel_meta, "ground_plane",
                         scale_params={"camera_height": height, "pitch_deg": 2.0},
                         short_side=168)           # camera size: no resampling
    for _ in range(3):
        res = est.estimate(RGB, CAM)
    assert res.scale_source == "ground_plane" and res.scale_valid
    assert res.scale == pytest.approx(factor, rel=0.01)
    ok = np.isfinite(true)
    np.testing.assert_allclose(res.depth[ok], true[ok], rtol=0.01)
    assert np.isnan(res.depth[~ok]).all()        # sky stays invalid


def test_no_scale_yet_gives_no_metric_depth():
    rel_meta = ModelMetadata(output_kind="relative_depth")
    blank = FunctionBackend(lambda x: np.full((1, 1, *x.shape[2:]), 1.0, np.float32), rel_meta)
    est = DepthEstimator(blank, rel_meta, GroundPlaneScale(camera_height=1.5), short_side=168)
    res = est.estimate(RGB, CAM)              # a wall facing the camera: no road
    assert not res.scale_valid and math.isnan(res.scale)
    assert np.isnan(res.depth).all()


def test_metric_model_corrected_by_lidar():
    est = DepthEstimator(constant_backend(10.0, METRIC), METRIC, "lidar_median",
                         scale_params={"min_points": 5}, short_side=56)
    lidar = np.full((168, 336), np.nan, np.float32)
    lidar[100, 10:40] = 12.0
    res = est.estimate(RGB, CAM, lidar)
    assert res.scale == pytest.approx(1.2) and np.all(res.depth == pytest.approx(12.0))


def test_fixed_size_model_with_centre_crop():
    meta = ModelMetadata(output_kind="metric_depth", input_height=56, input_width=56)
    seen = []

    def fn(x):
        seen.append(x.shape)
        return np.full((1, 1, 56, 56), 4.0, np.float32)
    est = DepthEstimator(FunctionBackend(fn, meta), meta, keep_aspect=True)
    depth = est.estimate(RGB, CAM).depth
    assert seen == [(1, 3, 56, 56)]
    assert np.isnan(depth[:, :84]).all() and np.all(depth[:, 84:252] == 4.0)


def test_raw_image_with_its_rectifier_is_resampled_straight_to_the_model_input():
    """A raw frame + rectifier: the model sees rect.resample(raw) (one remap), the depth
    comes back at the rectified camera's resolution and geometry (its K, not the lens')."""
    from depth_perception.rectify import Calibration, rectifier

    meta = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)
    seen = []

    def fn(x):
        seen.append(x.copy())
        return np.full((1, 1) + x.shape[2:], 7.0, np.float32)
    est = DepthEstimator(FunctionBackend(fn, meta), meta, short_side=112)
    lens = rectifier(Calibration.pinhole(CAM, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0)))
    res = est.estimate(RGB, lens.intrinsics, rectifier=lens)
    want = est.preprocessor.prepare(lens.resample(RGB, (0, 0, 336, 168), (224, 112)),
                                    CAM.resized(224, 112))            # no resize left
    np.testing.assert_array_equal(seen[0], want.tensor)
    assert res.intrinsics == CAM and res.depth.shape == (168, 336) and np.all(res.depth == 7)
    assert res.prepared.intrinsics_model == CAM.resized(224, 112)
    assert res.timings["rectify_ms"] > 0
    # without the rectifier the model sees the raw pixels resized: not the same input
    est.estimate(RGB, CAM)
    assert not np.array_equal(seen[1], seen[0])
    other = Intrinsics(210.0, 210.0, 167.5, 83.5, 336, 168)
    with pytest.raises(ValueError, match="rectifier's camera"):
        est.estimate(RGB, other, rectifier=lens)


def test_load_splits_estimator_and_backend_options(tmp_path):
    from support.models_fixtures import tiny_depth_anything_onnx
    path = tiny_depth_anything_onnx(tmp_path / "m.onnx", 84, 168)
    with DepthEstimator.load(path, keep_aspect=True, upsample="nearest",
                             providers=["CPUExecutionProvider"]) as est:
        res = est.estimate(RGB, CAM)
        assert res.backend == "onnxruntime" and res.depth.shape == (168, 336)
        assert np.isfinite(res.depth).all()
    with pytest.raises(ValueError, match="unknown option"):
        DepthEstimator.load(path, short_sid=100)


def test_live_changes_are_checked():
    rel = ModelMetadata(output_kind="relative_depth")
    est = DepthEstimator(constant_backend(2.0, rel), rel, FixedScale(3.0), short_side=56)
    from depth_perception.runtime.scale import ModelScale
    with pytest.raises(ValueError, match="relative_depth"):
        est.scale_policy = ModelScale()
    assert isinstance(est.scale_policy, FixedScale)          # unchanged after refusal
    est.scale_policy = FixedScale(5.0)
    assert np.all(est.estimate(RGB, CAM).depth == 10.0)
    est.set_input_options(short_side=28)
    assert est.estimate(RGB, CAM).prepared.tensor.shape == (1, 3, 28, 56)
    with pytest.raises(ValueError, match="upsample"):
        est.set_input_options(upsample="cubic")
