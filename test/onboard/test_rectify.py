"""Lens rectification (depth_perception.rectify): numbers worked by hand on a 320x96
camera, fx = fy = 200, cx = 159.5, cy = 47.5, so that a wrong sign, a transposed axis or
K/P mixed up shows."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.rectify import (Calibration, distortion_maps, parse_distortion,
                                      rectifier)

PIN = Intrinsics(200.0, 200.0, 159.5, 47.5, 320, 96)


def ramps(w=320, h=96):
    """[H,W,2] float32: channel 0 = u (column), channel 1 = v (row) of each pixel."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([u, v, np.zeros_like(u)])


def test_plumb_bob_corner_samples_where_the_lens_put_it():
    # rectified corner (0, 0): x = -159.5/200 = -0.7975, y = -47.5/200 = -0.2375,
    # r^2 = 0.69243; 1 + k1 r^2 = 1 - 0.3 * 0.69243 = 0.79227;
    # u_d = 159.5 + 200 * -0.7975 * 0.79227 = 33.13, v_d = 47.5 + 200 * -0.2375 * 0.79227 = 9.87
    rect = rectifier(Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0, 0, 0, 0)))
    assert not rect.identity
    out = rect.apply(ramps())
    assert out[0, 0, 0] == pytest.approx(33.13, abs=0.05)     # u, not v: no transpose
    assert out[0, 0, 1] == pytest.approx(9.87, abs=0.05)
    # the far corner is the mirror image; the centre does not move
    assert out[95, 319, 0] == pytest.approx(319 - 33.13, abs=0.05)
    assert out[47, 159, 0] == pytest.approx(159.0, abs=0.05)
    # the published camera is P's (= K here), at the same size
    assert rect.intrinsics == PIN
    # the "corner about 30 px from where K puts it"
    assert math.hypot(33.13 - 0, 9.87 - 0) > 30


def test_equidistant_uses_the_fisheye_model():
    # r = 0.83211, theta = atan(r) = 0.69417, scale theta / r = 0.83423 (k1..k4 = 0):
    # u_d = 159.5 - 200 * 0.7975 * 0.83423 = 26.44; plumb_bob with D = 0 would be 0
    rect = rectifier(Calibration.pinhole(PIN, "equidistant", (0.0, 0.0, 0.0, 0.0)))
    out = rect.apply(ramps())
    assert out[0, 0, 0] == pytest.approx(26.44, abs=0.05)
    assert rectifier(Calibration.pinhole(PIN, "plumb_bob", (0.0,) * 5)).identity


def test_rectified_image_uses_p_and_raw_uses_the_maps():
    K = PIN.K.reshape(-1)
    P = (150.0, 0.0, 100.0, 0.0, 0.0, 150.0, 40.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    cal = Calibration(320, 96, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0), tuple(K), P=P)
    rect_in = rectifier(cal, "rectified")
    assert rect_in.identity
    assert (rect_in.intrinsics.fx, rect_in.intrinsics.cx, rect_in.intrinsics.cy) == (150, 100, 40)
    raw_in = rectifier(cal, "raw")
    assert not raw_in.identity and raw_in.intrinsics == rect_in.intrinsics
    legacy = rectifier(cal, "ignore_distortion")
    assert legacy.identity and legacy.intrinsics == PIN
    assert rectifier(cal, "raw") is raw_in                   # cached per calibration


def test_binning_and_roi_follow_the_full_resolution_maps():
    D = (-0.3, 0.0, 0.0, 0.0, 0.0)
    full = rectifier(Calibration.pinhole(PIN, "plumb_bob", D)).apply(ramps())
    binned_cal = Calibration(**{**Calibration.pinhole(PIN, "plumb_bob", D).__dict__,
                                "binning_x": 2, "binning_y": 2})
    binned = rectifier(binned_cal)
    assert binned.intrinsics == Intrinsics(100.0, 100.0, 79.75, 23.75, 160, 48)
    out = binned.apply(ramps(160, 48))
    # binned pixel (u, v) is full pixel (2u, 2v) in image_geometry's K/2 convention
    np.testing.assert_allclose(out[::7, ::9, :2], full[::14, ::18, :2] / 2, atol=0.06)
    roi_cal = Calibration(**{**Calibration.pinhole(PIN, "plumb_bob", D).__dict__,
                             "roi": (40, 10, 200, 60)})
    roi = rectifier(roi_cal)
    assert roi.intrinsics == Intrinsics(200.0, 200.0, 119.5, 37.5, 200, 60)
    out = roi.apply(ramps(200, 60))
    # ROI pixel (u, v) is full pixel (u + 40, v + 10); values are ROI coordinates
    np.testing.assert_allclose(out[5:55, 5:195, 0], full[15:65, 45:235, 0] - 40, atol=0.06)
    np.testing.assert_allclose(out[5:55, 5:195, 1], full[15:65, 45:235, 1] - 10, atol=0.06)


@pytest.mark.parametrize("model,D", [("plumb_bob", (-0.3, 0.08, 0.001, -0.002, 0.0)),
                                     ("equidistant", (0.1, -0.02, 0.0, 0.0)),
                                     ("rational_polynomial", (-0.3, 0.05, 0, 0, 0, 0.01, 0, 0))])
def test_distortion_maps_invert_the_rectification(model, D):
    cal = Calibration.pinhole(PIN, model, D)
    mx, my = distortion_maps(cal)                  # raw pixel -> rectified coordinates
    raw = cv2.remap(ramps(), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    back = rectifier(cal).apply(raw)                 # should give each pixel its own (u, v)
    inner = (slice(20, 76), slice(60, 260))
    np.testing.assert_allclose(back[inner][..., :2], ramps()[inner][..., :2], atol=0.1)


@pytest.mark.parametrize("change,words", [
    ({"distortion_model": "kannala"}, "distortion_model 'kannala' is not one of"),
    ({"D": (-0.3, 0.1)}, "D has 2 coefficients, distortion_model 'plumb_bob' takes 5"),
    ({"distortion_model": "equidistant", "D": (0.1,) * 5}, "takes 4"),
    ({"P": (0.0,) * 12}, "P is all zero while D distorts"),
    ({"K": (0.0,) * 9}, "not calibrated"),
])
def test_bad_calibrations_say_why(change, words):
    good = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))
    bad = Calibration(**{**good.__dict__, **change})
    assert words in bad.problem()
    with pytest.raises(ValueError, match="|".join([words.split("'")[0]])):
        rectifier(bad)


def test_undistorted_camera_without_p_is_fine():
    cal = Calibration(320, 96, "", (), tuple(PIN.K.reshape(-1)))       # D empty, P unset
    assert cal.problem() == "" and rectifier(cal).identity and rectifier(cal).intrinsics == PIN


def test_parse_distortion():
    assert parse_distortion("plumb_bob:-0.3") == ("plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))
    assert parse_distortion("equidistant:0.1,0.01") == ("equidistant", (0.1, 0.01, 0.0, 0.0))
    with pytest.raises(ValueError, match="model must be one of"):
        parse_distortion("fisheye:0.1")
    with pytest.raises(ValueError, match="at most 4"):
        parse_distortion("equidistant:1,2,3,4,5")


def test_camera_info_round_trip_keeps_the_calibration():
    from rosbags.typesys import Stores, get_typestore

    from depth_perception import conversions
    from depth_perception.data.bag import BagTopics  # noqa: F401  (typestore users)

    T = get_typestore(Stores.ROS2_HUMBLE).types
    cal = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.08, 0.0, 0.0, 0.0))
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam")
    msg = conversions.calibration_to_camera_info(cal, header, T["sensor_msgs/msg/CameraInfo"])
    assert conversions.camera_info_to_calibration(msg) == cal
    # the depth CameraInfo: the rectified camera, D = 0, R = I, P = [K | 0]
    out = conversions.intrinsics_to_camera_info(PIN, header, T["sensor_msgs/msg/CameraInfo"])
    back = conversions.camera_info_to_calibration(out)
    assert not back.distorts and back.is_pinhole() and back.intrinsics("P") == PIN


def test_synthetic_lens_bag_rectifies_back_to_the_pinhole_drive(tmp_path):
    """synth --distortion: the CameraInfo carries the lens, the image is what it records,
    the ground truth (+inf sky, REP 117) stays in the rectified camera; the samples of the
    bag (evaluate's input) rectify it back to the undistorted drive's pixels."""
    from depth_perception.data.bag import BagReader
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.synth import make_synthetic_bags

    kw = dict(frames=2, size=(160, 48), conditions=("day-clear",), seed=3)
    plain, = make_synthetic_bags(tmp_path / "plain", **kw)
    lens, = make_synthetic_bags(tmp_path / "lens", **kw,
                                distortion=parse_distortion("plumb_bob:-0.3"))
    with BagReader(lens) as reader:
        cal = reader.calibration(0)
        assert (cal.distortion_model, cal.D) == ("plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))
        gt = reader.gt_depth(0)
        assert np.isposinf(gt).any() and not np.isnan(gt).any()     # sky = +inf
    cfg = dict(offsets=(), skip_static=False, with_lidar=False)
    ref = BagSequence(plain, SampleConfig(**cfg))[0]
    rect = BagSequence(lens, SampleConfig(**cfg))[0]
    raw = BagSequence(lens, SampleConfig(**cfg, input_image="ignore_distortion"))[0]
    assert rect.intrinsics == ref.intrinsics
    inner = (slice(6, 42), slice(20, 140))
    diff = lambda a: np.abs(a.image[inner].astype(float) - ref.image[inner]).mean()  # noqa: E731
    assert diff(rect) < 6 and 2 * diff(rect) < diff(raw)     # grey levels, inner region
    np.testing.assert_array_equal(np.isnan(rect.gt_depth), np.isnan(ref.gt_depth))
    assert np.isnan(ref.gt_depth).any()                            # +inf -> NaN in a Sample


# -- the raw image straight to a model input (one remap: rectify, crop, resize) ---------
LENS = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))


def smooth(w=320, h=96):
    """[H,W,3] uint8 of slow waves (no detail finer than ~10 px: interpolation is exact
    enough that one remap and remap-then-resize must agree)."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    planes = [128 + 100 * np.sin(u / 13.0) * np.cos(v / 9.0),
              128 + 90 * np.cos((u + 2 * v) / 17.0), 60 + 0.5 * u + v]
    return np.clip(np.dstack(planes), 0, 255).round().astype(np.uint8)


def test_resample_puts_a_known_point_on_the_right_pixel():
    rect = rectifier(LENS)
    # 320x96 -> 224x70 (bilinear, as the preprocessor's resize). Output pixel (0, 0) is
    # the rectified pixel u = 0.5 * 320/224 - 0.5 = 0.21429, v = 0.5 * 96/70 - 0.5 =
    # 0.18571: x = (0.21429 - 159.5)/200 = -0.79643, y = -0.23657, r^2 = 0.69026,
    # 1 + k1 r^2 = 0.79292: raw u_d = 159.5 - 200 * 0.79643 * 0.79292 = 33.20,
    # v_d = 47.5 - 200 * 0.23657 * 0.79292 = 9.98
    out = rect.resample(ramps(), (0, 0, 320, 96), (224, 70))
    assert out.shape == (70, 224, 3)
    assert out[0, 0, 0] == pytest.approx(33.20, abs=0.05)
    assert out[0, 0, 1] == pytest.approx(9.98, abs=0.05)
    # a crop: (40, 10, 200x60) -> 100x30; output (10, 2) is rectified
    # (10.5 * 2 - 0.5 + 40, 2.5 * 2 - 0.5 + 10) = (60.5, 14.5): x = -0.495, y = -0.165,
    # r^2 = 0.27225, 1 + k1 r^2 = 0.918325: raw (159.5 - 99 * 0.918325,
    # 47.5 - 33 * 0.918325) = (68.59, 17.20)
    out = rect.resample(ramps(), (40, 10, 200, 60), (100, 30))
    assert (out[2, 10, 0], out[2, 10, 1]) == (pytest.approx(68.59, abs=0.05),
                                              pytest.approx(17.20, abs=0.05))
    # the model input is described by the rectified camera cropped and resized:
    # cx' = 0.5 * (119.5 + 0.5) - 0.5 = 59.5, and its ray of pixel 10 is the rectified 60.5
    k = rect.intrinsics.cropped(40, 10, 200, 60).resized(100, 30)
    assert (k.fx, k.cx, k.cy) == (100.0, 59.5, 18.5)
    assert (10 - k.cx) / k.fx == pytest.approx((60.5 - PIN.cx) / PIN.fx)


def test_resample_matches_rectify_then_resize():
    rect, image = rectifier(LENS), smooth()
    for crop, size in [((0, 0, 320, 96), (224, 70)), ((40, 10, 200, 60), (150, 44)),
                       ((0, 0, 320, 96), (320, 96))]:
        x0, y0, w, h = crop
        twice = cv2.resize(rect.apply(image)[y0:y0 + h, x0:x0 + w], size,
                           interpolation=cv2.INTER_LINEAR)
        once = rect.resample(image, crop, size)
        # rectified corners see black beyond the raw image: compare the inside
        sl = (slice(size[1] // 8, -size[1] // 8), slice(size[0] // 8, -size[0] // 8))
        diff = np.abs(once[sl].astype(int) - twice[sl])
        assert diff.mean() < 0.5 and diff.max() <= 2, (crop, size, diff.mean(), diff.max())
    # a strong shrink (> 2x, where the resize averages areas) averages s x s samples
    twice = cv2.resize(rect.apply(image), (64, 19), interpolation=cv2.INTER_AREA)
    once = rect.resample(image, (0, 0, 320, 96), (64, 19))
    diff = np.abs(once[3:-3, 8:-8].astype(int) - twice[3:-3, 8:-8])
    assert diff.mean() < 0.5 and diff.max() <= 2
    # s = ceil(96/19) = 6: output (32, 9) is the mean of a 6 x 6 block centred on the
    # rectified (32.5 * 5 - 0.5, 9.5 * 96/19 - 0.5) = (162.0, 47.5), where x = 0.0125,
    # y = 0: raw u = 159.5 + 2.5 * (1 - 0.3 * 0.00015625) = 162.0 (ramps: linear there)
    out = rect.resample(ramps(), (0, 0, 320, 96), (64, 19))
    assert out[9, 32, 0] == pytest.approx(162.0, abs=0.1)
    assert out[9, 32, 1] == pytest.approx(47.5, abs=0.1)


def test_resample_without_distortion_is_the_plain_resize():
    rect, image = rectifier(Calibration.pinhole(PIN)), smooth()
    assert rect.identity
    np.testing.assert_array_equal(rect.resample(image, (40, 10, 200, 60), (150, 44)),
                                  cv2.resize(np.ascontiguousarray(image[10:70, 40:240]),
                                             (150, 44), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="calibration says 320x96"):
        rect.resample(image[:, :300], (0, 0, 300, 96), (150, 48))


def test_stereo_tx_is_carried_not_used_for_rectification():
    """The right camera of a stereo pair, baseline 0.12 m: Tx = -fx B = -200 * 0.12 = -24.
    image_proc hands OpenCV the 3x4 P; OpenCV takes its 3x3 part, so Tx moves no pixel.
    Binning 2 halves Tx (image_geometry: P(0,3) *= 1/binning_x); an ROI leaves it."""
    D = (-0.3, 0.0, 0.0, 0.0, 0.0)
    right = Calibration.pinhole(PIN, "plumb_bob", D, tx_ty=(-24.0, 0.0))
    assert right.P[3] == -24.0 and right.tx_ty() == (-24.0, 0.0)
    assert rectifier(right).tx_ty == (-24.0, 0.0) and rectifier(right).intrinsics == PIN
    np.testing.assert_array_equal(rectifier(right).apply(ramps()),
                                  rectifier(Calibration.pinhole(PIN, "plumb_bob", D))
                                  .apply(ramps()))
    K, P = PIN.K, np.reshape(right.P, (3, 4))
    with_tx = cv2.initUndistortRectifyMap(K, np.array(D), np.eye(3), P, (320, 96),
                                          cv2.CV_32FC1)
    without = cv2.initUndistortRectifyMap(K, np.array(D), np.eye(3), P[:, :3], (320, 96),
                                          cv2.CV_32FC1)
    np.testing.assert_array_equal(with_tx[0], without[0])
    binned = Calibration(**{**right.__dict__, "binning_x": 2, "binning_y": 2})
    assert rectifier(binned).tx_ty == (-12.0, 0.0)
    roi = Calibration(**{**right.__dict__, "roi": (40, 10, 200, 60)})
    assert rectifier(roi).tx_ty == (-24.0, 0.0)
    assert rectifier(right, "rectified").tx_ty == (-24.0, 0.0)
    assert rectifier(right, "ignore_distortion").tx_ty == (0.0, 0.0)     # K: no stereo P
    # no distortion, R = I, P[:3,:3] = K: nothing to rectify, Tx still carried
    assert rectifier(Calibration.pinhole(PIN, tx_ty=(-24.0, 0.0))).tx_ty == (-24.0, 0.0)
