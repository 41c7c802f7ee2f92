"""Bag replay over DDS, and a synthetic bag replayed into the depth node with a real
(tiny, random-weight) Depth Anything exported to ONNX and run by onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.conversions import cloud_to_numpy, image_to_depth  # noqa: E402
from depth_perception.ros.replay import (BagReplayer, replay_bag,  # noqa: E402
                                             resolve_message_type)
from support.rostools import RosHarness, node_state, stamp_ns, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

IMAGE, INFO = "/camera/image_raw", "/camera/camera_info"
W, H = 96, 64


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    return make_synthetic_bags(tmp_path_factory.mktemp("bags"), frames=6, size=(W, H),
                               conditions=("night",), seed=3)[0]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from support.models_fixtures import tiny_depth_anything_onnx

    return tiny_depth_anything_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx",
                                    height=56, width=84)


def bag_messages(path, topic):
    """[(log time ns, rosbags message)] of ``topic``."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in reader.messages(connections=conns)]


def test_resolve_message_type():
    from sensor_msgs.msg import Image

    assert resolve_message_type("sensor_msgs/msg/Image") is Image
    assert resolve_message_type("sensor_msgs/Image") is Image
    with pytest.raises(ValueError, match="not installed"):
        resolve_message_type("no_such_msgs/msg/Thing")
    with pytest.raises(ValueError, match="has no 'Imagine'"):
        resolve_message_type("sensor_msgs/msg/Imagine")
    with pytest.raises(ValueError, match="package/msg/Name"):
        resolve_message_type("Image")


def test_bad_bag_arguments(synth_bag, tmp_path):
    with RosHarness() as ros:
        with pytest.raises(FileNotFoundError, match="nope"):
            BagReplayer(tmp_path / "nope", ros.helper)
        with pytest.raises(ValueError, match="/camera/image_raw"):
            BagReplayer(synth_bag, ros.helper, topics=["/not/there"])
        with pytest.raises(ValueError, match="rate"):
            BagReplayer(synth_bag, ros.helper, rate=0.0)


def test_replay_publishes_bag_bytes_clock_and_latched_topics(synth_bag):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    recorded = bag_messages(synth_bag, IMAGE)
    with RosHarness() as ros:
        images = ros.collect(Image, IMAGE)
        clock = ros.collect(Clock, "/clock")
        with BagReplayer(synth_bag, ros.helper, topics=[IMAGE, INFO], rate=4.0, clock=True,
                         latched=(INFO,)) as player:
            player.wait_for_subscribers([IMAGE])
            wait_for(lambda: player._clock_pub.get_subscription_count() > 0, 30, "/clock sub")
            stats = player.play()
            assert stats.published[IMAGE] == len(recorded) == 6
            assert stats.published[INFO] == 6 and stats.loops == 1
            got = images.wait_count(len(recorded))
            # the same bytes and stamps as recorded, in order
            for (_, want), msg in zip(recorded, got):
                assert stamp_ns(msg) == stamp_ns(want)
                assert msg.header.frame_id == want.header.frame_id
                assert (msg.width, msg.height, msg.encoding) == (want.width, want.height,
                                                                 want.encoding)
                assert bytes(msg.data) == bytes(want.data)
            # /clock carries the bag time of every played message
            clocks = clock.wait_count(12)
            bag_times = sorted({t for t, _ in recorded} | {t for t, _ in bag_messages(synth_bag, INFO)})
            clock_ns = [c.clock.sec * 10**9 + c.clock.nanosec for c in clocks]
            assert clock_ns == sorted(clock_ns)
            assert set(clock_ns) == set(bag_times)
            # a late subscriber still gets the latched topic's last message
            late = ros.collect(CameraInfo, INFO, qos=QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL))
            msg = late.wait_count(1)[0]
            assert stamp_ns(msg) == stamp_ns(bag_messages(synth_bag, INFO)[-1][1])
        # tf2_msgs is not on PyPI: its topics are skipped with the reason (or played)
        with BagReplayer(synth_bag, ros.helper) as player:
            for topic in ("/tf", "/tf_static"):
                assert topic in player.publishers or "tf2_msgs" in player.stats.skipped[topic]


def test_synthetic_bag_into_depth_node(synth_bag, onnx_model):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    recorded = {stamp_ns(m): m for _, m in bag_messages(synth_bag, IMAGE)}
    with RosHarness() as ros:
        node = ros.add(DepthNode(
            context=ros.context,
            parameter_overrides=[Parameter("model", value=str(onnx_model)),
                                 Parameter("backend", value="onnxruntime")],
            cli_args=["--ros-args", "-r", f"image:={IMAGE}", "-r", f"camera_info:={INFO}"]))
        wait_for(lambda: node_state(node) == "active", 60, "node active with the ONNX model")
        assert node.stats.backend == "onnxruntime"
        depth_out = ros.collect(Image, "/depth/image")
        info_out = ros.collect(CameraInfo, "/depth/camera_info")
        points_out = ros.collect(PointCloud2, "/points")
        ros.wait_subscribed(points_out)

        def play():
            return replay_bag(synth_bag, ros.helper, topics=[IMAGE, INFO], wait_for=[IMAGE, INFO])

        play()
        depth_out.wait_count(1)
        # the last frame of the bag is never dropped (nothing newer replaces it)
        last = max(recorded)
        for out in (depth_out, info_out, points_out):
            out.wait(lambda ms: any(stamp_ns(m) == last for m in ms), 30, "the last frame")
        # the node's cloud filters (flying pixels, sky cap) at the model's max_depth
        cloud_settings = node.settings.cloud_settings(node._estimator.metadata.max_depth)
        check_outputs(recorded, depth_out.messages, info_out.messages, points_out.messages,
                      cloud_settings)

        # replay again with max_depth at the median depth: the bag restarts (one frame
        # rejected as stamps going backwards), far pixels become +inf and NaN points
        median = float(np.nanmedian(image_to_depth(depth_out.messages[-1])))
        assert node.set_parameters([Parameter("max_depth", value=median)])[0].successful
        depth_out.clear(), info_out.clear(), points_out.clear()
        play()
        for out in (depth_out, info_out, points_out):
            out.wait(lambda ms: any(stamp_ns(m) == last for m in ms), 30, "the last frame")
        assert node.stats.bad["stamp_backwards"] == 1
        n_inf = check_outputs(recorded, depth_out.messages, info_out.messages,
                              points_out.messages, node.settings.cloud_settings(median))
        assert n_inf > 0


def check_outputs(recorded, depths, infos, clouds, cloud_settings) -> int:
    """Stamps/frames/sizes are the input's; cloud = back-projection through the published
    K; invalid depth and pixels the cloud filters drop (``cloud_settings``) -> NaN points.
    Returns the number of +inf depth pixels seen."""
    from depth_perception.cloud import filter_depth

    infos = {stamp_ns(m): m for m in infos}
    clouds = {stamp_ns(m): m for m in clouds}
    n_inf = 0
    rng = np.random.default_rng(1)
    for depth_msg in depths:
        t = stamp_ns(depth_msg)
        assert t in recorded, "output stamp must be an input stamp (never now())"
        src = recorded[t]
        assert depth_msg.header.frame_id == src.header.frame_id == "camera_optical_frame"
        assert (depth_msg.width, depth_msg.height) == (src.width, src.height) == (W, H)
        depth = image_to_depth(depth_msg)
        n_inf += int(np.isposinf(depth).sum())
        if t not in infos or t not in clouds:
            continue
        info, cloud = infos[t], clouds[t]
        assert info.header.frame_id == cloud.header.frame_id == src.header.frame_id
        K = Intrinsics.from_matrix(info.k, info.width, info.height)
        assert (K.width, K.height) == (W, H)
        assert (cloud.height, cloud.width) == (H, W)
        pts = cloud_to_numpy(cloud).reshape(H, W, 3)
        kept = filter_depth(depth, K, cloud_settings)         # NaN: no point
        assert np.array_equal(kept[np.isfinite(kept)], depth[np.isfinite(kept)])
        for v, u in zip(rng.integers(0, H, 30), rng.integers(0, W, 30)):
            z = kept[v, u]
            if np.isfinite(z):
                want = [(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z]
                np.testing.assert_allclose(pts[v, u], want, rtol=1e-5, atol=1e-6)
            else:
                assert np.isnan(pts[v, u]).all()
        bad = ~np.isfinite(kept)
        assert np.isnan(pts[bad]).all() and np.isfinite(pts[~bad]).all()
    return n_inf


def test_cli_replay(synth_bag, capsys):
    from depth_perception.cli import main

    assert main(["replay", str(synth_bag), "--topics", INFO, "--rate", "20"]) == 0
    assert f"{INFO}: 6 messages" in capsys.readouterr().out
    assert main(["replay", str(synth_bag.parent / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
