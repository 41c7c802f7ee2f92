"""Synthetic driving bags: determinism, conditions, bag layout, and cross-checks that
texture, depth, pose, intrinsics and LiDAR agree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from depth_perception import conversions as conv
from depth_perception.synth import (GROUND, MOVING_CAR, TOPICS, SynthConfig, SyntheticStreet,
                                    make_synthetic_bags, parse_size)
from depth_perception.synth.materials import band_coverage, periodic_coverage

SIZE = (640, 192)
FRAMES = 6
CONDITIONS = ("day-clear", "night", "rain")
EXPECTED_TYPES = {
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/odom": "nav_msgs/msg/Odometry",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/ground_truth/depth": "sensor_msgs/msg/Image",
    "/ground_truth/camera_info": "sensor_msgs/msg/CameraInfo",
    "/ground_truth/moving": "sensor_msgs/msg/Image",
    "/lidar/points": "sensor_msgs/msg/PointCloud2",
}


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synth_mcap")
    paths = make_synthetic_bags(out, frames=FRAMES, size=SIZE, conditions=CONDITIONS,
                                seed=0, storage="mcap")
    return dict(zip(CONDITIONS, paths))


@pytest.fixture(scope="module")
def street() -> SyntheticStreet:
    """The same drive as the bags, rendered in memory."""
    return SyntheticStreet(SynthConfig(size=SIZE, seed=0), frames=FRAMES)


def _read_all(path: Path) -> dict[str, list]:
    """{topic: [(log time ns, rosbags message)]} with rosbags' own Reader."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


def _custom_data(path: Path) -> dict:
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    return meta["rosbag2_bagfile_information"]["custom_data"]


# --------------------------------------------------------------------------------------
# photometric check (numpy + cv2), as the training loss defines it
# --------------------------------------------------------------------------------------

def _ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of [H,W,C] float images: 3x3 mean pool, reflection padding."""
    def pool(a):
        padded = cv2.copyMakeBorder(a, 1, 1, 1, 1, cv2.BORDER_REFLECT_101)
        return cv2.blur(padded, (3, 3), borderType=cv2.BORDER_CONSTANT)[1:-1, 1:-1]

    mx, my = pool(x), pool(y)
    sx = pool(x * x) - mx * mx
    sy = pool(y * y) - my * my
    sxy = pool(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))


def _photometric_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[H,W]: 0.85 * mean_c clamp((1 - SSIM) / 2, 0, 1) + 0.15 * mean_c |a - b|."""
    ssim_term = np.clip((1.0 - _ssim(a, b)) / 2.0, 0.0, 1.0).mean(axis=-1)
    return 0.85 * ssim_term + 0.15 * np.abs(a - b).mean(axis=-1)


def _warp(source: np.ndarray, depth: np.ndarray, K: np.ndarray, T_src_tgt: np.ndarray):
    """Sample ``source`` at the projections of the target pixels: back-project with the
    target depth, move with T_src_tgt, project with K. Returns (warped, in-bounds mask)."""
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth],
                   axis=-1).reshape(-1, 3)
    moved = pts @ T_src_tgt[:3, :3].T + T_src_tgt[:3, 3]
    proj = moved @ K.T
    with np.errstate(invalid="ignore", divide="ignore"):
        us = (proj[:, 0] / proj[:, 2]).reshape(H, W)
        vs = (proj[:, 1] / proj[:, 2]).reshape(H, W)
    ok = np.isfinite(us) & np.isfinite(vs) & (moved[:, 2].reshape(H, W) > 0) \
        & (us >= 0) & (us <= W - 1) & (vs >= 0) & (vs <= H - 1)
    warped = cv2.remap(source, np.nan_to_num(us, nan=-1).astype(np.float32),
                       np.nan_to_num(vs, nan=-1).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return warped, ok


def test_photometric_check_catches_a_known_shift():
    """The check itself: a pure 3 px horizontal image shift is undone by the right warp."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((48, 64, 3)).astype(np.float32), (0, 0), 1.0)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    depth = np.full((48, 64), 10.0)
    # Camera moved 0.6 m to the left in the source: X_src = X_tgt + (0.6, 0, 0), i.e. the
    # source image is the target shifted right by fx * 0.6 / 10 = 3 px.
    T = np.eye(4)
    T[0, 3] = 0.6
    source = np.zeros_like(img)
    source[:, 3:] = img[:, :-3]
    warped, ok = _warp(source, depth, K, T)
    assert ok[:, :-3].all() and not ok[:, -3:].any()
    assert _photometric_error(img, warped)[:, 2:-4].max() < 1e-5
    assert _photometric_error(img, source)[:, 2:-4].mean() > 0.05


# --------------------------------------------------------------------------------------
# renderer (no bag)
# --------------------------------------------------------------------------------------

def test_same_seed_is_byte_identical_and_other_seed_differs():
    config = SynthConfig(size=(160, 48), seed=3)
    a = SyntheticStreet(config, frames=4)
    b = SyntheticStreet(config, frames=4)
    for condition in ("day-clear", "night", "rain", "snow"):
        rgb_a, depth_a = a.render(2, condition)
        rgb_b, depth_b = b.render(2, condition)
        assert rgb_a.dtype == np.uint8 and rgb_a.shape == (48, 160, 3)
        assert rgb_a.tobytes() == rgb_b.tobytes(), condition
        assert depth_a.tobytes() == depth_b.tobytes()
    np.testing.assert_array_equal(a.lidar_scan(1), b.lidar_scan(1))
    other = SyntheticStreet(SynthConfig(size=(160, 48), seed=4), frames=4)
    rgb_o, depth_o = other.render(2, "day-clear")
    rgb_a, depth_a = a.render(2, "day-clear")
    assert np.mean(rgb_o != rgb_a) > 0.3
    both = np.isfinite(depth_o) & np.isfinite(depth_a)
    assert np.mean(np.abs(depth_o[both] - depth_a[both]) > 0.01) > 0.1


def test_scene_does_not_depend_on_drive_length():
    short = SyntheticStreet(SynthConfig(size=(160, 48), seed=5), frames=2)
    long = SyntheticStreet(SynthConfig(size=(160, 48), seed=5), frames=40)
    np.testing.assert_array_equal(short.render(1, "day-clear")[0], long.render(1, "day-clear")[0])


def test_ground_depth_matches_camera_height(street):
    """Level camera 1.5 m above a flat road: a ground pixel in row v has z = h fy / (v - cy)
    whatever the yaw (catches a flipped y axis, a wrong height or a focal-length slip)."""
    K = street.intrinsics
    for frame in (0, 3):
        geom = street.geometry(frame)
        ground = _pixel_objects(street, frame) == GROUND
        rows = np.nonzero(ground.any(axis=1))[0]
        assert rows.min() > K.cy  # the road is only below the horizon
        v = np.broadcast_to(np.arange(K.height)[:, None], ground.shape)[ground]
        expected = 1.5 * K.fy / (v - K.cy)
        np.testing.assert_allclose(geom.depth[ground], expected, rtol=1e-5)
        assert ground.mean() > 0.15
        # Sky (+inf: REP 117 "no return", units.py; never NaN) only above the horizon, or
        # just below it where the road ends 300 m ahead (1.5 m drop seen from 300 m:
        # 1.5 fy / 300 = 1.9 px).
        sky = np.isposinf(geom.depth)
        assert not np.isnan(geom.depth).any()
        assert sky.any() and np.nonzero(sky.any(axis=1))[0].max() < K.cy + 1.5 * K.fy / 300 + 1
        assert geom.depth.min() > 0


def test_intrinsics_are_kitti_like():
    K = SynthConfig(size=(640, 192)).intrinsics
    assert K.fx == K.fy == pytest.approx(0.58 * 640)
    assert (K.cx, K.cy) == (319.5, 95.5)
    hfov = np.degrees(2 * np.arctan(K.width / 2 / K.fx))
    assert 75 < hfov < 95


def test_trajectory_speed_and_gentle_yaw(street):
    traj = street.trajectory
    for t in np.linspace(0.0, 6.0, 13):
        speed, yaw_rate = traj.twist(t)
        assert 8.0 <= speed <= 12.0
        # Numerical derivatives of the closed-form pose agree with the twist.
        dt = 1e-4
        p0, p1 = traj.position(t - dt), traj.position(t + dt)
        assert np.linalg.norm(p1 - p0) / (2 * dt) == pytest.approx(speed, rel=1e-6)
        assert (traj.yaw(t + dt) - traj.yaw(t - dt)) / (2 * dt) == pytest.approx(
            yaw_rate, rel=1e-4, abs=1e-8)
        assert abs(np.degrees(traj.yaw(t))) < 5.0


def _pixel_objects(street: SyntheticStreet, frame: int) -> np.ndarray:
    """[H,W] object hit at each pixel centre (box index, GROUND or SKY)."""
    return street.geometry(frame).objects


def test_standing_vehicle_sees_only_the_traffic_move():
    street = SyntheticStreet(SynthConfig(size=(160, 48), speed=0.0, seed=2,
                                         moving_car_probability=1.0), frames=20)
    np.testing.assert_allclose(street.T_src_tgt(19, 0), np.eye(4), atol=1e-12)
    assert street.trajectory.twist(0.1) == (0.0, 0.0)
    moving = np.nonzero(street.scene.kind == MOVING_CAR)[0]
    obj0, depth0 = _pixel_objects(street, 0), street.render(0)[1]
    obj1, depth1 = _pixel_objects(street, 19), street.render(19)[1]
    traffic = np.isin(obj0, moving) | np.isin(obj1, moving)
    assert traffic.any() and (depth0[traffic] != depth1[traffic]).any()
    np.testing.assert_array_equal(depth0[~traffic], depth1[~traffic])


def test_footprint_filtering_of_patterns():
    """A 0.1 m line seen through a 1 m pixel covers 10 %; periodic bands average out."""
    x = np.array([0.0, 0.3, 0.05])
    np.testing.assert_allclose(band_coverage(x, -0.05, 0.05, np.array([1.0, 1.0, 0.02])),
                               [0.1, 0.1, 0.5])
    # 3 m dashes every 9 m, footprint 90 m: one third covered wherever we look.
    np.testing.assert_allclose(
        periodic_coverage(np.array([0.0, 4.0, 123.4]), 9.0, 0.0, 3.0, np.full(3, 90.0)),
        1.0 / 3.0, atol=1e-9)
    # Tiny footprint: inside vs outside the dash.
    np.testing.assert_allclose(
        periodic_coverage(np.array([1.0, 5.0, 19.5]), 9.0, 0.0, 3.0, np.full(3, 1e-3)),
        [1.0, 0.0, 1.0])


def test_culling_changes_nothing():
    """Per-box image windows (camera) and angular windows (LiDAR) only skip rays that
    cannot hit the box: the same pixels and points as testing every box on every ray."""
    config = SynthConfig(size=(96, 32), seed=5, moving_car_probability=1.0)
    culled = SyntheticStreet(config, frames=30)
    full = SyntheticStreet(config, frames=30)
    full.cull = False
    for frame in (0, 29):
        for condition in ("day-clear", "night"):
            a, b = culled.render(frame, condition), full.render(frame, condition)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(culled.lidar_scan(frame), full.lidar_scan(frame))


def test_lidar_scan_pattern(street):
    scan = street.lidar_scan(2)
    assert scan.dtype == np.float32 and scan.shape[1] == 4
    xyz = scan[:, :3].astype(np.float64)
    rng_ = np.linalg.norm(xyz, axis=1)
    assert rng_.max() <= 80.0 + 1e-3 and rng_.min() >= 0.5
    elevation = np.degrees(np.arcsin(xyz[:, 2] / rng_))
    rings = np.unique(np.round(elevation, 2))
    assert len(rings) == 32
    np.testing.assert_allclose([rings.min(), rings.max()], [-25.0, 15.0], atol=0.01)
    # 360 deg coverage, points all around the vehicle.
    azimuth = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    assert np.histogram(azimuth, bins=36, range=(-180, 180))[0].min() > 0
    # Steep beams hit the flat road 1.8 m below the sensor (lidar frame, z up).
    steep = elevation < -15.0
    assert np.median(xyz[steep, 2]) == pytest.approx(-1.8, abs=1e-4)
    assert 0 < scan[:, 3].min() and scan[:, 3].max() <= 255.0 and scan[:, 3].std() > 5.0


# --------------------------------------------------------------------------------------
# bags
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_topics_types_counts_and_condition(storage, bags, tmp_path):
    from rosbags.rosbag2 import Reader

    if storage == "mcap":
        paths = bags
        frames = FRAMES
    else:
        frames = 3
        paths = dict(zip(("day-clear", "snow"), make_synthetic_bags(
            tmp_path, frames=frames, size=(160, 48), conditions=("day-clear", "snow"),
            seed=1, storage="sqlite3")))
    for condition, path in paths.items():
        assert path.name == condition
        with Reader(path) as reader:
            topics = {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
        meta = yaml.safe_load((path / "metadata.yaml").read_text())
        assert meta["rosbag2_bagfile_information"]["storage_identifier"] == storage
        expected = {t: (ty, 1 if t == "/tf_static" else frames)
                    for t, ty in EXPECTED_TYPES.items()}
        assert topics == expected
        assert set(TOPICS.values()) == set(expected)
        custom = _custom_data(path)
        assert custom["condition"] == condition
        # /tf_static is offered latched (transient local), like a real static publisher.
        static = [t for t in meta["rosbag2_bagfile_information"]["topics_with_message_count"]
                  if t["topic_metadata"]["name"] == "/tf_static"][0]
        assert "transient_local" in str(static["topic_metadata"]["offered_qos_profiles"])
    # No temporary folders left behind.
    parent = next(iter(paths.values())).parent
    assert sorted(p.name for p in parent.iterdir()) == sorted(paths)


def test_bag_messages_match_renderer(bags, street):
    msgs = _read_all(bags["night"])
    K = street.intrinsics
    stamps = [s for s, _ in msgs["/camera/image_raw"]]
    assert stamps == [street.stamp_ns(k / 10.0) for k in range(FRAMES)]
    images, depths = msgs["/camera/image_raw"], msgs["/ground_truth/depth"]
    for k, ((stamp, msg), (depth_stamp, depth)) in enumerate(zip(images, depths)):
        assert msg.encoding == "rgb8" and msg.header.frame_id == "camera_optical_frame"
        assert depth.encoding == "32FC1" and depth.header.frame_id == "camera_optical_frame"
        assert conv.stamp_to_ns(msg.header.stamp) == stamp == depth_stamp
        assert conv.stamp_to_ns(depth.header.stamp) == stamp
        if k in (0, FRAMES - 1):  # the same pixels as rendering without a bag
            rgb, gt = street.render(k, "night")
            np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)
            np.testing.assert_array_equal(conv.image_to_depth(depth), gt)
    for stamp, info in msgs["/camera/camera_info"]:
        assert conv.camera_info_to_intrinsics(info) == K
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)
        assert info.header.frame_id == "camera_optical_frame"
    # LiDAR on its own clock, a few ms after the camera, in the lidar frame.
    for k, (stamp, cloud) in enumerate(msgs["/lidar/points"]):
        assert stamp == stamps[k] + 4_000_000
        assert cloud.header.frame_id == "lidar"
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
        np.testing.assert_array_equal(conv.cloud_to_numpy(cloud, ("x", "y", "z", "intensity")),
                                      street.lidar_scan(k))


@pytest.mark.parametrize("image_format, condition", [("png", "night"), ("jpeg", "day-clear")])
def test_compressed_camera_images(image_format, condition, tmp_path):
    from depth_perception.data.samples import BagSequence, SampleConfig

    bag, = make_synthetic_bags(tmp_path, frames=3, size=(96, 32), conditions=(condition,),
                               seed=4, image_format=image_format)
    msgs = _read_all(bag)
    assert "/camera/image_raw" not in msgs
    images = msgs["/camera/image_raw/compressed"]
    assert len(images) == 3 and image_format in images[0][1].format
    street = SyntheticStreet(SynthConfig(size=(96, 32), seed=4), frames=3)
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False))
    for k in range(3):
        decoded = seq.frame(k).astype(np.int16)
        rendered = street.render(k, condition)[0].astype(np.int16)
        if image_format == "png":  # lossless, sensor noise included
            np.testing.assert_array_equal(decoded, rendered)
        else:  # JPEG at quality 90: close to its own frame, far from the next one
            other = street.render((k + 1) % 3, condition)[0].astype(np.int16)
            error = np.abs(decoded - rendered).mean()
            assert error < 8.0 and error < 0.3 * np.abs(decoded - other).mean()


def test_static_tf_and_odometry(bags):
    from depth_perception.data.tf import transform_from_msg

    msgs = _read_all(bags["day-clear"])
    (stamp0, static), = msgs["/tf_static"]
    assert stamp0 <= msgs["/camera/image_raw"][0][0]
    edges = {(t.header.frame_id, t.child_frame_id): transform_from_msg(t.transform)
             for t in static.transforms}
    T_cam = edges[("base_link", "camera_optical_frame")]
    T_lidar = edges[("base_link", "lidar")]
    # Optical z (forward) is base x, optical x (right) is -base y, optical y (down) -base z.
    np.testing.assert_allclose(T_cam[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T_cam[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(T_cam[:3, :3] @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    assert T_cam[2, 3] == pytest.approx(1.5) and T_lidar[2, 3] == pytest.approx(1.8)
    odom = [m for _, m in msgs["/odom"]]
    tf = [m for _, m in msgs["/tf"]]
    assert all(m.header.frame_id == "odom" and m.child_frame_id == "base_link" for m in odom)
    for k in range(len(odom) - 1):
        # /tf and /odom carry the same pose; the speed is the distance travelled per 0.1 s.
        T_tf = transform_from_msg(tf[k].transforms[0].transform)
        p = odom[k].pose.pose.position
        np.testing.assert_allclose(T_tf[:3, 3], [p.x, p.y, p.z], atol=1e-12)
        p1 = odom[k + 1].pose.pose.position
        step = np.hypot(p1.x - p.x, p1.y - p.y)
        v0, v1 = odom[k].twist.twist.linear.x, odom[k + 1].twist.twist.linear.x
        assert step / 0.1 == pytest.approx((v0 + v1) / 2, rel=2e-3)
        assert 8.0 < v0 < 12.0 and p.z == 0.0
        # angular.z is the yaw rate: the heading change per 0.1 s (sign included).
        yaw = [np.arctan2(R[1, 0], R[0, 0]) for R in
               (transform_from_msg(tf[j].transforms[0].transform)[:3, :3] for j in (k, k + 1))]
        w0, w1 = odom[k].twist.twist.angular.z, odom[k + 1].twist.twist.angular.z
        assert (yaw[1] - yaw[0]) / 0.1 == pytest.approx((w0 + w1) / 2, abs=5e-4)
    rates = [m.twist.twist.angular.z for m in odom]
    assert max(np.abs(rates)) > 0.005  # the vehicle does turn


def test_conditions_share_geometry_but_not_appearance(bags):
    depth, grey = {}, {}
    for condition, path in bags.items():
        msgs = _read_all(path)
        depth[condition] = np.stack([conv.image_to_depth(m) for _, m in
                                     msgs["/ground_truth/depth"]])
        grey[condition] = np.stack([cv2.cvtColor(conv.image_to_rgb(m), cv2.COLOR_RGB2GRAY)
                                    for _, m in msgs["/camera/image_raw"]]).astype(np.float64)
    for condition in ("night", "rain"):
        assert depth[condition].tobytes() == depth["day-clear"].tobytes()
        assert np.mean(grey[condition] != grey["day-clear"]) > 0.5
    day, night, rain = grey["day-clear"], grey["night"], grey["rain"]
    assert night.mean() < 0.5 * day.mean()
    # RMS contrast per frame: rain (fog, flat light, blur) is clearly flatter.
    assert (rain.std(axis=(1, 2)) < 0.8 * day.std(axis=(1, 2))).all()


def test_warping_with_gt_depth_and_odometry_explains_the_next_frame(bags, street):
    """(a) Texture, depth, pose and K agree: warping frame t+1 into t with the ground
    truth of t, the odometry/TF pose and the CameraInfo K leaves a photometric error
    below a quarter of not warping; the wrong sign of translation is far worse. Oncoming
    cars move, so their pixels are left out (their textured flanks do not warp)."""
    from depth_perception.data.samples import BagSequence, SampleConfig

    seq = BagSequence(bags["day-clear"], SampleConfig(offsets=(1,), with_lidar=False))
    moving = np.nonzero(street.scene.kind == MOVING_CAR)[0]
    assert len(seq) == FRAMES - 1
    right, wrong, identity = [], [], []
    for sample in seq:
        target = sample.image.astype(np.float32) / 255.0
        source = sample.context[1].astype(np.float32) / 255.0
        T = sample.T_src_tgt[1]
        np.testing.assert_allclose(T, street.T_src_tgt(sample.index + 1, sample.index),
                                   atol=1e-6)
        assert sample.distance[1] == pytest.approx(1.0, rel=0.02)  # 10 m/s at 10 Hz
        K = sample.intrinsics.K
        depth = sample.gt_depth.astype(np.float64)
        flipped = T.copy()
        flipped[:3, 3] *= -1.0
        warped, ok = _warp(source, depth, K, T)
        warped_wrong, ok_wrong = _warp(source, depth, K, flipped)
        static = ~np.isin(_pixel_objects(street, sample.index), moving)
        mask = np.isfinite(depth) & ok & ok_wrong & static
        assert mask.mean() > 0.5
        right.append(_photometric_error(target, warped)[mask].mean())
        wrong.append(_photometric_error(target, warped_wrong)[mask].mean())
        identity.append(_photometric_error(target, source)[mask].mean())
    right, wrong, identity = map(np.mean, (right, wrong, identity))
    assert right < 0.25 * identity, (right, identity)
    assert wrong > 3.0 * right, (wrong, right)


def test_lidar_agrees_with_ground_truth_depth(bags):
    """(b) LiDAR (own clock, moved to the image time through TF/odometry) projected with
    K lands on pixels whose ground-truth depth it matches: median relative gap < 1 %."""
    from depth_perception.data.samples import BagSequence, SampleConfig

    seq = BagSequence(bags["rain"], SampleConfig(offsets=(-1, 1)))
    assert len(seq) == FRAMES - 2
    gaps = []
    for sample in seq:
        assert sample.condition == "rain"
        lidar, gt = sample.lidar_depth, sample.gt_depth
        both = np.isfinite(lidar) & np.isfinite(gt)
        assert both.sum() > 1000
        gaps.append(np.abs(lidar[both] - gt[both]) / gt[both])
    gaps = np.concatenate(gaps)
    assert np.median(gaps) < 0.01
    # A 50 ms clock slip (0.83) or a LiDAR mounted 10 cm off (0.60) fails this.
    assert np.mean(gaps < 0.05) > 0.9


# --------------------------------------------------------------------------------------
# bad input and command line
# --------------------------------------------------------------------------------------

def test_bad_input_is_refused_and_nothing_is_lost(tmp_path):
    with pytest.raises(ValueError, match="fog"):
        make_synthetic_bags(tmp_path, frames=1, size=(64, 32), conditions=("day-clear", "fog"))
    with pytest.raises(ValueError, match="storage"):
        make_synthetic_bags(tmp_path, frames=1, size=(64, 32), storage="rosbag1")
    with pytest.raises(ValueError, match="frames"):
        make_synthetic_bags(tmp_path, frames=0, size=(64, 32))
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("640by192")
    with pytest.raises(ValueError, match="image format"):
        make_synthetic_bags(tmp_path, frames=1, size=(64, 32), image_format="bmp")
    assert list(tmp_path.iterdir()) == []
    # An existing folder of the same name is kept unless asked to overwrite, and a
    # folder that is not a bag is never overwritten.
    keep = tmp_path / "night"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        make_synthetic_bags(tmp_path, frames=1, size=(64, 32), conditions=("night",))
    with pytest.raises(ValueError, match="not a rosbag2"):
        make_synthetic_bags(tmp_path, frames=1, size=(64, 32), conditions=("night",),
                            overwrite=True)
    assert (keep / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night"]


def test_overwrite_replaces_a_bag(tmp_path):
    first, = make_synthetic_bags(tmp_path, frames=1, size=(64, 32), conditions=("rain",),
                                 seed=1, storage="sqlite3")
    again, = make_synthetic_bags(tmp_path, frames=2, size=(64, 32), conditions=("rain",),
                                 seed=2, storage="mcap", overwrite=True)
    assert again == first
    meta = yaml.safe_load((again / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["message_count"] == 1 + 2 * 8


def test_failed_run_keeps_the_old_bag_and_leaves_no_partial_one(tmp_path):
    old, = make_synthetic_bags(tmp_path, frames=1, size=(64, 32), conditions=("rain",))
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def interrupt(done, total):
        if done == 2:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        make_synthetic_bags(tmp_path, frames=4, size=(64, 32), conditions=("rain", "night"),
                            seed=9, overwrite=True, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rain"]
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_cli_writes_bags(tmp_path):
    from depth_perception.cli import main

    out = tmp_path / "out"
    assert main(["synth", str(out), "--frames", "2", "--size", "96x32", "--conditions",
                 "day-clear,snow", "--seed", "7", "--storage", "sqlite3",
                 "--image-format", "jpeg", "--speed", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["day-clear", "snow"]
    assert _custom_data(out / "snow")["condition"] == "snow"
    msgs = _read_all(out / "snow")
    assert len(msgs["/camera/image_raw/compressed"]) == 2
    assert msgs["/odom"][0][1].twist.twist.linear.x == pytest.approx(8.0, rel=1e-3)
    assert main(["synth", str(out), "--frames", "1", "--size", "96x32",
                 "--conditions", "fog"]) == 2
    # As an installed executable, in its own process.
    exe = Path(sys.executable).with_name("depth-perception")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "depth_perception"]
    done = subprocess.run(command + ["synth", str(tmp_path / "cli"), "--frames", "2",
                                     "--size", "64x32", "--conditions", "night"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _custom_data(tmp_path / "cli" / "night")["condition"] == "night"
    # Another process, the same seed: the very same bytes on disk.
    here, = make_synthetic_bags(tmp_path / "here", frames=2, size=(64, 32),
                                conditions=("night",))
    for name in ("night.mcap", "metadata.yaml"):
        assert (here / name).read_bytes() == (tmp_path / "cli" / "night" / name).read_bytes()
    bad = subprocess.run(command + ["synth", str(tmp_path / "bad"), "--size", "64-32"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr


def test_varied_rig_pitch_and_height_give_the_ground_depth_by_hand():
    """A camera h metres up, pitched down by p: a ground pixel in row v (y = (v - cy) / f)
    lies at z-depth h / (y cos p + sin p). A sign slip in the pitch moves the horizon."""
    config = SynthConfig.varied(3, size=(160, 48), sway_amplitude=0.0)
    assert config.camera_pitch != 0 and config.camera_xyz[2] != 1.5
    street = SyntheticStreet(config, frames=2)
    K = street.intrinsics
    geom = street.geometry(0)
    h, p = config.camera_xyz[2], np.radians(config.camera_pitch)
    rows, cols = np.nonzero(geom.objects == GROUND)
    y = (rows - K.cy) / K.fy
    expected = h / (y * np.cos(p) + np.sin(p))
    np.testing.assert_allclose(geom.depth[rows, cols], expected, rtol=1e-5)


def test_varied_drives_differ_and_keep_lead_cars_ahead():
    a, b = SynthConfig.varied(1), SynthConfig.varied(2)
    assert (a.camera_xyz, a.camera_pitch, a.speed) != (b.camera_xyz, b.camera_pitch, b.speed)
    config = SynthConfig.varied(1, size=(96, 32), lead_vehicles=2)
    street = SyntheticStreet(config, frames=60)
    scene = street.scene
    leads = np.nonzero((scene.velocity > 0))[0]
    assert len(leads) == 2
    for frame in (0, 30, 59):
        t = street.frame_time(frame)
        lo, _ = scene.boxes_at(t)
        camera_x = street.T_odom_camera(t)[0, 3]
        assert (lo[leads, 0] - camera_x >= 6.9).all()
    # cross streets clear the roadside: some 12 m stretch without buildings on both sides
    crossing = SyntheticStreet(SynthConfig(size=(96, 32), seed=4, intersection_probability=1.0),
                               frames=10).scene
    far = (crossing.kind == 0) & (np.abs(crossing.lo[:, 1]) > 30)
    assert far.sum() >= 2


def test_varied_drives_keep_the_ego_body_in_its_lane():
    """The ego body (1.8 m wide) weaves inside its own lane, so no drive brushes a parked
    car or the oncoming lane (weaves of up to 1.4 m did both)."""
    from depth_perception.synth.layout import CAR, CARRIAGEWAY_HALF, EGO_HALF_WIDTH, Trajectory

    for seed in range(30):
        config = SynthConfig.varied(seed, size=(96, 32))
        y = np.array([Trajectory(config).position(t)[1] for t in np.linspace(0.0, 12.0, 241)])
        assert y.min() - EGO_HALF_WIDTH >= -CARRIAGEWAY_HALF, seed
        assert y.max() + EGO_HALF_WIDTH <= 0.0, seed
    scene = SyntheticStreet(SynthConfig.varied(5, size=(96, 32)), frames=2).scene
    parked = (scene.kind == CAR) & (scene.velocity == 0)
    assert parked.any() and (np.abs(scene.lo[parked, 1]).min() > CARRIAGEWAY_HALF)
