"""DepthNode over real DDS: outputs, geometry, stamps, live parameters, lifecycle."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.conversions import cloud_to_numpy, image_to_depth  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.runtime.estimator import DepthEstimator  # noqa: E402
from support.models_fixtures import FunctionBackend  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, image_msg, node_state,  # noqa: E402
                      stamp_ns, wait_for)

pytestmark = pytest.mark.ros

W, H = 64, 48
K = Intrinsics(fx=50.0, fy=52.0, cx=31.5, cy=23.0, width=W, height=H)
#: identity normalisation: the fake model sees pixel values in [0, 1]
META = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                     min_depth=0.5, max_depth=20.0)
#: fixed-size model: the node resizes 64x48 -> 42x28 and back
META_FIXED = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                           min_depth=0.5, max_depth=20.0, input_height=28, input_width=42)


def brightness_depth(x: np.ndarray) -> np.ndarray:
    """[1,3,h,w] in [0,1] -> [1,1,h,w] depth 1 + 30 * red (beyond max_depth 20 when bright)."""
    return 1.0 + 30.0 * x[:, :1]


def ramp_image() -> np.ndarray:
    """Red grows left to right (depth 1 .. 31 m), green/blue constant."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, W, dtype=np.float32)[None, :].astype(np.uint8)
    rgb[..., 1] = 80
    return rgb


def make_factory(meta: ModelMetadata, loads: list | None = None):
    def factory(settings):
        if loads is not None:
            loads.append(settings)
        return DepthEstimator(FunctionBackend(brightness_depth, meta), meta,
                              settings.scale_policy, scale_params=settings.scale_params(),
                              **settings.estimator_options())
    return factory


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


def start_node(ros, meta=META, **overrides):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter

    # H: the camera size; cloud filters off: the ramp (0.47 m per column) is steeper than
    # the flying-pixel jump, and these tests check the plain back-projection
    # (test_costmap_cloud.py and test_cloud_dds.py cover the filters)
    params = {"model": "fake-model", "input_short_side": H, "point_flying_jump": 0.0,
              "point_sky_fraction": 1.0, **overrides}
    node = DepthNode(context=ros.context, estimator_factory=make_factory(meta),
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    ros.add(node)
    wait_for(lambda: node_state(node) == "active", 30, "the node to autostart to active")
    return node


class Feeder:
    """Publishes image + CameraInfo pairs into the node (sensor-data QoS)."""

    def __init__(self, ros, node, intrinsics=K, frame_id="camera_optical_frame"):
        from sensor_msgs.msg import CameraInfo, Image

        self.image_pub = ros.publisher(Image, "/image")
        self.info_pub = ros.publisher(CameraInfo, "/camera_info")
        ros.wait_matched(self.image_pub)
        ros.wait_matched(self.info_pub)
        self.intrinsics, self.frame_id = intrinsics, frame_id

    def send(self, t_ns: int, rgb=None, image=None, info=None) -> None:
        info = info or camera_info_msg(self.intrinsics, t_ns, self.frame_id)
        self.info_pub.publish(info)
        self.image_pub.publish(image or image_msg(ramp_image() if rgb is None else rgb, t_ns,
                                                  self.frame_id))


def outputs(ros):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    return (ros.collect(Image, "/depth/image"), ros.collect(CameraInfo, "/depth/camera_info"),
            ros.collect(PointCloud2, "/points"), ros.collect(Image, "/depth_colorized/image"))


def send_until(feeder, collector, t0_ns: int, predicate=None, period_ns=50_000_000,
               max_frames=200):
    """Publish frames from ``t0_ns`` on until ``collector`` has an output of one of them
    satisfying ``predicate`` (frames can be lost while DDS discovery settles; each retry
    is a new, newer frame). Returns the stamp of the newest such output: outputs of
    frames sent before this call (still in flight, e.g. across a parameter change) and
    retries still on their way are never mistaken for it."""
    predicate = predicate or (lambda m: True)
    from support.rostools import wait_for as _wait

    def ours(m):
        return stamp_ns(m) >= t0_ns and predicate(m)

    t = t0_ns
    for _ in range(max_frames):
        feeder.send(t)
        try:
            msgs = collector.wait(lambda msgs: any(ours(m) for m in msgs), timeout=0.5)
            return max(stamp_ns(m) for m in msgs if ours(m))
        except AssertionError:
            t += period_ns
    _wait(lambda: False, 0.01, f"an output on {collector.topic}")


def points_grid(cloud) -> np.ndarray:
    """Organized cloud -> [h,w,3]."""
    return cloud_to_numpy(cloud).reshape(cloud.height, cloud.width, 3)


def test_outputs_keep_stamp_frame_size_and_geometry(ros):
    node = start_node(ros)
    depth_out, info_out, points_out, color_out = outputs(ros)
    ros.wait_subscribed(points_out)
    feeder = Feeder(ros, node)
    t = send_until(feeder, points_out, 1_700_000_000_123_456_789)
    match = lambda m: stamp_ns(m) == t  # noqa: E731
    depth_msg = next(m for m in depth_out.wait(lambda ms: any(map(match, ms))) if match(m))
    info_msg = next(m for m in info_out.wait(lambda ms: any(map(match, ms))) if match(m))
    cloud = next(m for m in points_out.messages if match(m))
    color = next(m for m in color_out.wait(lambda ms: any(map(match, ms))) if match(m))

    # stamps and frames are the input's; size is the input's
    for msg in (depth_msg, info_msg, cloud, color):
        assert msg.header.frame_id == "camera_optical_frame"
    assert (depth_msg.width, depth_msg.height, depth_msg.encoding) == (W, H, "32FC1")
    assert (color.width, color.height, color.encoding) == (W, H, "bgr8")
    depth = image_to_depth(depth_msg)
    # the fake model: depth = 1 + 30 * red; left columns are near, bright right > 20 m
    assert depth[:, 0] == pytest.approx(1.0, abs=0.2)
    assert np.isposinf(depth[:, -3:]).all(), "beyond max_depth must be +inf (REP 117)"
    assert np.isfinite(depth[:, : W // 2]).all()
    assert np.all(np.diff(depth[H // 2, : W // 2]) >= -1e-4), "depth follows the red ramp"
    # CameraInfo at the depth resolution equals the input K
    assert (info_msg.width, info_msg.height) == (W, H)
    np.testing.assert_allclose(np.asarray(info_msg.k).reshape(3, 3), K.K, atol=1e-9)
    np.testing.assert_allclose(np.asarray(info_msg.p).reshape(3, 4)[:, :3], K.K, atol=1e-9)
    # cloud: organized H x W, equal to the back-projection of the published depth
    assert (cloud.height, cloud.width, cloud.is_dense) == (H, W, False)
    pts = points_grid(cloud)
    published_K = Intrinsics.from_matrix(info_msg.k, info_msg.width, info_msg.height)
    expected = published_K.backproject(np.where(np.isfinite(depth), depth, np.nan))
    rng = np.random.default_rng(0)
    for v, u in zip(rng.integers(0, H, 40), rng.integers(0, W, 40)):
        if np.isfinite(depth[v, u]):
            np.testing.assert_allclose(pts[v, u], expected[v, u], rtol=1e-5, atol=1e-5)
            assert pts[v, u, 0] == pytest.approx((u - K.cx) * depth[v, u] / K.fx, rel=1e-5)
        else:
            assert np.isnan(pts[v, u]).all(), "invalid depth must be a NaN point"
    assert np.isnan(pts[:, -1]).all() and np.isfinite(pts[:, 0]).all()


def test_fixed_size_model_keeps_camera_resolution_and_K(ros):
    node = start_node(ros, meta=META_FIXED)
    depth_out, info_out, _, _ = outputs(ros)
    feeder = Feeder(ros, node)
    t = send_until(feeder, info_out, 5_000_000_000)
    info_msg = next(m for m in info_out.messages if stamp_ns(m) == t)
    depth_msg = depth_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms))[-1]
    assert (depth_msg.width, depth_msg.height) == (W, H)
    assert (info_msg.width, info_msg.height) == (W, H)
    np.testing.assert_allclose(np.asarray(info_msg.k).reshape(3, 3), K.K, atol=1e-9)
    # a 3-D point projects to the same relative location in the depth image as in the input
    uv, _ = Intrinsics.from_matrix(info_msg.k, W, H).project(np.array([[1.0, -0.5, 4.0]]))
    uv_in, _ = K.project(np.array([[1.0, -0.5, 4.0]]))
    np.testing.assert_allclose(uv, uv_in)
    depth = image_to_depth(depth_msg)
    assert depth[:, 0] == pytest.approx(1.0, abs=0.5)
    assert np.isposinf(depth[:, -2:]).all()


def test_live_parameter_changes_apply_to_next_frame(ros):
    from rclpy.parameter import Parameter

    node = start_node(ros)
    depth_out, _, points_out, _ = outputs(ros)
    ros.wait_subscribed(points_out)
    feeder = Feeder(ros, node)
    t = send_until(feeder, points_out, 10_000_000_000)
    first = next(m for m in points_out.messages if stamp_ns(m) == t)
    assert (first.height, first.width) == (H, W)

    # read-only model/backend are refused; the node keeps its value
    result = node.set_parameters([Parameter("model", value="other.onnx")])[0]
    assert not result.successful and "read-only" in result.reason
    assert node.get_parameter("model").value == "fake-model"
    # invalid values are refused without side effects
    bad = node.set_parameters([Parameter("colormap", value="rainbowish")])[0]
    assert not bad.successful and "colormap" in bad.reason
    bad = node.set_parameters([Parameter("point_stride", value=0)])[0]
    assert not bad.successful
    assert node.get_parameter("point_stride").value == 1

    # live: stride 2, max range 8 m, max_depth 5 m, unorganized cloud next
    ok = node.set_parameters([Parameter("point_stride", value=2),
                              Parameter("max_depth", value=5.0)])
    assert all(r.successful for r in ok)
    t2 = send_until(feeder, points_out, t + 1_000_000_000,
                    predicate=lambda m: stamp_ns(m) > t)
    cloud = next(m for m in points_out.messages if stamp_ns(m) == t2)
    assert (cloud.height, cloud.width) == (math.ceil(H / 2), math.ceil(W / 2))
    depth_msg = depth_out.wait(lambda ms: any(stamp_ns(m) == t2 for m in ms))
    depth = image_to_depth(next(m for m in depth_msg if stamp_ns(m) == t2))
    finite = depth[np.isfinite(depth)]
    assert finite.size > 0 and finite.max() <= 5.0
    assert np.isposinf(depth[:, W // 2]).all(), "beyond the new max_depth -> +inf"
    pts = points_grid(cloud)
    # strided samples keep ORIGINAL pixel coordinates: column j is pixel u = 2j
    i, j = 5, 3
    u, v = 2 * j, 2 * i
    assert pts[i, j, 0] == pytest.approx((u - K.cx) * depth[v, u] / K.fx, rel=1e-5)
    assert pts[i, j, 1] == pytest.approx((v - K.cy) * depth[v, u] / K.fy, rel=1e-5)

    node.set_parameters([Parameter("publish_organized_cloud", value=False)])
    t3 = send_until(feeder, points_out, t2 + 1_000_000_000,
                    predicate=lambda m: stamp_ns(m) > t2)
    flat = next(m for m in points_out.messages if stamp_ns(m) == t3)
    assert flat.height == 1 and flat.is_dense
    assert np.isfinite(cloud_to_numpy(flat)).all()

    # output encoding: 16UC1 millimetres, 0 where invalid (beyond max_depth)
    node.set_parameters([Parameter("output_encoding", value="16UC1")])
    t4 = send_until(feeder, depth_out, t3 + 1_000_000_000,
                    predicate=lambda m: stamp_ns(m) > t3)
    mm_msg = next(m for m in depth_out.messages if stamp_ns(m) == t4)
    assert mm_msg.encoding == "16UC1"
    mm = np.frombuffer(bytes(mm_msg.data), np.uint16).reshape(H, W)
    assert mm[H // 2, 0] == pytest.approx(1000, abs=200)
    assert (mm[:, W // 2:] == 0).all()


def test_missing_model_fails_configure_and_stays_up(ros):
    from depth_perception.ros.depth_node import DepthNode
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter

    from depth_perception.ros.diagnostics import diagnostic_dict

    diags = ros.collect(DiagnosticArray, "/diagnostics")
    node = DepthNode(context=ros.context,
                     parameter_overrides=[Parameter("model", value="/nonexistent/model.onnx"),
                                          Parameter("diagnostics_period", value=0.1)])
    ros.add(node)

    def says_why(msgs):
        for msg in msgs:
            entry = diagnostic_dict(msg).get("depth_node: depth")
            if entry and "/nonexistent/model.onnx" in entry["message"]:
                return True
        return False

    msgs = diags.wait(says_why, 30, "diagnostics naming the missing model")
    entry = next(diagnostic_dict(m)["depth_node: depth"] for m in reversed(msgs)
                 if "depth_node: depth" in diagnostic_dict(m))
    assert entry["level"] == 2 and entry["state"] == "unconfigured"
    assert node_state(node) == "unconfigured"
    assert "cannot load model" in node.problem
    # still alive: parameters answer, and a later configure can be attempted
    assert node.get_parameter("backend").value == "auto"


def test_empty_model_parameter_fails_with_hint(ros):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    node = DepthNode(context=ros.context,
                     parameter_overrides=[Parameter("autostart", value=False)])
    ros.add(node)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "model" in node.problem and "empty" in node.problem
    assert node_state(node) == "unconfigured"


def test_compressed_input(ros):
    import cv2
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    node = start_node(ros, image_transport="compressed")
    depth_out = ros.collect(Image, "/depth/image")
    image_pub = ros.publisher(CompressedImage, "/image/compressed")
    info_pub = ros.publisher(CameraInfo, "/camera_info")
    ros.wait_matched(image_pub)
    ros.wait_matched(info_pub)
    ok, jpeg = cv2.imencode(".png", cv2.cvtColor(ramp_image(), cv2.COLOR_RGB2BGR))
    assert ok
    from support.rostools import header

    for i in range(100):
        t = 20_000_000_000 + i * 50_000_000
        info_pub.publish(camera_info_msg(K, t))
        image_pub.publish(CompressedImage(header=header(t), format="png",
                                          data=jpeg.tobytes()))
        try:
            depth_out.wait_count(1, timeout=0.5)
            break
        except AssertionError:
            continue
    depth = image_to_depth(depth_out.messages[0])
    assert depth.shape == (H, W)
    assert depth[:, 0] == pytest.approx(1.0, abs=0.2) and np.isposinf(depth[:, -1]).all()
    assert node.stats.bad["encoding"] == 0


def test_lidar_depth_image_projects_through_rep103_axes():
    from depth_perception.ros.params import LIDAR_TO_OPTICAL
    from depth_perception.data.projection import project_lidar as lidar_depth_image

    T = np.array(LIDAR_TO_OPTICAL).reshape(4, 4)
    # lidar: x forward, y left, z up. 10 m ahead -> principal point; 1 m to the RIGHT
    # (y = -1) -> u = cx + fx * 1/10; 1 m UP (z = +1) -> v = cy - fy * 1/10; a nearer
    # point on the same pixel wins; points behind the camera are ignored.
    K2 = Intrinsics(fx=50.0, fy=50.0, cx=32.0, cy=24.0, width=W, height=H)
    pts = np.array([[10.0, 0.0, 0.0], [10.0, -1.0, 0.0], [10.0, 0.0, 1.0],
                    [5.0, 0.0, 0.0], [-10.0, 0.0, 0.0]])
    depth = lidar_depth_image(pts, T, K2)
    assert depth[24, 32] == pytest.approx(5.0)          # nearest of the two on-axis points
    assert depth[24, 37] == pytest.approx(10.0)         # u = 32 + 50 * 0.1
    assert depth[19, 32] == pytest.approx(10.0)         # v = 24 - 50 * 0.1
    assert np.isfinite(depth).sum() == 3


def test_lifecycle_cycle_releases_and_reloads_the_backend(ros):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    loads = []
    node = ros.add(DepthNode(context=ros.context, estimator_factory=make_factory(META, loads),
                             parameter_overrides=[Parameter("model", value="fake"),
                                                  Parameter("autostart", value=False)]))
    assert node_state(node) == "unconfigured" and not loads
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    backend = node._estimator.backend
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert len(node.cameras[0].subscriptions) == 2 and node.state == "active"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.cameras[0].subscriptions == [] and node_state(node) == "inactive"
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert backend.closed and node._estimator is None
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert len(loads) == 2 and node._estimator.backend is not backend


def test_warm_up_runs_one_blank_inference_at_the_configured_size():
    """warmup_size: one inference at configure on a blank frame of that size (so the first
    camera frames do not pay for lazy initialisation); bad sizes are refused."""
    from depth_perception.camera import parse_size
    from depth_perception.ros.depth_node import DepthNode
    from depth_perception.ros.params import PARAMETERS, validate_parameter
    from rclpy.parameter import Parameter

    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("12x")
    spec = next(p for p in PARAMETERS if p.name == "warmup_size")
    assert validate_parameter(spec, "640x480") == "" and validate_parameter(spec, "") == ""
    assert "WIDTHxHEIGHT" in validate_parameter(spec, "640-480")

    seen = []

    def model(x):
        seen.append(x.shape)
        return np.full((1, 1, *x.shape[2:]), 3.0, np.float32)

    def factory(settings):
        return DepthEstimator(FunctionBackend(model, META), META, settings.scale_policy,
                              **settings.estimator_options())

    ros = RosHarness()
    try:
        node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                                 parameter_overrides=[Parameter("model", value="fake"),
                                                      Parameter("warmup_size", value="64x48"),
                                                      Parameter("input_short_side", value=28)]))
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        # one blank 64x48 frame went through the model (short side 28 -> 28x42 input)
        assert seen == [(1, 3, 28, 42)]
        assert node.stats.frames_in == 0 and node.stats.frames_out == 0
    finally:
        ros.close()
