"""Model input/output handling: sizes, intrinsics, normalisation, depth decoding."""
import numpy as np
import pytest

from depth_perception import units

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.processing import (Preprocessor, choose_input_size, disp_to_depth,
                                                 output_to_depth, postprocess)

CAM = Intrinsics(fx=600.0, fy=610.0, cx=331.0, cy=229.0, width=640, height=480)


@pytest.mark.parametrize("w,h", [(640, 480), (1280, 720), (1920, 1080), (1000, 300),
                                 (300, 1000), (517, 519)])
@pytest.mark.parametrize("short_side", [518, 364, None])
def test_input_size_is_multiple_of_14_and_keeps_aspect(w, h, short_side):
    mw, mh = choose_input_size(w, h, 14, short_side)
    assert mw % 14 == 0 and mh % 14 == 0
    short, long_ = (mh, mw) if h <= w else (mw, mh)
    # short side at the target, rounded to the nearest multiple
    target = min(w, h) if short_side is None else short_side
    assert abs(short - target) <= 7
    # long side within half a multiple of what the aspect asks for
    assert abs(long_ - short * max(w, h) / min(w, h)) <= 7


def test_input_size_pixel_budget():
    mw, mh = choose_input_size(1920, 1080, 14, 518, max_pixels=200_000)
    assert mw * mh <= 200_000 and mw % 14 == 0 and mh % 14 == 0
    assert abs(mw / mh - 1920 / 1080) < 14 / mh
    # the budget is not wasted: one multiple more on the short side breaks it
    bigger = choose_input_size(1920, 1080, 14, mh + 14)
    assert bigger[0] * bigger[1] > 200_000


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="short_side"):
        choose_input_size(640, 480, 14, 7)
    with pytest.raises(ValueError):
        choose_input_size(0, 480, 14, 518)


def _dot_image(cam, u, v):
    rgb = np.zeros((cam.height, cam.width, 3), np.uint8)
    rgb[v - 3:v + 4, u - 3:u + 4] = 255
    return rgb


@pytest.mark.parametrize("meta,keep_aspect", [
    (ModelMetadata(), False),                                       # dynamic, 518 short side
    (ModelMetadata(input_height=224, input_width=224), False),      # fixed, stretched
    (ModelMetadata(input_height=224, input_width=224), True),       # fixed, centre crop
    (ModelMetadata(input_height=140, input_width=420), True),       # fixed, crop rows
])
def test_model_intrinsics_follow_the_image(meta, keep_aspect):
    """A 3-D point drawn into the camera image lands where K_model projects it."""
    X = np.array([[0.4, -0.3, 5.0]])
    uv, _ = CAM.project(X)
    u, v = np.rint(uv[0]).astype(int)
    pre = Preprocessor(meta, keep_aspect=keep_aspect)
    prep = pre.prepare(_dot_image(CAM, u, v), CAM)
    h, w = prep.tensor.shape[2:]
    assert prep.intrinsics_model.width == w and prep.intrinsics_model.height == h
    uv_m, _ = prep.intrinsics_model.project(np.array([[*(np.array([u, v]) - [CAM.cx, CAM.cy])
                                                        / [CAM.fx, CAM.fy] * 5.0, 5.0]]))
    # brightest pixel of the red channel in the model input
    red = prep.tensor[0, 0]
    ys, xs = np.nonzero(red > red.max() - 1e-3)
    centre = np.array([xs.mean(), ys.mean()])
    np.testing.assert_allclose(centre, uv_m[0], atol=1.0)
    # relative image position is preserved inside the crop
    x0, y0, cw, ch = prep.crop
    rel_cam = (np.array([u, v]) - [x0, y0] + 0.5) / [cw, ch]
    rel_model = (uv_m[0] + 0.5) / [w, h]
    np.testing.assert_allclose(rel_model, rel_cam, atol=1e-9)
    if keep_aspect:
        assert abs(cw / ch - w / h) < 0.01


def test_normalisation_uses_rgb_order_mean_and_std():
    meta = ModelMetadata(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    cam = Intrinsics(100.0, 100.0, 27.5, 13.5, 56, 28)
    rgb = np.zeros((28, 56, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 0, 51
    prep = Preprocessor(meta, short_side=None).prepare(rgb, cam)
    assert prep.tensor.shape == (1, 3, 28, 56) and prep.tensor.dtype == np.float32
    np.testing.assert_allclose(prep.tensor[0, :, 5, 5], [(1 - 0.5) / 0.5, (0 - 0.25) / 0.25,
                                                         0.2], rtol=1e-6)


def test_disp_to_depth_by_hand():
    d = disp_to_depth(np.array([0.0, 1.0, 0.5]), 0.1, 100.0)
    # scaled = 1/100 + (10 - 1/100) * s; depth = 1/scaled
    np.testing.assert_allclose(d, [100.0, 0.1, 1.0 / (0.01 + 9.99 * 0.5)], rtol=1e-6)


def _prepared(meta, cam, **kw):
    return Preprocessor(meta, **kw).prepare(np.zeros((cam.height, cam.width, 3), np.uint8), cam)


def test_postprocess_back_to_camera_resolution_then_range_meanings_once():
    meta = ModelMetadata(output_kind="metric_depth", input_height=28, input_width=42,
                         min_depth=0.5, max_depth=40.0)
    cam = Intrinsics(100.0, 100.0, 59.5, 39.5, 120, 80)
    prep = _prepared(meta, cam)
    out = np.full((1, 1, 28, 42), 10.0, np.float32)
    out[0, 0, :14, :21] = 100.0      # beyond max_depth -> +inf
    out[0, 0, :14, 21:] = 0.2        # closer than min_depth -> -inf
    out[0, 0, 14:, :21] = -3.0       # negative -> NaN (invalid)
    out[0, 0, 14:, 21:] = np.inf     # non-finite -> NaN
    out[0, 0, 20:, 30:] = 7.0
    depth = postprocess(out, prep, meta, upsample="nearest")
    assert depth.shape == (80, 120) and depth.dtype == np.float32
    # postprocess keeps metres; the range meanings are applied once (by the estimator)
    assert depth[10, 10] == pytest.approx(100.0) and depth[10, 100] == pytest.approx(0.2)
    depth = units.mark_out_of_range(depth, meta.min_depth, meta.max_depth)
    assert np.isposinf(depth[10, 10]) and np.isneginf(depth[10, 100])
    assert np.isnan(depth[60, 10]) and np.isnan(depth[45, 70])
    assert depth[75, 115] == pytest.approx(7.0)
    # the 7 m block covers model rows 20..27, cols 30..41 -> camera rows >= 20*80/28
    assert np.isnan(depth[56, 115]) and depth[58, 115] == 7.0


def test_bilinear_upsampling_interpolates_and_keeps_values():
    meta = ModelMetadata(input_height=14, input_width=14)
    cam = Intrinsics(50.0, 50.0, 27.5, 27.5, 56, 56)
    prep = _prepared(meta, cam)
    ramp = np.tile(np.linspace(2.0, 28.0, 14, dtype=np.float32), (14, 1))[None, None]
    depth = postprocess(ramp, prep, meta)                    # bilinear
    assert depth.shape == (56, 56)
    assert np.all(np.diff(depth[20]) >= -1e-5)               # monotonic ramp kept
    assert depth[20].min() >= 2.0 - 1e-5 and depth[20].max() <= 28.0 + 1e-5
    # pixel centre of camera column 30 sits at model column (30 + 0.5) / 4 - 0.5 = 7.125
    assert depth[20, 30] == pytest.approx(2.0 + 2.0 * 7.125, rel=1e-5)


@pytest.mark.parametrize("cam", [Intrinsics(50.0, 50.0, 27.5, 27.5, 56, 56),
                                 Intrinsics(10.0, 10.0, 6.5, 6.5, 14, 14)])
def test_valid_outputs_take_the_short_path_with_the_same_depth(cam):
    """An output that is positive and finite everywhere is resized as it is: the same
    depth as decoding it first, in an array of its own (the estimator scales in place)."""
    import cv2

    meta = ModelMetadata(input_height=14, input_width=14)
    out = np.random.default_rng(0).uniform(0.5, 90.0, (1, 1, 14, 14)).astype(np.float32)
    depth = postprocess(out, _prepared(meta, cam), meta)
    expected = output_to_depth(out, meta)
    if cam.width != 14:
        expected = cv2.resize(expected, (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(depth, expected)
    assert not np.shares_memory(depth, out)
    out[0, 0, 3, 4] = 0.0                                   # one invalid value: long path
    assert np.isnan(postprocess(out, _prepared(meta, cam), meta)).any()


def test_output_kinds():
    out = np.array([[[[0.0, 0.5, 1.0, 2.0]]]], np.float32)
    np.testing.assert_allclose(
        output_to_depth(out, ModelMetadata(output_kind="disparity", min_depth=0.1,
                                           max_depth=100.0)),
        [[100.0, 1 / (0.01 + 9.99 * 0.5), 0.1, np.nan]], rtol=1e-6)
    np.testing.assert_allclose(output_to_depth(out, ModelMetadata(
        output_kind="relative_disparity")), [[np.nan, 2.0, 1.0, 0.5]])
    np.testing.assert_allclose(output_to_depth(out, ModelMetadata(
        output_kind="relative_depth")), [[np.nan, 0.5, 1.0, 2.0]])
    with pytest.raises(ValueError, match="model output"):
        output_to_depth(np.zeros((2, 3, 4, 4)), ModelMetadata())


def test_relative_output_is_not_range_marked():
    meta = ModelMetadata(output_kind="relative_depth", input_height=14, input_width=14,
                         max_depth=10.0)
    cam = Intrinsics(50.0, 50.0, 6.5, 6.5, 14, 14)
    depth = postprocess(np.full((1, 14, 14), 500.0, np.float32), _prepared(meta, cam), meta)
    assert np.all(depth == 500.0)


def test_centre_crop_leaves_the_rest_invalid():
    meta = ModelMetadata(input_height=28, input_width=28)
    cam = Intrinsics(100.0, 100.0, 59.5, 29.5, 120, 60)
    prep = _prepared(meta, cam, keep_aspect=True)
    assert prep.crop == (30, 0, 60, 60)
    depth = postprocess(np.full((1, 1, 28, 28), 3.0, np.float32), prep, meta)
    assert np.isnan(depth[:, :30]).all() and np.isnan(depth[:, 90:]).all()
    assert np.all(depth[:, 30:90] == pytest.approx(3.0))


@pytest.mark.parametrize("rgb,match", [
    (np.zeros((480, 640, 3), np.float32), "uint8"),
    (np.zeros((480, 640), np.uint8), "uint8"),
    (np.zeros((480, 640, 4), np.uint8), "uint8"),
    (np.zeros((640, 480, 3), np.uint8), "intrinsics"),
])
def test_bad_frames_are_refused(rgb, match):
    with pytest.raises(ValueError, match=match):
        Preprocessor(ModelMetadata()).prepare(rgb, CAM)
