"""Temporal fusion of a depth stream with the ego-motion (runtime/fusion.py)."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import invert_transform, make_transform
from depth_perception.runtime.fusion import TemporalFusion

K = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)
STEP = make_transform((0.0, 0.0, -0.5))        # T_cur_prev: 0.5 m forward per frame
CENTRE = (slice(20, 100), slice(20, 140))


def wall(k: int) -> np.ndarray:
    """A wall 30 m ahead at frame 0, 0.5 m closer every frame."""
    return np.full((120, 160), 30.0 - 0.5 * k, np.float32)


def noisy(depth: np.ndarray, rng, sigma: float = 0.03) -> np.ndarray:
    return (depth * (1.0 + sigma * rng.standard_normal(depth.shape))).astype(np.float32)


def test_static_scene_noise_falls_and_stays_unbiased():
    rng = np.random.default_rng(0)
    fusion = TemporalFusion(threshold=0.15, max_age=8)
    for k in range(16):
        truth = wall(k)
        out = fusion.update(noisy(truth, rng), K, None if k == 0 else STEP)
        err = (out.depth / truth - 1.0)[CENTRE]
        if k == 0:
            assert out.reset and out.why == "first frame" and np.std(err) > 0.028
    # an exponential average over 8 frames keeps sqrt(1/15) of the noise (about 0.26);
    # the bilinear sampling of the carried depth smooths a little more
    assert np.std(err) < 0.35 * 0.03
    assert abs(np.mean(err)) < 0.002
    assert out.fused > 0.97 and not out.reset
    conf = out.confidence
    assert conf.dtype == np.float32 and 0.0 <= conf.min() and conf.max() <= 1.0
    assert np.median(conf[CENTRE]) > 0.5
    assert out.age[CENTRE].max() == 8


def test_exact_depth_is_kept_exactly_and_the_wrong_sign_never_agrees():
    fusion = TemporalFusion()
    fusion.update(wall(0), K, None)
    out = fusion.update(wall(1), K, STEP)
    assert out.fused > 0.95
    assert np.abs(out.depth[CENTRE] - 29.5).max() < 1e-3
    assert out.confidence[CENTRE].min() == pytest.approx(1 / 7, abs=1e-3)   # age 2 of 8
    # the motion the wrong way round: the wall would have gone 1 m away, 3.4 % off
    fusion = TemporalFusion(threshold=0.03)
    fusion.update(wall(0), K, None)
    wrong = fusion.update(wall(1), K, invert_transform(STEP))
    assert wrong.fused == 0.0
    np.testing.assert_array_equal(wrong.depth, wall(1))


def test_a_moving_car_resets_without_lag():
    """A car 20 m ahead coming 3 m closer every frame (oncoming): its pixels follow the
    new prediction exactly, the static wall around it keeps being averaged."""
    rng = np.random.default_rng(1)
    fusion = TemporalFusion(threshold=0.1)
    car = np.zeros((120, 160), bool)
    car[40:80, 50:110] = True
    for k in range(6):
        pred = noisy(wall(k), rng)
        pred[car] = 20.0 - 3.0 * k + rng.normal(0.0, 0.05, car.sum())
        out = fusion.update(pred, K, None if k == 0 else STEP)
    inner = np.zeros_like(car)
    inner[42:78, 52:108] = True                   # the car but its silhouette
    np.testing.assert_array_equal(out.depth[inner], pred[inner])
    assert (out.age[inner] == 1).all() and (out.confidence[inner] == 0).all()
    static = np.zeros_like(car)
    static[10:30, 20:140] = True
    assert (out.age[static] > 1).mean() > 0.95
    assert np.std(out.depth[static] / wall(5)[static] - 1) < 0.6 * 0.03


def test_missing_pose_gives_the_single_frame_output():
    rng = np.random.default_rng(2)
    fusion = TemporalFusion()
    fusion.update(noisy(wall(0), rng), K, None)
    fusion.update(noisy(wall(1), rng), K, STEP)
    pred = noisy(wall(2), rng)
    out = fusion.update(pred, K, None)                  # TF missing for this frame
    assert out.reset and out.why == "no camera motion" and out.fused == 0.0
    np.testing.assert_array_equal(out.depth, pred)
    assert (out.confidence == 0).all() and (out.age == 1).all()
    # ... and the next frame starts a new history from it
    out = fusion.update(noisy(wall(3), rng), K, STEP)
    assert out.fused > 0.9 and out.age[CENTRE].max() == 2
    # another camera geometry: reset too
    small = Intrinsics(100.0, 100.0, 39.5, 29.5, 80, 60)
    out = fusion.update(np.full((60, 80), 20.0, np.float32), small, STEP)
    assert out.reset and out.why == "camera geometry changed"


def test_rep117_values_pass_through_and_restart():
    fusion = TemporalFusion()
    first = wall(0)
    first[:10] = np.inf                                   # beyond range (sky)
    first[10:12] = np.nan
    fusion.update(first, K, None)
    second = wall(1)
    second[:10] = np.inf
    second[110:] = -np.inf                                # too close
    out = fusion.update(second, K, STEP)
    assert np.isposinf(out.depth[:10]).all() and np.isneginf(out.depth[110:]).all()
    assert (out.age[:10] == 0).all() and (out.confidence[:10] == 0).all()
    # the pixels next to an unusable previous depth cannot be sampled: they restart
    assert (out.age[13:100, 20:140] == 2).all()


def test_bands_of_rows_give_the_whole_image_numbers(monkeypatch):
    """The update runs band by band; a band edge must not show in any output. 160
    columns keep every band a multiple of OpenCV's vector width, so that the two runs
    are equal to the bit, not only to float rounding."""
    from depth_perception.runtime import fusion as module

    rng = np.random.default_rng(3)
    yaw = 0.01                                              # and 0.1 m sideways
    turn = make_transform((0.1, 0.0, -0.5), [[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0],
                                             [-np.sin(yaw), 0.0, np.cos(yaw)]])
    frames = [noisy(wall(k), rng, 0.05) for k in range(4)]
    frames[2][40:60, 50:90] = 12.0                         # a car: reset there
    frames[2][:5] = np.inf
    frames[3][7:9] = np.nan
    outputs = {}
    for rows in (7, 64, 1000):                              # 1000: the whole image at once
        monkeypatch.setattr(module, "_BAND_PIXELS", rows * K.width)
        fusion = TemporalFusion(threshold=0.1, max_age=4)
        outputs[rows] = [fusion.update(f, K, None if k == 0 else turn)
                         for k, f in enumerate(frames)]
    for rows in (7, 64):
        for a, b in zip(outputs[rows], outputs[1000]):
            np.testing.assert_array_equal(a.depth, b.depth)
            np.testing.assert_array_equal(a.age, b.age)
            np.testing.assert_array_equal(a.confidence, b.confidence)
            assert a.fused == b.fused
    last = outputs[1000][-1]
    assert 0.5 < last.fused < 1.0 and last.age.max() == 4

def test_arguments_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        TemporalFusion(threshold=0.0)
    with pytest.raises(ValueError, match="max_age"):
        TemporalFusion(max_age=1)
    fusion = TemporalFusion()
    with pytest.raises(ValueError, match="does not match the camera"):
        fusion.update(np.ones((10, 10), np.float32), K, None)
    fusion.update(wall(0), K, None)
    with pytest.raises(ValueError, match=r"\[4,4\]"):
        fusion.update(wall(1), K, np.eye(3))


def test_evaluate_scores_the_fused_stream_beside_the_single_frame_one(tmp_path):
    """A stand-in model: the ground truth with 5 % noise per pixel and frame. Its fused
    stream moves with the camera better (TAE) and is closer to the truth, and the
    oncoming cars are no worse (a looser fusion_threshold, 0.2, lets cars far enough
    away blend: measured 0.052 against 0.039 on their pixels)."""
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.evaluation.offline import EvaluateConfig, evaluate, fused_name
    from depth_perception.synth import SynthConfig, make_synthetic_bags

    bag, = make_synthetic_bags(tmp_path / "bags", frames=8, size=(160, 48),
                               conditions=("day-clear",), seed=0,
                               config=SynthConfig(moving_car_probability=1.0))
    truth = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))

    class NoisyTruth:
        rng = np.random.default_rng(3)

        def estimate(self, rgb, intrinsics, rectifier=None):
            stamp = next(k for k in range(len(truth)) if not seen.__contains__(k))
            seen.add(stamp)
            gt = truth[stamp].gt_depth
            depth = np.where(np.isfinite(gt), gt, np.inf).astype(np.float32)
            noise = 1 + 0.05 * self.rng.standard_normal(gt.shape).astype(np.float32)

            class R:
                pass
            R.depth = depth * noise
            return R()

    seen: set = set()
    config = EvaluateConfig(reference="/ground_truth/depth", temporal_fusion=True)
    res = evaluate([bag], config, estimators={"noisy": NoisyTruth()}).to_dict()["models"]
    single, fused = res["noisy"], res[fused_name("noisy")]
    assert single["all"]["frames"] == fused["all"]["frames"] == 8
    # measured: TAE 0.063 -> 0.039, abs_rel 0.040 -> 0.030 (fusion_threshold 0.1)
    assert fused["temporal"]["all"]["tae"] < 0.7 * single["temporal"]["all"]["tae"]
    assert fused["all"]["abs_rel"] < single["all"]["abs_rel"]
    # the oncoming cars are reset, not averaged with where they were: no lag on them
    moving = [r["per_condition"]["day-clear"]["abs_rel_moving"] for r in (single, fused)]
    assert 0 < moving[1] < 1.05 * moving[0]


def test_the_estimator_fuses_on_the_model_grid_and_publishes_at_camera_resolution():
    """The depth node's and evaluate's path (DepthEstimator.fuse): the 336x168 camera's
    model runs at 224x112, the fusion keeps its history there, and the fused depth and
    confidence come back at 336x168 with the estimator's range meanings."""
    from depth_perception.metadata import ModelMetadata
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.runtime.processing import to_camera
    from support.models_fixtures import FunctionBackend

    cam = Intrinsics(fx=200.0, fy=200.0, cx=167.5, cy=83.5, width=336, height=168)
    rgb = np.zeros((168, 336, 3), np.uint8)
    meta = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)
    rng = np.random.default_rng(0)
    walls = iter([30.0, 29.5, 29.0, 28.5, 28.0, 27.5, 27.0, 26.5])
    noise = 0.03

    def wall_output(x):                     # the wall, 0.5 m nearer every frame, 3 % noise
        return noisy(np.full(x.shape[2:], next(walls), np.float32), rng, noise)[None, None]

    est = DepthEstimator(FunctionBackend(wall_output, meta), meta, short_side=112)
    fusion = TemporalFusion(threshold=0.15, max_age=8)
    first = est.estimate(rgb, cam)
    out = est.fuse(fusion, first, None)
    assert out.reset and fusion._depth.shape == (112, 224)          # the model's grid
    np.testing.assert_allclose(out.depth, first.depth, rtol=1e-6)   # nothing to fuse yet
    for k in range(1, 8):
        result = est.estimate(rgb, cam)
        out = est.fuse(fusion, result, STEP)
        assert out.depth.shape == out.confidence.shape == (168, 336)
        assert out.depth.dtype == out.confidence.dtype == np.float32
        # what is published is the fused grid brought to the camera as the depth is
        np.testing.assert_array_equal(out.depth, to_camera(fusion._depth, result.prepared))
    err_single = result.depth / (30.0 - 0.5 * 7) - 1
    err_fused = out.depth / (30.0 - 0.5 * 7) - 1
    assert np.std(err_fused) < 0.5 * np.std(err_single)      # 8 frames: about 0.35x
    assert abs(np.mean(err_fused)) < 0.003
    assert out.fused > 0.97 and 0.5 < np.median(out.confidence) <= 1.0

    # beyond max_depth: +inf published, as the single-frame depth is (REP 117)
    far = DepthEstimator(FunctionBackend(lambda x: np.full((1, 1, *x.shape[2:]), 60.0,
                                                           np.float32), meta), meta,
                         short_side=112)
    fusion = TemporalFusion()
    for T in (None, STEP):
        out = far.fuse(fusion, far.estimate(rgb, cam), T)
        assert np.isposinf(out.depth).all()

    # a relative model scaled x2 by its policy: the grid is fused in metres too
    from depth_perception.runtime.scale import FixedScale

    rel_meta = ModelMetadata(output_kind="relative_depth", min_depth=0.5, max_depth=50.0)
    scaled = DepthEstimator(FunctionBackend(lambda x: np.full((1, 1, *x.shape[2:]), 10.0,
                                                              np.float32), rel_meta),
                            rel_meta, FixedScale(2.0), short_side=112)
    fusion = TemporalFusion(threshold=0.05)
    scaled.fuse(fusion, scaled.estimate(rgb, cam), None)
    assert np.nanmax(np.abs(fusion._depth - 20.0)) == 0.0
    # the same 20 m a frame later, 0.5 m nearer than carried: 2.5 % off, agreed, averaged
    out = scaled.fuse(fusion, scaled.estimate(rgb, cam), STEP)
    assert out.fused > 0.95
    assert np.median(out.depth) == pytest.approx((19.5 + 20.0) / 2, abs=1e-3)
    # a camera the size of the model grid: the output is never scaled twice
    same = Intrinsics(fx=200.0, fy=200.0, cx=111.5, cy=55.5, width=224, height=112)
    single = scaled.estimate(np.zeros((112, 224, 3), np.uint8), same)
    out = scaled.fuse(TemporalFusion(), single, None)
    assert single.prepared.model_size == (224, 112)
    np.testing.assert_array_equal(out.depth, single.depth)
    assert float(single.model_output.max()) == 10.0 and float(out.depth.max()) == 20.0
