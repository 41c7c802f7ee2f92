"""Several cameras, one model, over real DDS: per-camera topics, stamps, frames and sizes;
a stalled camera does not slow the others; frames ready together share one model call."""
from __future__ import annotations

import threading
from dataclasses import dataclass

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

#: identity normalisation: the model sees pixel values in [0, 1]
META = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                     min_depth=0.5, max_depth=20.0)
T0 = 100_000_000_000


def red_depth(x: np.ndarray) -> np.ndarray:
    """[B,3,h,w] -> [B,1,h,w]: depth 1 + 30 * red, so a camera's red names its depth."""
    return (1.0 + 30.0 * x[:, :1]).astype(np.float32)


@dataclass
class Cam:
    namespace: str
    frame_id: str
    width: int
    height: int
    red: int                     # uniform red: depth 1 + 30 * red / 255

    @property
    def depth(self) -> float:
        return 1.0 + 30.0 * self.red / 255.0

    @property
    def K(self) -> Intrinsics:
        return Intrinsics(fx=0.9 * self.width, fy=0.9 * self.width, cx=self.width / 2 - 0.5,
                          cy=self.height / 2 - 0.5, width=self.width, height=self.height)

    def topic(self, name: str) -> str:
        return f"/{self.namespace.strip('/')}/{name}"

    def rgb(self) -> np.ndarray:
        rgb = np.full((self.height, self.width, 3), 30, np.uint8)
        rgb[..., 0] = self.red
        return rgb


# 4:3 cameras share the 42x28 model input (input_short_side 28); the 2:1 one runs 56x28
FOUR = [Cam("front", "front_optical", 64, 48, 34), Cam("rear", "rear_optical", 80, 60, 68),
        Cam("side/left", "left_optical", 96, 48, 102), Cam("/right", "right_optical", 56, 42,
                                                          136)]


def start(ros, cams, backend, **params):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter

    def factory(settings):
        return DepthEstimator(backend, META, settings.scale_policy,
                              scale_params=settings.scale_params(),
                              **settings.estimator_options())

    params = {"model": "red", "input_short_side": 28,
              "cameras": [c.namespace for c in cams], **params}
    node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                             parameter_overrides=[Parameter(k, value=v)
                                                  for k, v in params.items()]))
    wait_for(lambda: node_state(node) == "active", 30, "node active")
    return node


class Feeder:
    """Image + CameraInfo publishers of one camera (sensor-data QoS)."""

    def __init__(self, ros, cam: Cam):
        from sensor_msgs.msg import CameraInfo, Image

        self.cam = cam
        self.image_pub = ros.publisher(Image, cam.topic("image"))
        self.info_pub = ros.publisher(CameraInfo, cam.topic("camera_info"))
        ros.wait_matched(self.image_pub)
        ros.wait_matched(self.info_pub)
        self.sent: list[int] = []

    def send(self, t_ns: int, info: bool = True, frame_id: str | None = None) -> None:
        frame_id = frame_id or self.cam.frame_id
        if info:
            self.info_pub.publish(camera_info_msg(self.cam.K, t_ns, frame_id))
        self.image_pub.publish(image_msg(self.cam.rgb(), t_ns, frame_id))
        self.sent.append(t_ns)


def outputs(ros, cam: Cam) -> dict:
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    return {"depth": ros.collect(Image, cam.topic("depth/image")),
            "info": ros.collect(CameraInfo, cam.topic("depth/camera_info")),
            "points": ros.collect(PointCloud2, cam.topic("points")),
            "colorized": ros.collect(Image, cam.topic("depth_colorized/image"))}


def check_outputs_of_every_camera(ros, node, cams):
    """Each camera's four outputs: on its topics, with its stamps, frame_id and size."""
    collectors = [outputs(ros, c) for c in cams]
    for c, out in zip(cams, collectors):
        for collector in out.values():        # the node's publishers match ours
            ros.wait_subscribed(collector)
    feeders = [Feeder(ros, c) for c in cams]
    # every camera's stamps differ from the others' (by i ms): a mix-up cannot pass
    for k in range(100):
        for i, f in enumerate(feeders):
            f.send(T0 + k * 50_000_000 + i * 1_000_000)
        if all(all(o.count for o in out.values()) for out in collectors):
            break
        threading.Event().wait(0.05)          # pace the frames (DDS discovery settles)
    for c, f, out in zip(cams, feeders, collectors):
        for collector in out.values():
            collector.wait_count(1, timeout=10)
        for msg in out["depth"].messages + out["colorized"].messages:
            assert stamp_ns(msg) in f.sent and msg.header.frame_id == c.frame_id
            assert (msg.width, msg.height) == (c.width, c.height)
        depth = image_to_depth(out["depth"].messages[-1])
        assert depth.shape == (c.height, c.width)
        assert np.nanmedian(depth) == pytest.approx(c.depth, abs=0.1), c.namespace
        for msg in out["info"].messages:
            assert stamp_ns(msg) in f.sent and msg.header.frame_id == c.frame_id
            assert (msg.width, msg.height) == (c.width, c.height)
            assert msg.k[0] == pytest.approx(c.K.fx) and msg.k[2] == pytest.approx(c.K.cx)
        cloud = out["points"].messages[-1]
        assert stamp_ns(cloud) in f.sent and cloud.header.frame_id == c.frame_id
        assert (cloud.width, cloud.height) == (c.width, c.height)     # organized
        xyz = cloud_to_numpy(cloud, ("x", "y", "z"))
        assert np.nanmedian(xyz[:, 2]) == pytest.approx(c.depth, abs=0.1)
        assert node.cameras[cams.index(c)].stats.frames_out >= 1
    return feeders


@pytest.mark.parametrize("n", [2, 4])
def test_every_camera_gets_its_own_outputs_stamps_frames_and_sizes(n):
    from diagnostic_msgs.msg import DiagnosticArray

    from depth_perception.ros.diagnostics import diagnostic_dict

    from depth_perception.ros import interfaces

    cams = FOUR[:n]
    status_type = interfaces.message_type("DepthStatus")
    with RosHarness() as ros:
        diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
        status = ros.collect(status_type, "/depth_node/status") if status_type else None
        backend = FunctionBackend(red_depth, META, batch=None)
        node = start(ros, cams, backend, diagnostics_period=0.2)
        assert [c.label for c in node.cameras] == [c.namespace.strip("/") for c in cams]
        check_outputs_of_every_camera(ros, node, cams)
        # one diagnostics status per camera, with that camera's own counters
        names = [f"depth_node: depth {c.namespace.strip('/')}" for c in cams]

        def per_camera(msgs):
            statuses = diagnostic_dict(msgs[-1]) if msgs else {}
            return all(int(statuses.get(name, {}).get("frames_out", 0)) >= 1
                       for name in names)
        msgs = diagnostics.wait(per_camera, 10, "a status per camera with outputs")
        statuses = diagnostic_dict(msgs[-1])
        for cam, name in zip(node.cameras, names):
            assert statuses[name]["camera"] == cam.label
        if status is not None:   # ~/status: per frame and per period, each camera's own
            frames = {c.frame_id for c in cams}
            msgs = status.wait(lambda ms: frames <= {m.header.frame_id for m in ms
                                                     if m.frames_out >= 1}, 10,
                               "a ~/status of every camera")
            for m in msgs:
                assert m.header.frame_id in frames | {""}
        # one model: every call took frames of the 4:3 cameras together when ready
        assert max(backend.batches) <= n and backend.calls >= 1


def test_frames_of_two_cameras_ready_together_share_one_model_call():
    from sensor_msgs.msg import Image

    gate, entered = threading.Event(), threading.Event()

    def gated(x):
        if not gate.is_set():
            entered.set()
            gate.wait(20)              # the first call holds the worker until released
        return red_depth(x)

    cams = FOUR[:2]
    with RosHarness() as ros:
        backend = FunctionBackend(gated, META, batch=None)
        node = start(ros, cams, backend)
        depth = [ros.collect(Image, c.topic("depth/image")) for c in cams]
        a, b = (Feeder(ros, c) for c in cams)
        t = T0
        while not entered.is_set():            # 1. camera A's frame occupies the model
            a.send(t)
            t += 10_000_000
            entered.wait(0.2)
        # 2. both cameras get a frame into their queues while the model is busy
        t_a, t_b = t + 1_000_000, t + 2_000_000
        def queued(camera, feeder, t_ns):
            if any(stamp_ns(f.image) == t_ns for f in camera.queue):
                return True
            feeder.send(t_ns)                  # (again, if DDS lost it)
            return False
        wait_for(lambda: queued(node.cameras[0], a, t_a) & queued(node.cameras[1], b, t_b),
                 10, "a frame of each camera queued", poll=0.1)
        assert backend.calls == 1
        gate.set()                             # 3. released: one call with both frames
        depth[0].wait(lambda m: any(stamp_ns(x) == t_a for x in m), 10, "camera A's frame")
        depth[1].wait(lambda m: any(stamp_ns(x) == t_b for x in m), 10, "camera B's frame")
        assert backend.batches[:2] == [1, 2], backend.batches
        assert node.cameras[0].stats.frames_out >= 2 and node.cameras[1].stats.frames_out >= 1


def test_a_stalled_and_a_blocked_camera_do_not_slow_the_others():
    """A and B publish throughout; halfway C stops publishing (stalled) and D's images
    come from a frame that never gets a CameraInfo (each waits its camera_info_wait in
    pairing, then is rejected). A's and B's output counts in the second
    half stay those of the first half (relative counts; no clock asserted)."""
    from sensor_msgs.msg import Image

    cams = FOUR
    rounds = 25
    with RosHarness() as ros:
        backend = FunctionBackend(red_depth, META, batch=None)
        node = start(ros, cams, backend)
        depth = [ros.collect(Image, c.topic("depth/image")) for c in cams]
        feeders = [Feeder(ros, c) for c in cams]
        for f, out in zip(feeders, depth):       # discovery settled for every camera
            t = T0
            while not out.count:
                f.send(t)
                t += 1_000_000
                threading.Event().wait(0.05)
        t1 = T0 + 10_000_000_000                # phase 1: all four
        t2 = t1 + rounds * 40_000_000           # phase 2: C silent, D without CameraInfo
        for k in range(2 * rounds):
            t = t1 + k * 40_000_000
            for i, f in enumerate(feeders):
                if t < t2 or i < 2:
                    f.send(t + i * 1_000_000)
                elif i == 3:
                    f.send(t + i * 1_000_000, info=False, frame_id="uncalibrated")
            threading.Event().wait(0.04)        # pace at 25 Hz per camera
        last = t1 + (2 * rounds - 1) * 40_000_000
        for i in range(2):
            depth[i].wait(lambda m, s=last + i * 1_000_000: any(stamp_ns(x) == s for x in m),
                          10, "the last frame of each live camera")
        wait_for(lambda: node.cameras[3].stats.bad["no_camera_info"] >= 1, 10,
                 "camera D's images rejected for their missing CameraInfo")

        def count(i, lo, hi):
            return sum(lo <= stamp_ns(m) < hi for m in depth[i].messages)
        first = [count(i, t1, t2) for i in range(4)]
        second = [count(i, t2, t2 + rounds * 40_000_000) for i in range(4)]
        assert min(first) >= 0.5 * rounds, first         # every camera ran in phase 1
        assert second[2] == 0 and second[3] == 0, second  # C stalled, D blocked
        for i in range(2):
            assert second[i] >= 0.8 * first[i], (first, second)
        assert min(second[:2]) >= 0.8 * max(second[:2]), second
        assert node.cameras[0].stats.bad["no_camera_info"] == 0


@pytest.mark.parametrize("cameras, match", [(["front", "/front"], "distinct"),
                                            (["front", "rear camera"], "not a ROS namespace"),
                                            (["front", "2nd"], "not a ROS namespace")])
def test_bad_camera_lists_are_refused_with_the_reason(cameras, match):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter

    with RosHarness() as ros:
        with pytest.raises(ValueError, match=f"parameter 'cameras': .*{match}"):
            DepthNode(context=ros.context, estimator_factory=lambda s: None,
                      parameter_overrides=[Parameter("cameras", value=cameras)])


def test_each_camera_has_its_own_scale_policy_and_tf_pose():
    """ground_plane on two cameras of one rig: /tf_static puts 'front' 1.5 m and 'rear'
    0.75 m above base_link, the model sees the same road 1 m below each. Each camera's
    scale is its own TF height (1.5 and 0.75); one shared policy or one shared pose
    would give both the same scale."""
    pytest.importorskip("tf2_msgs.msg")
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from depth_perception.ros.tf_listener import tf_qos
    from support.models_fixtures import street_depth

    cams = [Cam("front", "front_optical", 112, 56, 34), Cam("rear", "rear_optical", 112, 56, 34)]
    K = cams[0].K
    road = street_depth(K, camera_height=1.0, far=60.0)            # [H,W], 1 m camera

    def model(x):
        return np.repeat(np.nan_to_num(road, nan=0.0)[None, None], x.shape[0], axis=0)

    def static(child, height):
        t = TransformStamped(child_frame_id=child)
        t.header.frame_id = "base_link"
        t.transform.translation.z = height
        r = t.transform.rotation
        r.x, r.y, r.z, r.w = (-0.5, 0.5, -0.5, 0.5)   # optical axes in base_link (REP 103)
        return t

    with RosHarness() as ros:
        pub = ros.helper.create_publisher(TFMessage, "/tf_static", tf_qos(static=True))
        pub.publish(TFMessage(transforms=[static("front_optical", 1.5),
                                          static("rear_optical", 0.75)]))
        node = start(ros, cams, FunctionBackend(model, META, batch=None),
                     scale_policy="ground_plane", camera_height=3.0, input_short_side=56)
        def tf_ready():          # both poses known before any frame: no parameter scale
            try:
                return all(node.transforms._tf.lookup("base_link", c.frame_id, None)
                           is not None for c in cams)
            except Exception:  # noqa: BLE001 - not yet
                return False
        wait_for(tf_ready, 10, "the node's TF source to know both cameras")
        feeders = [Feeder(ros, c) for c in cams]
        t = T0

        def scaled():
            return all(c.stats.frames_out >= 5 for c in node.cameras)
        while not scaled():
            for i, f in enumerate(feeders):
                f.send(t + i * 1_000_000)
            t += 50_000_000
            assert t < T0 + 400 * 50_000_000, "no scaled frames from both cameras"
            threading.Event().wait(0.05)
        front, rear = (c.stats for c in node.cameras)
        assert front.last_scale_source == rear.last_scale_source == "ground_plane"
        assert front.last_scale == pytest.approx(1.5, rel=0.05)
        assert rear.last_scale == pytest.approx(0.75, rel=0.05)
        assert node.cameras[1].scale_policy is not node._estimator.scale_policy
