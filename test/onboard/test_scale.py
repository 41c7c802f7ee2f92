"""Scale policies: known factors recovered from synthetic street frames and sparse LiDAR."""
import math

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.runtime.scale import (FixedScale, GroundPlaneScale, LidarMedianScale,
                                            ModelScale, Smoother, expected_up,
                                            make_scale_policy)
from support.models_fixtures import street_depth

CAM = Intrinsics(fx=200.0, fy=200.0, cx=159.5, cy=79.5, width=320, height=160)
HEIGHT = 1.6       # camera above the road, metres
FACTOR = 3.7       # the unknown scale the policies must recover


def noisy(depth, rng, rel_noise=0.02, outliers=0.05):
    """Multiplicative noise plus a fraction of wild values."""
    out = depth * (1 + rel_noise * rng.standard_normal(depth.shape)).astype(np.float32)
    wild = rng.random(depth.shape) < outliers
    out[wild] = rng.uniform(0.5, 40.0, int(wild.sum()))
    return out.astype(np.float32)


def street_frames(n, pitch=3.0, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        jitter = rng.uniform(-0.5, 0.5)          # vehicle pitching on its suspension
        true = street_depth(CAM, HEIGHT, pitch + jitter)
        yield true, noisy(true, rng) / FACTOR


def test_expected_up_direction():
    np.testing.assert_allclose(expected_up(0.0), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(expected_up(90.0), [0, 0, -1], atol=1e-12)   # looking down
    assert expected_up(10.0)[2] < 0   # looking down: up leans towards -z


def test_street_scene_geometry_is_right():
    """The synthetic road really is HEIGHT below the camera (guards the test scene)."""
    depth = street_depth(CAM, HEIGHT, 0.0)
    pts = CAM.backproject(depth)
    assert pts[150, 160, 1] == pytest.approx(HEIGHT, rel=1e-5)     # y down = road height
    assert pts[100, 2, 0] == pytest.approx(-4.0, rel=1e-5)           # left wall
    assert np.isnan(depth[0, 160])                                   # sky


def test_ground_plane_recovers_known_scale():
    policy = GroundPlaneScale(camera_height=HEIGHT, pitch_deg=3.0)
    for _, pred in street_frames(20):
        est = policy.update(pred, CAM)
        assert est.valid, est.info
    assert est.source == "ground_plane"
    assert est.scale == pytest.approx(FACTOR, rel=0.05)
    assert est.info["estimated_height"] == pytest.approx(HEIGHT / FACTOR, rel=0.05)


def test_ground_plane_pitch_sign_matters():
    true = street_depth(CAM, HEIGHT, 12.0)
    pred = true / FACTOR
    right = GroundPlaneScale(HEIGHT, pitch_deg=12.0, normal_tolerance_deg=5.0)
    assert right.update(pred, CAM).scale == pytest.approx(FACTOR, rel=0.01)
    for wrong in (-12.0, 0.0):
        est = GroundPlaneScale(HEIGHT, pitch_deg=wrong, normal_tolerance_deg=5.0).update(pred, CAM)
        assert not est.valid and math.isnan(est.scale)


def test_ground_plane_rejects_frames_without_road_and_holds_scale():
    policy = GroundPlaneScale(camera_height=HEIGHT, pitch_deg=3.0)
    for _, pred in street_frames(5):
        good = policy.update(pred, CAM)
    assert good.valid
    rng = np.random.default_rng(1)
    clutter = rng.uniform(1.0, 30.0, (CAM.height, CAM.width)).astype(np.float32)
    est = policy.update(clutter, CAM)
    assert not est.valid and "inliers" in est.info["reason"]
    assert est.scale == good.scale                                   # held
    blind = np.full((CAM.height, CAM.width), np.nan, np.float32)
    est = policy.update(blind, CAM)
    assert not est.valid and est.scale == good.scale
    policy.reset()
    assert math.isnan(policy.update(blind, CAM).scale)               # forgotten


def test_lidar_median_recovers_known_scale():
    rng = np.random.default_rng(2)
    policy = LidarMedianScale(min_points=20, window=10)
    for true, pred in street_frames(20, seed=3):
        lidar = np.full_like(true, np.nan)
        idx = rng.choice(true.size, 150, replace=False)              # sparse returns
        lidar.flat[idx] = true.flat[idx] * (1 + 0.01 * rng.standard_normal(150))
        lidar.flat[idx[:15]] = rng.uniform(0.3, 60.0, 15)             # bad returns
        est = policy.update(pred, CAM, lidar)
        assert est.valid
    assert est.source == "lidar_median"
    assert est.scale == pytest.approx(FACTOR, rel=0.05)


def test_lidar_median_too_few_points_holds_scale():
    true = street_depth(CAM, HEIGHT)
    pred = true / 2.0
    policy = LidarMedianScale(min_points=20)
    lidar = np.full_like(true, np.nan)
    lidar[120:130, 100:110] = true[120:130, 100:110]                 # 100 points
    assert policy.update(pred, CAM, lidar).scale == pytest.approx(2.0, rel=1e-5)
    few = np.full_like(true, np.nan)
    few[120, 100:105] = true[120, 100:105]
    est = policy.update(pred, CAM, few)
    assert not est.valid and est.scale == pytest.approx(2.0, rel=1e-5)
    est = policy.update(pred, CAM, None)
    assert not est.valid and "no reference" in est.info["reason"]
    with pytest.raises(ValueError, match="reference depth shape"):
        policy.update(pred, CAM, lidar[:, :10])


def test_fixed_and_model_policies():
    depth = np.ones((CAM.height, CAM.width), np.float32)
    assert FixedScale(2.5).update(depth, CAM).scale == 2.5
    est = ModelScale().update(depth, CAM)
    assert (est.scale, est.valid, est.source) == (1.0, True, "model")
    with pytest.raises(ValueError, match="positive"):
        FixedScale(0.0)


def test_smoothers_by_hand():
    med = Smoother("median", window=3)
    assert [med.add(x) for x in (1.0, 5.0, 2.0, 10.0)] == [1.0, 3.0, 2.0, 5.0]
    ema = Smoother("ema", alpha=0.5)
    assert [ema.add(x) for x in (2.0, 4.0, 4.0)] == [2.0, 3.0, 3.5]


def test_make_scale_policy():
    assert isinstance(make_scale_policy("ground_plane", camera_height=1.2), GroundPlaneScale)
    assert make_scale_policy("fixed", factor=3.0).factor == 3.0
    with pytest.raises(ValueError, match="unknown scale policy"):
        make_scale_policy("magic")
    with pytest.raises(ValueError, match="camera_hieght"):
        make_scale_policy("ground_plane", camera_hieght=1.2)
    with pytest.raises(ValueError, match="camera_height"):
        make_scale_policy("ground_plane")


def test_ground_plane_on_synthetic_street_drive():
    """Ray-cast ground truth of the synthetic street (parked cars, buildings, weaving
    vehicle), divided by an unknown factor, with noise and outliers."""
    from depth_perception.synth import SynthConfig, SyntheticStreet
    config = SynthConfig(size=(320, 96), supersample=1)
    street = SyntheticStreet(config, frames=20)
    policy = GroundPlaneScale(camera_height=config.camera_xyz[2], pitch_deg=0.0)
    rng = np.random.default_rng(4)
    for frame in range(20):
        pred = noisy(street.geometry(frame).depth, rng) / FACTOR
        est = policy.update(pred, street.intrinsics)
    assert est.valid
    assert est.scale == pytest.approx(FACTOR, rel=0.05)
