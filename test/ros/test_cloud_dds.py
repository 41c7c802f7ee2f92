"""The depth node's costmap cloud over real DDS: a depth step seen by the node, the cloud
published in base_link through a /tf_static transform, nothing published while TF lacks
it (counted in /diagnostics), flying pixels, the sky and the range cap left out."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is built by scripts/build_interfaces.sh")

from depth_perception import cloud as dc  # noqa: E402
from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.conversions import cloud_to_numpy, image_to_depth  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, image_msg, node_state,  # noqa: E402
                              stamp_ns, wait_for)

pytestmark = pytest.mark.ros

W, H = 112, 56  # multiples of 14: the model input is the camera image itself
K = Intrinsics(fx=100.0, fy=100.0, cx=55.5, cy=27.5, width=W, height=H)
META = ModelMetadata(output_kind="metric_depth", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     min_depth=0.5, max_depth=20.0)
CAMERA = "camera_optical_frame"
#: camera optical frame in base_link: 0.5 m ahead, 1.2 m up, looking along x (REP 103)
Q_BASE_OPTICAL = (-0.5, 0.5, -0.5, 0.5)
T_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.5],
                           [-1.0, 0.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0, 1.2],
                           [0.0, 0.0, 0.0, 1.0]])
PARAMS = {"model": "fake", "input_short_side": H, "max_depth": 6.0, "point_frame": "base_link",
          "point_max_range": 5.3, "publish_organized_cloud": False}
NEAR, BLEND, FAR, SKY = 2.0, 2.0 + 8 * 48 / 255, 2.0 + 8 * 96 / 255, 2.0 + 8 * 121 / 255


def step_model(x: np.ndarray) -> np.ndarray:
    """[1,3,h,w] in [0,1] -> [1,1,h,w] depth 2 + 8 * red."""
    return 2.0 + 8.0 * x[:, :1]


def step_image() -> np.ndarray:
    """Rows 0-9 'sky' at 5.80 m (under max_depth 6, over its 0.95 sky cap 5.7); below:
    2 m for columns 0-55, one blended 3.51 m column 56, 5.01 m from column 57 on."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:, 56, 0], rgb[10:, 57:, 0] = 48, 96
    rgb[:10, :, 0] = 121
    return rgb


def _active_node(ros, model, params: dict):
    """A DepthNode running ``model`` ([1,3,h,w] -> [1,1,h,w] metres, META's range) with
    ``params``, taken to active; returns (node, image publisher, camera_info publisher)."""
    from depth_perception.ros.depth_node import DepthNode
    from depth_perception.runtime.estimator import DepthEstimator
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image
    from support.models_fixtures import FunctionBackend

    def factory(settings):
        return DepthEstimator(FunctionBackend(model, META), META, settings.scale_policy,
                              scale_params=settings.scale_params(),
                              **settings.estimator_options())

    node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                             parameter_overrides=[Parameter(k, value=v)
                                                  for k, v in params.items()]))
    wait_for(lambda: node_state(node) == "active", 30, "node active")
    image_pub, info_pub = ros.publisher(Image, "/image"), ros.publisher(CameraInfo, "/camera_info")
    return node, image_pub, info_pub


def test_cloud_in_base_link_through_tf_static_and_nothing_without_it():
    from depth_perception.ros.diagnostics import diagnostic_values
    from depth_perception.ros.tf_listener import tf_qos
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    with RosHarness() as ros:
        node, image_pub, info_pub = _active_node(ros, step_model, PARAMS)
        depth_out, points_out = ros.collect(Image, "/depth/image"), ros.collect(PointCloud2, "/points")
        ros.wait_subscribed(points_out)
        ros.wait_matched(image_pub)
        ros.wait_matched(info_pub)

        def send(t):
            info_pub.publish(camera_info_msg(K, t, CAMERA))
            image_pub.publish(image_msg(step_image(), t, CAMERA))

        # 1. no transform to base_link yet: depth is published, the cloud is not
        t = 1_000_000_000
        for _ in range(200):
            send(t)
            try:
                depth_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms), timeout=0.5)
                break
            except AssertionError:
                t += 50_000_000
        wait_for(lambda: node.stats.cloud_tf_failures >= 1, 10, "a counted TF failure")
        assert points_out.count == 0, "a cloud was published without its transform"
        values = dict(diagnostic_values(node.stats, node.state)[2])
        assert int(values["cloud_tf_failures"]) >= 1
        assert node.state == "active"

        # 2. /tf_static base_link -> camera: the next clouds come in base_link
        tf = TransformStamped(child_frame_id=CAMERA)
        tf.header.frame_id = "base_link"
        tr, q = tf.transform.translation, tf.transform.rotation
        tr.x, tr.y, tr.z = 0.5, 0.0, 1.2
        q.x, q.y, q.z, q.w = Q_BASE_OPTICAL
        ros.helper.create_publisher(TFMessage, "/tf_static", tf_qos(static=True)).publish(
            TFMessage(transforms=[tf]))
        for _ in range(400):
            t += 50_000_000
            send(t)
            try:
                points_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms), timeout=0.5)
                break
            except AssertionError:
                pass
        cloud = next(m for m in points_out.messages if stamp_ns(m) == t)
        depth_msg = next(m for m in depth_out.wait(
            lambda ms: any(stamp_ns(m) == t for m in ms)) if stamp_ns(m) == t)
        assert cloud.header.frame_id == "base_link" and cloud.height == 1

        # the depth image keeps the blended column and the saturated sky
        depth = image_to_depth(depth_msg)
        np.testing.assert_allclose(depth[20, [0, 56, 57, 111]], [NEAR, BLEND, FAR, FAR],
                                   atol=1e-4)
        np.testing.assert_allclose(depth[:10], SKY, atol=1e-4)

        # base_link cloud = camera-frame cloud of the published depth moved by the TF
        base = cloud_to_numpy(cloud)
        settings = node.settings.cloud_settings(6.0)
        camera = cloud_to_numpy(dc.costmap_cloud(depth, K, None, settings))
        assert len(base) == len(camera) > 0
        np.testing.assert_allclose(base, camera @ T_BASE_OPTICAL[:3, :3].T + [0.5, 0, 1.2],
                                   atol=1e-4)
        # back in the camera frame: only the two surfaces; no sky, nothing past 5.3 m
        R, t_ = T_BASE_OPTICAL[:3, :3], T_BASE_OPTICAL[:3, 3]
        optical = (base - t_) @ R                         # R^T (p - t) per row
        z = optical[:, 2]
        assert not np.any((z > NEAR + 1e-3) & (z < FAR - 1e-3)), "flying pixel in the cloud"
        assert np.linalg.norm(optical, axis=1).max() <= 5.3 + 1e-4
        # by hand: 2 m: all 46 x 56 pixels (range <= 2 * 1.19); 5.01 m: columns 58-111
        # (57 is next to the blend) of rows 10-55 whose ray is shorter than 5.3 / 5.0118
        assert np.sum(np.isclose(z, NEAR, atol=1e-3)) == 46 * 56
        u, v = np.meshgrid(np.arange(58, W), np.arange(10, H))
        inside = FAR * np.sqrt(1 + ((u - 55.5) / 100) ** 2 + ((v - 27.5) / 100) ** 2) <= 5.3
        assert 0 < inside.sum() < inside.size
        assert np.sum(np.isclose(z, FAR, atol=1e-3)) == inside.sum()


def test_nav2_example_matches_the_node_parameters():
    """config/nav2_costmap_depth.yaml: valid node parameters, and every costmap
    observation source reads the cloud with the node's range cap."""
    from pathlib import Path

    import yaml
    from depth_perception.ros.params import SPECS, validate_parameter

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "config"
                           / "nav2_costmap_depth.yaml").read_text())
    node = data["depth_node"]["ros__parameters"]
    for name, value in node.items():
        assert name in SPECS, f"{name} is not a depth_node parameter"
        assert validate_parameter(SPECS[name], value) == "", name
    assert node["point_frame"] == "base_link"
    sources = []
    for costmap in ("local_costmap", "global_costmap"):
        params = data[costmap][costmap]["ros__parameters"]
        assert params["robot_base_frame"] == node["point_frame"]
        for layer in params["plugins"]:
            for source in str(params[layer].get("observation_sources", "")).split():
                sources.append(params[layer][source])
    assert len(sources) == 2
    for src in sources:
        assert src["data_type"] == "PointCloud2" and src["topic"].endswith("/points")
        assert src["obstacle_max_range"] == src["raytrace_max_range"] == node["point_max_range"]
        assert src["marking"] and src["clearing"]


def test_sky_cap_follows_the_model_range_when_the_node_asks_for_more():
    """max_depth 100 on a 0.5-20 m model: the estimator marks at 20 m, so the cloud's sky
    cap is 0.95 x 20 = 19 m (a 19.5 m sky is left out) and the colour scale ends at 20 m
    (a sky at 100 m's scale would be drawn in the near colours)."""
    from depth_perception.colorize import colorize_depth
    from sensor_msgs.msg import Image, PointCloud2

    ground, sky = 2.0, 19.5

    def model(x):                        # red 0: ground at 2 m; red 1: sky at 19.5 m
        return ground + (sky - ground) * x[:, :1]

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:10, :, 0] = 255
    params = {"model": "fake", "input_short_side": H, "max_depth": 100.0,
              "publish_organized_cloud": False}
    with RosHarness() as ros:
        node, image_pub, info_pub = _active_node(ros, model, params)
        depth_out, points_out = ros.collect(Image, "/depth/image"), ros.collect(PointCloud2, "/points")
        colour_out = ros.collect(Image, "/depth_colorized/image")
        for sub in (depth_out, points_out, colour_out):
            ros.wait_subscribed(sub)
        ros.wait_matched(image_pub)
        ros.wait_matched(info_pub)
        t = 1_000_000_000
        for _ in range(200):
            info_pub.publish(camera_info_msg(K, t, CAMERA))
            image_pub.publish(image_msg(rgb, t, CAMERA))
            try:
                colour_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms), timeout=0.5)
                points_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms), timeout=0.5)
                break
            except AssertionError:
                t += 50_000_000
        assert node._estimator.depth_range == (0.5, 20.0)
        depth = image_to_depth(next(m for m in depth_out.wait(
            lambda ms: any(stamp_ns(m) == t for m in ms)) if stamp_ns(m) == t))
        np.testing.assert_allclose(depth[:10], sky, atol=1e-3)      # marked at 20, kept
        np.testing.assert_allclose(depth[10:], ground, atol=1e-3)
        z = cloud_to_numpy(next(m for m in points_out.messages if stamp_ns(m) == t))[:, 2]
        assert np.allclose(z, ground, atol=1e-3) and len(z) > 0, "the 19.5 m sky is in the cloud"
        colour = next(m for m in colour_out.messages if stamp_ns(m) == t)
        bgr = np.frombuffer(bytes(colour.data), np.uint8).reshape(H, W, 3)
        np.testing.assert_array_equal(bgr, colorize_depth(depth, 0.5, 20.0, node.settings.colormap))
        assert not np.array_equal(bgr, colorize_depth(depth, 0.5, 100.0, node.settings.colormap))
