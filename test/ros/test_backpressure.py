"""Backpressure: a 30 Hz camera and a 100 ms model. The one-slot queue keeps outputs on
the newest frames (lag in frames stays bounded and does not grow), counts the drops,
and memory stays flat over thousands of frames."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.runtime.estimator import DepthEstimator  # noqa: E402
from support.models_fixtures import FunctionBackend  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, image_msg, node_state,  # noqa: E402
                      stamp_ns, wait_for)

pytestmark = pytest.mark.ros

W, H = 64, 48
K = Intrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, width=W, height=H)
META = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                     min_depth=0.5, max_depth=50.0)
FRAME_NS = 33_333_333
T0 = 50_000_000_000


def slow_factory(seconds: float):
    budget = threading.Event()  # never set: wait() is the model's compute time

    def model(x):
        budget.wait(seconds)
        return np.full((1, 1, *x.shape[2:]), 3.0, np.float32)

    def factory(settings):
        return DepthEstimator(FunctionBackend(model, META), META, settings.scale_policy,
                              scale_params=settings.scale_params(),
                              **settings.estimator_options())
    return factory


def start(ros, factory, qos=None, **params):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    params = {"model": "slow", "input_short_side": H, **params}
    node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                             parameter_overrides=[Parameter(k, value=v)
                                                  for k, v in params.items()]))
    wait_for(lambda: node_state(node) == "active", 30, "node active")
    image_pub = ros.publisher(Image, "/image", qos)
    info_pub = ros.publisher(CameraInfo, "/camera_info", qos)
    ros.wait_matched(image_pub)
    ros.wait_matched(info_pub)
    return node, image_pub, info_pub


def test_slow_model_keeps_latency_bounded_and_counts_drops():
    from sensor_msgs.msg import Image

    with RosHarness() as ros:
        node, image_pub, info_pub = start(ros, slow_factory(0.1))
        n_frames = 90  # 3 s of a 30 Hz camera
        published = {"n": 0}
        lags = []  # frames between an output's input and the newest input at that moment

        def on_depth(msg):
            idx = (stamp_ns(msg) - T0) // FRAME_NS
            lags.append((idx, published["n"] - 1 - idx))

        out = ros.collect(Image, "/depth/image", on_message=on_depth)
        rgb = np.full((H, W, 3), 90, np.uint8)
        info = camera_info_msg(K, T0)
        done = threading.Event()

        def tick():  # the camera: one frame per timer period
            i = published["n"]
            if i >= n_frames:
                done.set()
                return
            t = T0 + i * FRAME_NS
            info.header.stamp = image_msg(rgb[:1, :1], t).header.stamp
            info_pub.publish(info)
            image_pub.publish(image_msg(rgb, t))
            published["n"] = i + 1

        camera = ros.helper.create_timer(FRAME_NS * 1e-9, tick)
        assert done.wait(60), "camera loop did not finish"
        camera.cancel()
        last_idx = n_frames - 1
        # the last frame the camera sent is eventually processed (nothing stuck)
        out.wait(lambda ms: any((stamp_ns(m) - T0) // FRAME_NS >= last_idx - 1 for m in ms), 10)

        stats = node.stats
        # every frame that came in is accounted for once the worker is idle
        wait_for(lambda: stats.frames_out + stats.frames_dropped + stats.frames_bad
                 == stats.frames_in, 10, "in = out + dropped + bad")
        assert stats.frames_dropped > 0, "a 100 ms model at 30 Hz must drop frames"
        assert stats.frames_out < n_frames * 0.7
        assert stats.frames_out >= 10
        # every output is one of the newest inputs and the lag does not grow. A queue that
        # kept every frame would fall ~2 frames further behind per output (90 frames in,
        # ~30 out): ~60 frames by the end. The one-slot queue stays at ~3 (one 100 ms model
        # call); the bounds leave room for scheduling stalls on a loaded 2-core machine
        # (CI saw single outputs 10 frames late) while still failing a growing queue.
        lag = np.array([lag for _, lag in lags])
        assert lag.max() <= 20, f"outputs fell behind the newest input by {lag.max()} frames"
        third = len(lag) // 3
        assert np.median(lag[-third:]) <= np.median(lag[:third]) + 6, lag
        # outputs are in stamp order, no frame processed twice
        idx = [i for i, _ in lags]
        assert idx == sorted(set(idx))


def test_burst_is_absorbed_by_a_deeper_queue_and_dropped_by_one_slot():
    """A starved sender (a bag replay catching up) delivers 4 frames at once to a 50 ms
    model: queue_size 4 processes all of them in stamp order; the live default (1) keeps
    only the newest of the burst and counts the others as dropped."""
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    with RosHarness() as ros:
        # reliable camera topics: the burst must arrive whole (this is about the queue)
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        node, image_pub, info_pub = start(ros, slow_factory(0.05), reliable, queue_size=4,
                                          input_reliability="reliable")
        out = ros.collect(Image, "/depth/image")
        ros.wait_subscribed(out)
        rgb = np.full((H, W, 3), 90, np.uint8)

        def burst(first: int) -> list[int]:
            stamps = [T0 + (first + k) * FRAME_NS for k in range(4)]
            for t in stamps:
                info_pub.publish(camera_info_msg(K, t))
            for t in stamps:
                image_pub.publish(image_msg(rgb, t))
            return stamps

        stamps = burst(0)
        out.wait(lambda ms: any(stamp_ns(m) == stamps[-1] for m in ms), 10)
        wait_for(lambda: node.stats.frames_in == 4, 5, "four frames in")
        assert [stamp_ns(m) for m in out.messages] == stamps
        assert node.stats.frames_dropped == 0
        # the live default: one slot
        assert node.set_parameters([Parameter("queue_size", value=1)])[0].successful
        out.clear()
        stamps = burst(10)
        out.wait(lambda ms: any(stamp_ns(m) == stamps[-1] for m in ms), 10)
        wait_for(lambda: node.stats.frames_out + node.stats.frames_dropped
                 == node.stats.frames_in == 8, 5, "in = out + dropped")
        assert node.stats.frames_dropped >= 2       # the worker holds one, the slot one
        assert stamp_ns(out.messages[-1]) == stamps[-1]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(1200)
def test_memory_flat_over_1000_frames():
    from sensor_msgs.msg import Image

    with RosHarness() as ros:
        node, image_pub, info_pub = start(ros, slow_factory(0.0))
        out = ros.collect(Image, "/depth/image", keep=5)
        rgb = np.full((H, W, 3), 90, np.uint8)

        def run(start: int, n: int) -> int:
            """Publish frames one after another, each as soon as the previous one was
            published as depth (a fast loop that DDS best effort does not thin out)."""
            for i in range(start, start + n):
                t = T0 + i * FRAME_NS
                info_pub.publish(camera_info_msg(K, t))
                image_pub.publish(image_msg(rgb, t))
                try:
                    out.wait(lambda ms, t=t: bool(ms) and stamp_ns(ms[-1]) >= t, 2.0)
                except AssertionError:
                    pass  # a lost frame: go on with the next one
            return start + n

        nxt = run(0, 200)  # warm-up: allocator pools, DDS history, caches
        before = rss_bytes()
        in_before = node.stats.frames_in
        nxt = run(nxt, 1000)
        after = rss_bytes()
        assert node.stats.frames_in - in_before >= 950
        assert node.stats.frames_out >= 1000
        growth = (after - before) / before
        print(f"RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({growth:+.2%}) over "
              f"{node.stats.frames_in - in_before} frames")
        assert growth < 0.05, f"resident memory grew {growth:.1%} over 1000 frames"
