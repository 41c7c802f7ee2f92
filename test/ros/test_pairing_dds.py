"""Image <-> CameraInfo pairing by stamp in the depth node, over real DDS: interleaved
CameraInfos with changing K and out-of-order delivery, a rejected CameraInfo followed by
a good frame, and the bounded wait's fallback (reported once)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.runtime.estimator import DepthEstimator  # noqa: E402
from support.models_fixtures import constant_backend  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, image_msg, node_state,  # noqa: E402
                              stamp_ns, wait_for)

pytestmark = pytest.mark.ros

W, H = 56, 28
META = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)


def K(fx: float) -> Intrinsics:
    return Intrinsics(fx=fx, fy=fx, cx=27.5, cy=13.5, width=W, height=H)


def factory(settings):
    return DepthEstimator(constant_backend(3.0, META), META, settings.scale_policy,
                          **settings.estimator_options())


class WarningSpy:
    """Wraps the node's logger and keeps the warning texts."""

    def __init__(self, logger):
        self._logger, self.warnings = logger, []

    def warning(self, text, **kwargs):
        self.warnings.append(str(text))
        return self._logger.warning(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


@pytest.fixture
def setup():
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    ros = RosHarness()
    # reliable camera topics: this test is about pairing, not about DDS losing samples
    params = {"model": "fake", "input_short_side": H, "input_reliability": "reliable",
              "camera_info_wait": 0.1}
    node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                             parameter_overrides=[Parameter(k, value=v)
                                                  for k, v in params.items()]))
    spy = WarningSpy(node.get_logger())
    node._logger = spy
    wait_for(lambda: node_state(node) == "active", 30, "node active")
    info_out = ros.collect(CameraInfo, "/depth/camera_info")
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = ros.publisher(Image, "/image", reliable)
    info_pub = ros.publisher(CameraInfo, "/camera_info", reliable)
    ros.wait_matched(image_pub)
    ros.wait_matched(info_pub)
    ros.wait_subscribed(info_out)
    yield ros, node, spy, info_out, image_pub, info_pub
    ros.close()


def rgb():
    return np.full((H, W, 3), 90, np.uint8)


def published_fx(info_out, t: int) -> float:
    msgs = info_out.wait(lambda ms: any(stamp_ns(m) == t for m in ms), 10.0,
                         f"depth/camera_info for stamp {t}")
    return float(next(m for m in msgs if stamp_ns(m) == t).k[0])


def test_interleaved_infos_with_changing_K_pair_by_stamp(setup):
    ros, node, spy, info_out, image_pub, info_pub = setup
    stamps = [10**9 + k * 10**8 for k in range(6)]
    fx = {t: 30.0 + 5 * k for k, t in enumerate(stamps)}
    # the CameraInfo of the NEXT frame always arrives before this frame's image (the old
    # "latest CameraInfo" pairing would give every image the following frame's K)
    info_pub.publish(camera_info_msg(K(fx[stamps[0]]), stamps[0]))
    for k, t in enumerate(stamps[:-2]):
        info_pub.publish(camera_info_msg(K(fx[stamps[k + 1]]), stamps[k + 1]))
        image_pub.publish(image_msg(rgb(), t))
        assert published_fx(info_out, t) == fx[t]
    # out of order: the image comes first and waits for its CameraInfo
    t = stamps[-1]
    image_pub.publish(image_msg(rgb(), t))
    wait_for(lambda: node.cameras[0].pairer.waiting == 1, 5.0, "the image to wait for its CameraInfo")
    info_pub.publish(camera_info_msg(K(fx[t]), t))
    assert published_fx(info_out, t) == fx[t]
    assert node.stats.camera_info_fallbacks == 0 and node.stats.frames_bad == 0


def test_rejected_camera_info_then_good_frame_is_published(setup):
    ros, node, spy, info_out, image_pub, info_pub = setup
    t_good0, t_bad, t_good = 2 * 10**9, 2 * 10**9 + 10**8, 2 * 10**9 + 2 * 10**8
    info_pub.publish(camera_info_msg(K(40.0), t_good0))
    image_pub.publish(image_msg(rgb(), t_good0))
    assert published_fx(info_out, t_good0) == 40.0
    zero = camera_info_msg(K(40.0), t_bad)
    zero.k = [0.0] * 9
    info_pub.publish(zero)
    image_pub.publish(image_msg(rgb(), t_bad))
    wait_for(lambda: node.stats.bad["camera_info"] == 1, 5.0, "the zero-K frame rejected")
    info_pub.publish(camera_info_msg(K(45.0), t_good))
    image_pub.publish(image_msg(rgb(), t_good))
    assert published_fx(info_out, t_good) == 45.0
    assert not any(stamp_ns(m) == t_bad for m in info_out.messages)
    assert node.stats.bad["camera_info"] == 1 and node.stats.camera_info_fallbacks == 0


def test_fallback_after_the_wait_is_used_and_reported_once(setup):
    ros, node, spy, info_out, image_pub, info_pub = setup
    t0 = 3 * 10**9
    info_pub.publish(camera_info_msg(K(50.0), t0))
    image_pub.publish(image_msg(rgb(), t0))
    assert published_fx(info_out, t0) == 50.0
    late = [t0 + k * 10**8 for k in (1, 2, 3)]
    for t in late:                        # no CameraInfo with these stamps at all
        image_pub.publish(image_msg(rgb(), t))
        assert published_fx(info_out, t) == 50.0
    assert node.stats.camera_info_fallbacks == 3
    said = [w for w in spy.warnings if "newest valid one" in w]
    assert len(said) == 1, said
    assert "said once" in said[0]
