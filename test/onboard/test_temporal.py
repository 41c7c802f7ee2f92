"""Depth moved between frames (data/warp.py) and the temporal alignment error (TAE) that
`evaluate` reports per condition (evaluation/temporal.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import invert_transform, make_transform
from depth_perception.data.warp import camera_motion, forward_warp
from depth_perception.evaluation.temporal import (covisible, motion_scale, scored_depth,
                                                  temporal_alignment_error)

K = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
#: the camera drives 1 m forward along its optical axis: the scene comes 1 m closer
FORWARD_1M = make_transform((0.0, 0.0, -1.0))
ALL = np.ones((48, 64), bool)


def plane(z: float) -> np.ndarray:
    return np.full((48, 64), z, np.float32)


def test_forward_warp_of_a_fronto_parallel_plane():
    warped = forward_warp(plane(10.0), K, FORWARD_1M)
    landed = np.isfinite(warped)
    assert np.all(warped[landed] == pytest.approx(9.0))
    # magnified by 10/9 about the principal point: frame k saw all of frame k+1's view
    # (points land up to its borders) but 9 source pixels spread over 10 target ones per
    # axis, leaving whole empty rows and columns (81 % of the pixels get a point); a
    # forward warp never fills such gaps
    assert landed[0].any() and landed[-1].any() and landed[:, 0].any() and landed[:, -1].any()
    assert landed.mean() == pytest.approx(0.81, abs=0.03)
    # the wrong sign of the translation pushes the plane away instead: shrunk by 10/11,
    # the outer ring of the image (outside frame k's view) gets nothing
    flipped = forward_warp(plane(10.0), K, invert_transform(FORWARD_1M))
    assert np.nanmax(np.abs(flipped - 11.0)) < 1e-5
    assert np.isnan(flipped[0]).all() and np.isnan(flipped[:, 0]).all()
    assert np.isfinite(flipped[4:44, 4:60]).all()
    # sideways by 1 m at 10 m: 10 px to the left (x right), depth unchanged
    left = forward_warp(plane(10.0), K, make_transform((-1.0, 0.0, 0.0)))
    assert np.isnan(left[:, 54:]).all() and np.isfinite(left[:, :54]).all()


def test_forward_warp_z_buffer_and_masks():
    depth = plane(20.0)
    depth[20:28, 28:36] = 5.0                              # a box in front of a wall
    depth[2, 0] = np.nan                                   # no depth: not warped
    move = make_transform((0.4, 0.0, 0.0))                 # points 0.4 m to the right
    warped = forward_warp(depth, K, move)
    # the box moves 8 px right (0.4 m at 5 m), the wall 2 px: the box hides the wall
    assert np.all(warped[20:28, 36:44] == 5.0)
    assert np.all(warped[20:28, 10:20] == 20.0) and np.isnan(warped[20:28, :2]).all()
    assert np.isnan(warped[2, 2]) and warped[2, 3] == 20.0      # from the NaN pixel: none
    # a mask leaves pixels out of the warp: without the box, the wall shows through
    kept = np.ones_like(depth, bool)
    kept[20:28, 28:36] = False
    without_box = forward_warp(depth, K, move, kept)
    assert np.all(without_box[20:28, 38:44] == 20.0)
    assert np.isnan(without_box[20:28, 30:38]).all()            # where the box hid it
    with pytest.raises(ValueError, match=r"\[4,4\]"):
        forward_warp(depth, K, np.eye(3))
    with pytest.raises(ValueError, match="does not match"):
        forward_warp(depth[:10], K, np.eye(4))


def test_tae_by_hand_for_a_plane_one_metre_closer():
    """Frame k sees a wall 10 m ahead, frame k+1 (1 m further) 9 m ahead.

    Exact depth: TAE 0. Depth x 1.1 (11 m, 9.9 m): k warped into k+1 is 11 - 1 = 10 m
    against 9.9 m, |9.9 - 10| / 9.9 = 1/99; k+1 warped into k is 9.9 + 1 = 10.9 m
    against 11 m, 0.1/11 = 1/110; TAE = (1/99 + 1/110) / 2 = 0.0095960.
    """
    exact = temporal_alignment_error(plane(10.0), plane(9.0), K, FORWARD_1M, ALL, ALL)
    assert exact["tae"] == 0.0 and exact["pixels"] > 0.6 * 2 * ALL.size
    scaled = temporal_alignment_error(plane(11.0), plane(9.9), K, FORWARD_1M, ALL, ALL)
    assert scaled["tae_forward"] == pytest.approx(1 / 99, rel=1e-5)
    assert scaled["tae_backward"] == pytest.approx(1 / 110, rel=1e-5)
    assert scaled["tae"] == pytest.approx((1 / 99 + 1 / 110) / 2, rel=1e-5)
    assert scaled["tae"] == pytest.approx(0.0095960, abs=1e-7)
    # the wrong sign of the translation: the exact depth is no longer consistent
    wrong = temporal_alignment_error(plane(10.0), plane(9.0), K,
                                     invert_transform(FORWARD_1M), ALL, ALL)
    assert wrong["tae_forward"] == pytest.approx(2 / 9, rel=1e-5)
    assert wrong["tae_backward"] == pytest.approx(2 / 10, rel=1e-5)
    # a depth that never moves (an image-blind prior) is off by the motion
    still = temporal_alignment_error(plane(10.0), plane(10.0), K, FORWARD_1M, ALL, ALL)
    assert still["tae"] == pytest.approx((1 / 10 + 1 / 10) / 2, rel=1e-5)
    # nothing compared: NaN, no pixels
    none = temporal_alignment_error(plane(10.0), plane(9.0), K, FORWARD_1M, ~ALL, ~ALL)
    assert np.isnan(none["tae"]) and none["pixels"] == 0


def test_motion_scale_by_hand_for_a_wall_one_metre_closer():
    """Frame b is 1 m nearer a wall than frame a (T_a_b moves b's points 1 m further).
    A stream that sees 10 m then 9 m moves with the camera (1); one that sees 10 m twice
    does not move (0); 9.5 m then 9 m moves half as far (0.5); the wrong sign of
    the motion reads -1."""
    T_a_b = invert_transform(FORWARD_1M)
    assert motion_scale(plane(10.0), plane(9.0), K, T_a_b) == pytest.approx(1.0, abs=1e-5)
    assert motion_scale(plane(10.0), plane(10.0), K, T_a_b) == pytest.approx(0.0, abs=1e-5)
    assert motion_scale(plane(9.5), plane(9.0), K, T_a_b) == pytest.approx(0.5, abs=1e-5)
    assert motion_scale(plane(10.0), plane(9.0), K, FORWARD_1M) == pytest.approx(-1.0,
                                                                                  abs=1e-5)
    # no motion along the axis, or nothing in range (beyond max_depth): no figure
    assert motion_scale(plane(10.0), plane(9.0), K, np.eye(4)) is None
    assert motion_scale(plane(40.0), plane(39.0), K, T_a_b, max_depth=30.0) is None


def test_moving_pixels_are_neither_warped_nor_compared():
    """A car 5 m ahead drives along at the ego speed: it stays at 5 m while the wall
    comes 1 m closer. Exact depth of both frames: TAE 0 once the car is masked."""
    a, b = plane(10.0), plane(9.0)
    car = np.zeros((48, 64), bool)
    car[18:30, 24:40] = True
    a[car], b[car] = 5.0, 5.0
    unmasked = temporal_alignment_error(a, b, K, FORWARD_1M, ALL, ALL)
    assert unmasked["tae"] > 0.02                  # the car seems to jump by 1 m in 5
    masked = temporal_alignment_error(a, b, K, FORWARD_1M, ~car, ~car, ~car, ~car)
    assert masked["tae"] == 0.0


def test_covisible_leaves_out_what_the_source_could_not_see():
    # k sees a wall at 10 m; k+1 (1 m closer) also sees a pole 2 m ahead that k's
    # view did not hold: the wall points of k land on the pole's pixels
    a, b = plane(10.0), plane(9.0)
    b[10:40, 30:34] = 2.0
    vis = covisible(a, b, K, FORWARD_1M)
    pole = np.zeros_like(vis)
    pole[10:40, 30:34] = True
    np.testing.assert_array_equal(vis, np.isfinite(forward_warp(a, K, FORWARD_1M)) & ~pole)
    assert temporal_alignment_error(a, b, K, FORWARD_1M, ALL, vis)["tae_forward"] == 0.0


def test_scored_depth_follows_the_metrics():
    pred = np.array([[np.inf, -np.inf, np.nan, 0.0, 50.0, 200.0]], np.float32)
    out = scored_depth(pred, (0.1, 80.0), scale=2.0)
    assert out[0, 0] == 80.0 and out[0, 1] == pytest.approx(0.2)
    assert np.isnan(out[0, 2]) and np.isnan(out[0, 3])
    assert out[0, 4] == 80.0 and out[0, 5] == 80.0


def test_camera_motion_from_a_tf_buffer():
    from depth_perception.data.tf import TfBuffer

    tf = TfBuffer()
    optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    tf.add_static("base_link", "cam", make_transform((1.0, 0.0, 1.5), optical))
    tf.add_dynamic("odom", "base_link", 0, make_transform((0.0, 0.0, 0.0)))
    tf.add_dynamic("odom", "base_link", 100, make_transform((1.0, 0.0, 0.0)))
    T = camera_motion(tf, "cam", 0, 100)                      # base_link 1 m along x
    np.testing.assert_allclose(T, FORWARD_1M, atol=1e-12)
    assert temporal_alignment_error(plane(10.0), plane(9.0), K, T, ALL, ALL)["tae"] == 0.0


# ----------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moving_cars_bag(tmp_path_factory):
    from depth_perception.synth import SynthConfig, make_synthetic_bags

    bag, = make_synthetic_bags(tmp_path_factory.mktemp("tae") / "bags", frames=6,
                               size=(160, 48), conditions=("day-clear",), seed=0,
                               config=SynthConfig(moving_car_probability=1.0,
                                                  lead_vehicles=1))
    return bag


def test_moving_mask_marks_the_pixels_of_moving_cars(moving_cars_bag):
    """/ground_truth/moving of a synthetic drive: mono8, 255 exactly where the pixel centre
    sees a box with a velocity (oncoming and lead cars), 0 on the static street; read
    back by the samples."""
    from rosbags.highlevel import AnyReader

    from depth_perception import conversions as conv
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.synth import SynthConfig, SyntheticStreet

    drive = SyntheticStreet(SynthConfig(size=(160, 48), seed=0, moving_car_probability=1.0,
                                        lead_vehicles=1), frames=6)
    objects = drive.geometry(3).objects
    hit = objects >= 0
    mask = drive.moving(3)
    assert mask[hit].tolist() == (drive.scene.velocity[objects[hit]] != 0).tolist()
    assert not mask[~hit].any() and mask.any()
    with AnyReader([moving_cars_bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/ground_truth/moving"]
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(conns)]
    seq = BagSequence(moving_cars_bag, SampleConfig(offsets=(), skip_static=False,
                                                    with_lidar=False, with_moving=True))
    assert len(msgs) == 6
    for k, msg in enumerate(msgs):
        assert msg.encoding == "mono8" and msg.header.frame_id == "camera_optical_frame"
        assert conv.stamp_to_ns(msg.header.stamp) == seq.stamps[k]
        np.testing.assert_array_equal(conv.image_to_numpy(msg) == 255, drive.moving(k))
        np.testing.assert_array_equal(seq[k].moving, drive.moving(k))
    assert BagSequence(moving_cars_bag, SampleConfig(offsets=(), skip_static=False))[0] \
        .moving is None                                         # training samples: not read


def test_evaluate_reports_tae_per_condition(moving_cars_bag, tmp_path):
    from support.bagtools import copy_bag_with_scaled_depth

    from depth_perception.evaluation.offline import EvaluateConfig, evaluate
    from depth_perception.evaluation.prior import PRIOR_NAME
    from depth_perception.evaluation.report import write_report

    bag = copy_bag_with_scaled_depth(moving_cars_bag, tmp_path / "scaled", 1.1)
    # the ground truth itself: what is left is the nearest-pixel warp of slanted
    # surfaces (the floor of the measure at this resolution); beside the prior row and
    # the ground truth x 1.1, which does not move with the camera by 10 % of the motion
    dense = "/ground_truth/depth"
    res = evaluate([bag], EvaluateConfig(reference=dense, prior="bags",
                                         prior_bags=(moving_cars_bag,)),
                   prediction_topic="/ground_truth/depth", prediction_name="gt")
    evaluate([bag], EvaluateConfig(reference=dense),
             prediction_topic="/ground_truth/depth_scaled", prediction_name="gt x 1.1",
             results=res)
    out = tmp_path / "report"
    write_report(res, out)
    m = json.loads((out / "metrics.json").read_text())
    gt, scaled, prior = (m["models"][name]["temporal"] for name in ("gt", "gt x 1.1", PRIOR_NAME))
    assert gt["per_condition"]["day-clear"]["pairs"] == 5 == gt["all"]["pairs"]
    assert gt["all"]["tae"] < 0.015                 # about 1 % at 160x48, 0.5 % at 320x96
    assert gt["all"]["tae"] < scaled["all"]["tae"] < prior["all"]["tae"]
    assert prior["all"]["tae"] > 0.02
    # abs_rel on the moving cars alone, beside the TAE
    cars = {name: m["models"][name]["per_condition"]["day-clear"] for name in ("gt", "gt x 1.1")}
    assert cars["gt"]["abs_rel_moving"] == 0.0 and cars["gt"]["moving_fraction"] > 0.005
    assert cars["gt x 1.1"]["abs_rel_moving"] == pytest.approx(0.1, abs=0.01)
    md = (out / "report.md").read_text()
    assert "## Temporal alignment error (TAE)" in md and "day-clear absRel moving" in md
    assert "outside the bags' moving-object masks" in md
    rows = (out / "temporal.csv").read_text().splitlines()
    assert rows[0].startswith("model,bag,condition,index,stamp_ns,tae,")
    assert len(rows) == 1 + 3 * 5
    assert (out / "plots" / "tae_per_frame.png").is_file()


def test_tae_counts_moving_cars_only_without_a_mask(tmp_path):
    """A bag without /ground_truth/moving: every pixel is static, and the report says so;
    a stride makes pairs of frames that far apart."""
    from support.bagtools import make_drive_bag

    from depth_perception.evaluation.offline import EvaluateConfig, evaluate
    from depth_perception.evaluation.temporal import markdown

    bag = make_drive_bag(tmp_path / "plain", n=6, speed=2.0,
                         lidar_points=np.array([[10.0, 0.0, 0.0], [10.0, 1.0, 0.5]]))
    res = evaluate([bag], EvaluateConfig(reference="/ground_truth/depth"),
                   prediction_topic="/ground_truth/depth", prediction_name="gt")
    records = res.models["gt"].temporal
    assert len(records) == 5 and not any(r.masked for r in records)
    # a constant 10 m "ground truth" while driving 0.2 m per frame: off by 0.2 m in 10
    assert np.mean([r.values["tae"] for r in records]) == pytest.approx(0.02, rel=1e-4)
    assert "without a moving-object mask" in "\n".join(markdown(res, ["day-clear"], {}))
    strided = evaluate([bag], EvaluateConfig(reference="/ground_truth/depth", stride=2),
                       prediction_topic="/ground_truth/depth", prediction_name="gt")
    assert [r.index for r in strided.models["gt"].temporal] == [2, 4]
