"""TF at runtime over real DDS: tf2_msgs built pip-only, the node's TF source, the scale
policies taking camera<-LiDAR and the camera height from TF, and replayed /tf_static
reaching late subscribers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.ros.tf_listener import camera_height_and_pitch  # noqa: E402
from support.rostools import RosHarness, node_state, stamp_ns, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
IMAGE, INFO, LIDAR, TF_STATIC, GT = ("/camera/image_raw", "/camera/camera_info",
                                     "/lidar/points", "/tf_static", "/ground_truth/depth")
W, H = 112, 56  # multiples of 14: the model input is the camera image itself
META = ModelMetadata(output_kind="metric_depth", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     min_depth=0.05, max_depth=500.0)
#: camera optical frame axes in base_link: x_opt = -y, y_opt = -z, z_opt = x (REP 103)
Q_BASE_OPTICAL = (-0.5, 0.5, -0.5, 0.5)


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    return make_synthetic_bags(tmp_path_factory.mktemp("bags"), frames=6, size=(W, H),
                               conditions=("day-clear",), seed=5)[0]


def bag_messages(path, topic):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [store.deserialize_cdr(raw, c.msgtype)
                for c, _, raw in reader.messages(connections=conns)]


def transform_stamped(parent, child, xyz, quat=(0.0, 0.0, 0.0, 1.0)):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped(child_frame_id=child)
    t.header.frame_id = parent
    t.header.stamp.sec = 100
    tr, r = t.transform.translation, t.transform.rotation
    tr.x, tr.y, tr.z = xyz
    r.x, r.y, r.z, r.w = quat
    return t


def estimator_factory(fn):
    from depth_perception.runtime.estimator import DepthEstimator
    from support.models_fixtures import FunctionBackend

    def factory(settings):
        return DepthEstimator(FunctionBackend(fn, META), META, settings.scale_policy,
                              scale_params=settings.scale_params(),
                              **settings.estimator_options())
    return factory


def make_node(ros, policy: str, fn, **params):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter

    params = {"model": "fake", "scale_policy": policy, "input_short_side": H,  # the camera size
              "lidar_topic": LIDAR, **params}
    return ros.add(DepthNode(
        context=ros.context, estimator_factory=estimator_factory(fn),
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        cli_args=["--ros-args", "-r", f"image:={IMAGE}", "-r", f"camera_info:={INFO}"]))


# ---------------------------------------------------------------------------------------
def test_camera_height_and_pitch_hand_numbers():
    from depth_perception.data.tf import make_transform

    T = make_transform((1.0, 0.0, 1.4), Q_BASE_OPTICAL)
    np.testing.assert_allclose(T[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    assert camera_height_and_pitch(T) == pytest.approx((1.4, 0.0), abs=1e-9)
    # pitched 10 deg down: rotate the optical frame about its x axis (right) by -10 deg...
    a = np.radians(-10.0)
    Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    T2 = T.copy()
    T2[:3, :3] = T[:3, :3] @ Rx  # optical z tilts towards optical +y (down)
    height, pitch = camera_height_and_pitch(T2)
    assert height == pytest.approx(1.4) and pitch == pytest.approx(10.0)
    with pytest.raises(ValueError, match="4x4"):
        camera_height_and_pitch(np.eye(3))


def test_tf_static_before_node_start_reaches_node_tf_source(tf2_msgs_built):
    """(a) latched /tf_static published before the node exists; camera<-lidar from TF."""
    from depth_perception.ros.tf_listener import tf_qos
    from tf2_msgs.msg import TFMessage

    with RosHarness() as ros:
        pub = ros.helper.create_publisher(TFMessage, TF_STATIC, tf_qos(static=True))
        pub.publish(TFMessage(transforms=[
            transform_stamped("base_link", "camera_optical_frame", (1.0, 0.0, 1.4),
                              Q_BASE_OPTICAL),
            transform_stamped("base_link", "lidar", (0.5, 0.2, 1.9))]))
        node = make_node(ros, "lidar_median", lambda x: np.ones((1, 1, *x.shape[2:])))
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        tf = node.transforms
        wait_for(lambda: tf._tf is not None and tf._tf.received["static"] >= 2, 30,
                 "the node's TF source to receive the latched /tf_static")
        assert tf._tf.backend in ("tf_messages", "tf2_ros")
        T = tf._tf.lookup("camera_optical_frame", "lidar", None)
        # hand-worked: R = optical<-base rotation, t = R (t_lidar - t_camera)
        want = np.array([[0, -1, 0, -0.2],
                         [0, 0, -1, -0.5],
                         [1, 0, 0, -0.5],
                         [0, 0, 0, 1]], dtype=float)
        np.testing.assert_allclose(T, want, atol=1e-9)
        # a point 10 m ahead of the lidar is 9.5 m ahead of the camera, 0.5 m above it
        np.testing.assert_allclose(T @ [10, 0, 0, 1], [-0.2, -0.5, 9.5, 1], atol=1e-9)
        # the node's own lookup (cloud frame -> image frame) uses TF, not the parameter
        settings = node._settings
        np.testing.assert_allclose(
            tf.camera_from_lidar("camera_optical_frame", "lidar", 150, 123, settings), want,
            atol=1e-9)
        assert tf._sources["camera<-lidar transform"].startswith("from TF")
        # an unknown frame falls back to the lidar_to_camera parameter (and says so)
        fallback = tf.camera_from_lidar("camera_optical_frame", "velodyne", 0, 0, settings)
        np.testing.assert_allclose(fallback.ravel(), settings.lidar_to_camera)
        assert "lidar_to_camera" in tf._sources["camera<-lidar transform"]


def test_node_lidar_reference_is_the_data_layers_with_ego_motion(tf2_msgs_built, tmp_path):
    """A drive at 2 m/s with odometry on /tf and scans 40 ms after their images: the
    node's lidar_median reference for an image (TF, cloud and odometry over DDS) is the
    sparse depth BagSequence computes for it, moved to the image time through odom (the
    uncompensated projection differs, so the test tells them apart)."""
    import rclpy
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.ros.camera_pipeline import Frame
    from depth_perception.ros.replay import replay_bag
    from support.bagtools import INTRINSICS, frame_image, make_drive_bag
    from support.rostools import camera_info_msg, image_msg

    n, period, offset = 4, 100_000_000, 40_000_000
    points = np.array([[11.0, -0.8, -0.5], [15.0, 1.0, -0.3], [8.0, 0.5, 0.2]])
    bag = make_drive_bag(tmp_path / "drive", "mcap", n=n, lidar_points=points,
                         lidar_offset_ns=offset, odom_in_tf=True)
    last = n - 1
    image_stamp = 10**9 + last * period
    want = BagSequence(bag, SampleConfig()).lidar_depth(last)
    plain = BagSequence(bag, SampleConfig(motion_compensation=False)).lidar_depth(last)
    assert np.isfinite(want).sum() == 3
    assert not np.allclose(np.nan_to_num(want), np.nan_to_num(plain), atol=1e-3)
    with RosHarness() as ros:
        node = make_node(ros, "lidar_median", lambda x: np.ones((1, 1, *x.shape[2:])))
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        player = rclpy.create_node("tf_motion_replay", context=ros.context)
        topics = [TF_STATIC, "/tf", LIDAR]
        try:
            stats = replay_bag(bag, player, topics=topics, rate=2.0, wait_for=topics)
        finally:
            player.destroy_node()
        assert stats.published["/tf"] == 2 * n and stats.published[LIDAR] == n
        odom_end = image_stamp + period // 2

        def ready():
            cloud = node.lidar_cloud
            try:
                node.transforms._tf.lookup("odom", "base_link", odom_end, latest=False)
            except ValueError:
                return False
            return cloud is not None and cloud[2] == image_stamp + offset
        wait_for(ready, 30, "odometry and the last scan at the node")
        frame = Frame(image_msg(frame_image(last), image_stamp),
                      camera_info_msg(INTRINSICS, image_stamp), 0.0)
        job = node.cameras[0].prepare(frame, node._estimator, node.settings)
    np.testing.assert_allclose(job.input.reference_depth, want, atol=1e-5)
    assert node.transforms._sources["camera<-lidar transform"].startswith("from TF")


def gt_third_model(bag):
    """Model whose depth is the bag's ground truth / 3, looked up by the image bytes."""
    from depth_perception.conversions import image_to_depth, image_to_rgb

    truth = {stamp_ns(m): image_to_depth(m) for m in bag_messages(bag, GT)}
    table, by_stamp = {}, {}
    for msg in bag_messages(bag, IMAGE):
        gt = truth[stamp_ns(msg)]
        table[image_to_rgb(msg).tobytes()] = np.where(np.isfinite(gt), gt / 3.0,
                                                      400.0 / 3.0)
        by_stamp[stamp_ns(msg)] = gt
    assert len(table) == len(by_stamp), "synthetic frames must differ"

    def fn(x):
        rgb = np.rint(x[0].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        return table[rgb.tobytes()][None, None].astype(np.float32)
    return fn, by_stamp


@pytest.mark.parametrize("policy", ["lidar_median", "ground_plane"])
@pytest.mark.parametrize("use_tf", [True, False], ids=["tf", "parameters"])
def test_replayed_bag_scale_from_tf_static(tf2_msgs_built, synth_bag, policy, use_tf):
    """(b) depth = truth / 3; the scale (3) is recovered with the transforms from
    /tf_static alone: no lidar_to_camera given, camera_height deliberately wrong.
    Control (use_tf false): deliberately wrong parameters (lidar_to_camera 5 m off
    along the optical axis, camera_height 0.7 m) give a scale off by more than 5%, so
    the transforms from TF are what made the difference (the default lidar_to_camera,
    a pure rotation, is only ~5-10% off on this rig: too close to tell apart)."""
    from depth_perception.ros.params import LIDAR_TO_OPTICAL
    from depth_perception.conversions import image_to_depth
    from depth_perception.data.tf import TfBuffer
    import rclpy
    from depth_perception.ros.replay import replay_bag
    from sensor_msgs.msg import Image

    fn, truth = gt_third_model(synth_bag)
    tf = TfBuffer()
    tf.add_tf_message(bag_messages(synth_bag, TF_STATIC)[0], static=True)
    bag_height = tf.lookup("base_link", "camera_optical_frame", 0)[2, 3]
    assert bag_height == pytest.approx(1.5)
    with RosHarness() as ros:
        wrong = list(LIDAR_TO_OPTICAL)
        wrong[11] = 5.0                          # row 2, column 3: z translation [m]
        node = make_node(ros, policy, fn, camera_height=0.7, use_tf=use_tf,
                         lidar_to_camera=wrong)
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        depth_out = ros.collect(Image, "/depth/image")
        topics = [TF_STATIC, IMAGE, INFO] + ([LIDAR] if policy == "lidar_median" else [])
        # the player's node is not spun (publishers need no executor), so closing its
        # publishers cannot race the executor's wait set
        player = rclpy.create_node("tf_test_replay", context=ros.context)
        try:
            stats = replay_bag(synth_bag, player, topics=topics, rate=2.0,
                               wait_for=topics if use_tf else topics[1:])
        finally:
            player.destroy_node()
        assert stats.published[TF_STATIC] == 1 and not stats.skipped
        last = max(truth)
        depth_out.wait(lambda ms: any(stamp_ns(m) == last for m in ms), 30, "the last frame")
        assert node.stats.last_scale_source == policy
        if not use_tf:
            assert node.stats.last_scale != pytest.approx(3.0, rel=0.05)
            assert "use_tf is false" in node.transforms._sources[
                "camera<-lidar transform" if policy == "lidar_median" else "camera height"]
            return
        assert node.stats.last_scale == pytest.approx(3.0, rel=0.05)
        msg = next(m for m in depth_out.messages if stamp_ns(m) == last)
        depth, gt = image_to_depth(msg), truth[last]
        ok = np.isfinite(depth) & np.isfinite(gt)
        assert ok.sum() > 0.3 * depth.size
        assert float(np.median(depth[ok] / gt[ok])) == pytest.approx(1.0, rel=0.05)
        if policy == "lidar_median":
            assert node.transforms._sources["camera<-lidar transform"].startswith("from TF")
        else:
            assert node.transforms._sources["camera height"].startswith("from TF")
            assert node._estimator.scale_policy.camera_height == pytest.approx(1.5)
            assert node._estimator.scale_policy.pitch_deg == pytest.approx(0.0, abs=1e-6)


def test_cli_replay_latches_tf_static_for_late_subscribers(tf2_msgs_built, synth_bag):
    """(c) `depth-perception replay` publishes /tf_static transient-local."""
    from depth_perception.ros.tf_listener import tf_qos
    from rclpy.qos import DurabilityPolicy
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    want = bag_messages(synth_bag, TF_STATIC)[0]
    with RosHarness() as ros:
        images = ros.collect(Image, IMAGE)
        proc = subprocess.Popen(
            [sys.executable, "-m", "depth_perception", "replay", str(synth_bag), "--loop",
             "--rate", "0.5", "--topics", TF_STATIC, IMAGE, "--wait-for", IMAGE],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            try:
                images.wait_count(1, timeout=60)  # playing: /tf_static (first in the bag) is out
            except AssertionError as e:           # say what the replayer printed
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
                raise AssertionError(f"{e}; replay exited {proc.returncode}\nstdout: "
                                     f"{out[-2000:]}\nstderr: {err[-2000:]}") from e
            late = ros.collect(TFMessage, TF_STATIC, qos=tf_qos(static=True))
            got = late.wait_count(1)[0]
            assert [(t.header.frame_id, t.child_frame_id) for t in got.transforms] == \
                [(t.header.frame_id, t.child_frame_id) for t in want.transforms]
            for a, b in zip(got.transforms, want.transforms):
                ta, tb = a.transform.translation, b.transform.translation
                assert (ta.x, ta.y, ta.z) == (tb.x, tb.y, tb.z)
            infos = ros.helper.get_publishers_info_by_topic(TF_STATIC)
            assert infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                 for i in infos)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH",
                        # the wheels' bootstrap .pth re-execs a fresh python with its
                        # LD_LIBRARY_PATH unless this guard says it already did
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    return {**env, **extra}


def test_build_script_is_idempotent_and_never_shadows_a_real_tf2_msgs(tf2_msgs_built,
                                                                      tmp_path):
    """Second run: nothing rebuilt. A fresh interpreter (no PYTHONPATH/LD_LIBRARY_PATH)
    imports and serialises TFMessage; a tf2_msgs earlier on the path (a sourced ROS 2)
    wins over the vendored one."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: tf2_msgs cannot be built (apt install cmake)")
    venv = Path(sys.prefix)
    proc = subprocess.run(["bash", str(ROOT / "scripts/build_interfaces.sh")],
                          env=_clean_env(VENV=str(venv)), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "building" not in proc.stdout, proc.stdout
    assert ("up to date" in proc.stdout and "tf2_msgs_vendored" in proc.stdout) \
        or "tf2_msgs found at" in proc.stdout, proc.stdout
    check = ("from tf2_msgs.msg import TFMessage\n"
             "from geometry_msgs.msg import TransformStamped\n"
             "from rclpy.serialization import serialize_message, deserialize_message\n"
             "t = TransformStamped(child_frame_id='lidar')\n"
             "t.transform.rotation.w = 0.5\n"
             "m = deserialize_message(serialize_message(TFMessage(transforms=[t])), TFMessage)\n"
             "assert m.transforms[0].transform.rotation.w == 0.5\n"
             "import tf2_msgs; print(tf2_msgs.__file__)\n")
    out = subprocess.run([sys.executable, "-c", check], env=_clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # a "sourced ROS 2" tf2_msgs on PYTHONPATH comes first
    fake = tmp_path / "tf2_msgs"
    (fake / "msg").mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL_ROS = True\n")
    (fake / "msg" / "__init__.py").write_text("")
    out = subprocess.run([sys.executable, "-c", "import tf2_msgs; print(tf2_msgs.REAL_ROS)"],
                         env=_clean_env(PYTHONPATH=str(tmp_path)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_tf_source_dynamic_interpolation_latest_fallback_and_bad_transforms(tf2_msgs_built):
    """The own-buffer path: /tf interpolated at the stamp; a stamp past the newest
    transform falls back to the latest; unknown frames and zero quaternions are errors
    that name the problem."""
    from depth_perception.data.tf import TransformError
    from depth_perception.ros.tf_listener import TfSource
    from tf2_msgs.msg import TFMessage

    def odom_base(sec, x):
        t = transform_stamped("odom", "base_link", (x, 0.0, 0.0))
        t.header.stamp.sec = sec
        return t

    with RosHarness() as ros:
        source = TfSource(ros.helper, prefer_tf2_ros=False)
        assert source.backend == "tf_messages" and source.available
        source._on_tf(TFMessage(transforms=[
            transform_stamped("base_link", "camera_optical_frame", (1.0, 0.0, 1.4),
                              Q_BASE_OPTICAL)]), True)
        source._on_tf(TFMessage(transforms=[odom_base(10, 0.0), odom_base(12, 4.0)]), False)
        # at 11 s the car is half-way: camera origin at x = 2 + 1 in odom
        T = source.lookup("odom", "camera_optical_frame", 11 * 10**9)
        np.testing.assert_allclose(T[:3, 3], [3.0, 0.0, 1.4], atol=1e-9)
        # 20 s is past the newest /tf: the latest (12 s) is used
        T = source.lookup("odom", "camera_optical_frame", 20 * 10**9)
        np.testing.assert_allclose(T[:3, 3], [5.0, 0.0, 1.4], atol=1e-9)
        with pytest.raises(TransformError, match="velodyne"):
            source.lookup("camera_optical_frame", "velodyne", None)
        bad = transform_stamped("base_link", "lidar", (0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0))
        source._on_tf(TFMessage(transforms=[bad]), True)
        assert source.received == {"static": 1, "dynamic": 2, "rejected": 1}
        with pytest.raises(TransformError, match="lidar"):
            source.lookup("base_link", "lidar", None)
        source.close()
