"""The depth node's temporal fusion over real DDS: the ego-motion from TF between two
frames' stamps, the fused depth equal to the offline evaluation's, single-frame output
(counted) while TF lacks the motion."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from support.rostools import Collector, RosHarness, node_state, wait_for  # noqa: E402
from test_tf_runtime import make_node  # noqa: E402

pytestmark = pytest.mark.ros


def test_node_fuses_with_tf_motion_as_the_offline_evaluation(tf2_msgs_built, tmp_path):
    import rclpy

    from depth_perception.conversions import image_to_depth
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.ros.camera_pipeline import Frame
    from depth_perception.ros.replay import replay_bag
    from depth_perception.runtime.fusion import TemporalFusion
    from support.bagtools import INTRINSICS, frame_image, make_drive_bag
    from support.rostools import camera_info_msg, image_msg

    n, period, t0 = 4, 100_000_000, 10**9
    bag = make_drive_bag(tmp_path / "drive", "mcap", n=n, odom_in_tf=True, speed=2.0)
    rng = np.random.default_rng(0)

    def model(x):                          # a noisy wall 10 m ahead
        shape = (1, 1, *x.shape[2:])
        return (10.0 * (1 + 0.02 * rng.standard_normal(shape))).astype(np.float32)

    singles, results = [], []
    with RosHarness() as ros:
        node = make_node(ros, "model", model, temporal_fusion=True, fusion_threshold=0.1)
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        camera = node.cameras[0]
        fuse = camera._fuse

        def spy(job, result, est, settings):
            singles.append(result.depth.copy())
            results.append((result, est))
            return fuse(job, result, est, settings)
        camera._fuse = spy
        from sensor_msgs.msg import CameraInfo, Image

        depth_out = Collector(ros.helper, Image, "/depth/image")
        conf_out = Collector(ros.helper, Image, "/confidence/image")
        conf_info = Collector(ros.helper, CameraInfo, "/confidence/camera_info")
        wait_for(lambda: camera.publishers["confidence"].get_subscription_count() > 0
                 and camera.publishers["depth"].get_subscription_count() > 0, 30,
                 "subscribers on depth/image and confidence/image")
        player = rclpy.create_node("fusion_tf_replay", context=ros.context)
        try:
            replay_bag(bag, player, topics=["/tf_static", "/tf"], rate=4.0,
                       wait_for=["/tf_static", "/tf"])
        finally:
            player.destroy_node()
        last = t0 + (n - 1) * period
        wait_for(lambda: _known(node, last), 30, "the drive's TF at the node")
        stamps = [t0 + k * period for k in range(n)] + [t0 + 50 * period]   # no TF there
        for k, stamp in enumerate(stamps):
            frame = Frame(image_msg(frame_image(k), stamp),
                          camera_info_msg(INTRINSICS, stamp), 0.0)
            assert node.process([(camera, frame)]) == 1
        resets = camera.stats.fusion_resets_no_tf
        published = [image_to_depth(m) for m in depth_out.wait_count(n + 1)]
        confidences = conf_out.wait_count(n + 1)
        infos = conf_info.wait_count(n + 1)
        assert camera.stats.confidence_source == "temporal"
    # confidence/image: 32FC1 beside its CameraInfo, the depth's header; 0 on the first
    # frame (no history) and where the frame was reset, growing where the wall agrees
    for depth_msg, conf_msg, info in zip(depth_out.messages, confidences, infos):
        assert conf_msg.encoding == "32FC1" and conf_msg.header == depth_msg.header
        assert info.header == depth_msg.header and (info.width, info.height) == (128, 96)
    conf = [np.frombuffer(bytes(m.data), np.float32).reshape(m.height, m.width)
            for m in confidences]                   # 0 is a confidence, not "no depth"
    assert np.nanmax(conf[0]) == 0.0 and np.nanmax(conf[n]) == 0.0
    assert np.nanmedian(conf[n - 1]) > np.nanmedian(conf[1]) > 0.0
    # offline: the bag's TF, composed the same way, through the same fusion (on the
    # model's grid, DepthEstimator.fuse, as evaluate runs it)
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))
    fusion = TemporalFusion(0.1, 8)
    for k in range(n):
        T = None if k == 0 else seq.relative_pose(k, k - 1)
        result, est = results[k]
        want = est.fuse(fusion, result, T).depth
        np.testing.assert_allclose(published[k], want, rtol=1e-6)
    assert not np.array_equal(published[n - 1], singles[n - 1])             # it fused
    # the last frame has no TF: published as the model gave it (scaled on its grid
    # rather than at camera resolution: float rounding apart), and counted
    assert resets == 1
    np.testing.assert_allclose(published[n], singles[n], rtol=1e-6)


def _known(node, stamp_ns: int) -> bool:
    tf = node.transforms._tf
    try:
        tf.lookup("odom", "camera_optical_frame", stamp_ns, latest=False)
        return True
    except (ValueError, AttributeError):
        return False
