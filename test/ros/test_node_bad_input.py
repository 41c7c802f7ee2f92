"""Bad input while running: each case is logged, counted in diagnostics, and the next
good frame is still published. Also the QoS-mismatch warning."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.runtime.estimator import DepthEstimator  # noqa: E402
from depth_perception.ros.diagnostics import diagnostic_dict  # noqa: E402
from support.models_fixtures import FunctionBackend  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, header, image_msg, node_state,  # noqa: E402
                      stamp_ns, wait_for)

pytestmark = pytest.mark.ros

W, H = 48, 32
K = Intrinsics(fx=40.0, fy=40.0, cx=23.5, cy=15.5, width=W, height=H)
META = ModelMetadata(output_kind="metric_depth", mean=(0, 0, 0), std=(1, 1, 1),
                     min_depth=0.5, max_depth=50.0)
GREEN_NAN, GREEN_RAISE, GREEN_OK = 250, 128, 10


def tricky_model(x: np.ndarray) -> np.ndarray:
    """Depth 2 m; NaN output when the image is green, a backend crash when half green."""
    green = float(x[:, 1].mean())
    if green > 0.9:
        return np.full((1, 1, *x.shape[2:]), np.nan, np.float32)
    if 0.4 < green < 0.6:
        raise OSError("CUDA error 700: an illegal memory access was encountered")
    return np.full((1, 1, *x.shape[2:]), 2.0, np.float32)


def factory(settings):
    return DepthEstimator(FunctionBackend(tricky_model, META), META, settings.scale_policy,
                          scale_params=settings.scale_params(), **settings.estimator_options())


def rgb(green: int = GREEN_OK) -> np.ndarray:
    img = np.full((H, W, 3), 60, np.uint8)
    img[..., 1] = green
    return img


@pytest.fixture
def setup():
    from depth_perception.ros.depth_node import DepthNode
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    ros = RosHarness()
    params = {"model": "fake", "input_short_side": H, "diagnostics_period": 0.1}
    node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                             parameter_overrides=[Parameter(k, value=v)
                                                  for k, v in params.items()]))
    wait_for(lambda: node_state(node) == "active", 30, "node active")
    depth = ros.collect(Image, "/depth/image")
    diags = ros.collect(DiagnosticArray, "/diagnostics", keep=5)
    image_pub = ros.publisher(Image, "/image")
    info_pub = ros.publisher(CameraInfo, "/camera_info")
    ros.wait_matched(image_pub)
    ros.wait_matched(info_pub)
    yield ros, node, depth, diags, image_pub, info_pub
    ros.close()


def repeat_until(send, condition, what: str, tries: int = 60) -> None:
    """Send (a new frame each time) until ``condition()``: DDS may lose the first sends
    and the CameraInfo cache may still pair an image with the previous info."""
    for _ in range(tries):
        send()
        try:
            wait_for(condition, 0.5, what)
            return
        except AssertionError:
            continue
    raise AssertionError(f"never saw {what}")


def zero_k_info(t_ns):
    msg = camera_info_msg(K, t_ns)
    msg.k = [0.0] * 9
    msg.p = [0.0] * 12
    return msg


def bad_lens_info(t_ns, **fields):
    """A distorted camera's CameraInfo (plumb_bob k1 = -0.3, P = [K|0]) with ``fields``
    changed: the node cannot rectify with it."""
    msg = camera_info_msg(K, t_ns)
    msg.distortion_model, msg.d = "plumb_bob", [-0.3, 0.0, 0.0, 0.0, 0.0]
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_each_bad_input_is_counted_and_the_next_good_frame_published(setup):
    ros, node, depth, diags, image_pub, info_pub = setup
    clock = {"t": 100_000_000_000}

    def next_t():
        clock["t"] += 10_000_000
        return clock["t"]

    def send(image=None, info=None, t=None):
        t = t if t is not None else next_t()
        info_pub.publish(info if info is not None else camera_info_msg(K, t))
        image_pub.publish(image if image is not None else image_msg(rgb(), t))
        return t

    def good_frame_published():
        sent = []

        def send_good():
            sent.append(send())

        repeat_until(send_good, lambda: any(stamp_ns(m) in sent for m in depth.messages),
                     "a good frame published after bad input")

    good_frame_published()

    def truncated(t):
        msg = image_msg(rgb(), t)
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
        return msg

    def bad_step(t):
        msg = image_msg(rgb(), t)
        msg.step = W * 3 - 6
        return msg

    def empty(t):
        msg = image_msg(rgb(), t)
        msg.width, msg.height, msg.step, msg.data = 0, 0, 0, b""
        return msg

    def wrong_encoding(t):
        from depth_perception.conversions import depth_to_image
        return depth_to_image(np.full((H, W), 3.0, np.float32), header(t))

    cases = [
        ("encoding", lambda t: dict(image=wrong_encoding(t))),
        ("size", lambda t: dict(image=truncated(t))),
        ("size", lambda t: dict(image=bad_step(t))),
        ("empty", lambda t: dict(image=empty(t))),
        ("camera_info", lambda t: dict(info=zero_k_info(t))),
        ("camera_info", lambda t: dict(info=camera_info_msg(K.resized(24, 16), t))),
        # calibrations the node cannot rectify with
        ("camera_info", lambda t: dict(info=bad_lens_info(t, distortion_model="kannala"))),
        ("camera_info", lambda t: dict(info=bad_lens_info(t, d=[-0.3, 0.1]))),
        ("camera_info", lambda t: dict(info=bad_lens_info(t, p=[0.0] * 12))),
        ("model_nan", lambda t: dict(image=image_msg(rgb(GREEN_NAN), t))),
        ("backend_error", lambda t: dict(image=image_msg(rgb(GREEN_RAISE), t))),
    ]
    for reason, make in cases:
        before = node.stats.bad[reason]

        def send_bad(make=make):
            t = next_t()
            send(t=t, **make(t))

        repeat_until(send_bad, lambda: node.stats.bad[reason] > before,
                     f"the '{reason}' counter to increase")
        good_frame_published()

    # stamps going backwards: rejected once, then newer frames are published again
    before = node.stats.bad["stamp_backwards"]
    last = clock["t"]
    clock["t"] = backwards = last - 5_000_000_000
    send(t=backwards)
    wait_for(lambda: node.stats.bad["stamp_backwards"] > before, 10, "stamp_backwards count")
    good_frame_published()
    assert not any(stamp_ns(m) == backwards for m in depth.messages)

    # diagnostics report every reason
    reasons = {r for r, _ in cases} | {"stamp_backwards"}

    good_frames = len(cases) + 2         # one before the cases, one after each, one at the end
    published = node.stats.frames_out

    def latest_state(msg):
        """A diagnostics message issued after the last good frame was published (an older
        one may predate it: the diagnostics timer runs on its own period)."""
        entry = diagnostic_dict(msg).get("depth_node: depth")
        return entry if entry and int(entry["frames_out"]) >= published else None

    def diag_has_all(msgs):
        return any((e := latest_state(m)) and all(int(e[f"bad_{r}"]) >= 1 for r in reasons)
                   for m in msgs)

    msgs = diags.wait(diag_has_all, 10, "diagnostics with every bad-input counter")
    entry = next(e for m in reversed(msgs) if (e := latest_state(m)))
    assert entry["state"] == "active"
    assert int(entry["frames_out"]) >= good_frames
    assert int(entry["bad_size"]) >= 2 and int(entry["bad_camera_info"]) >= 2
    assert node_state(node) == "active"


def test_no_camera_info_is_counted(setup):
    ros, node, depth, diags, image_pub, info_pub = setup
    before = node.stats.bad["no_camera_info"]
    t = [200_000_000_000]

    def send_image_other_frame():
        t[0] += 10_000_000
        image_pub.publish(image_msg(rgb(), t[0], frame_id="other_camera_optical_frame"))

    repeat_until(send_image_other_frame, lambda: node.stats.bad["no_camera_info"] > before,
                 "no_camera_info count")
    assert depth.count == 0 or all(m.header.frame_id != "other_camera_optical_frame"
                                   for m in depth.messages)


def test_reliable_subscription_warns_about_best_effort_camera(setup):
    from rclpy.parameter import Parameter

    ros, node, depth, diags, image_pub, info_pub = setup
    # the test's camera publishers are best effort (sensor data); ask for reliable input
    result = node.set_parameters([Parameter("input_reliability", value="reliable"),
                                  Parameter("qos_check_period", value=0.5)])
    assert all(r.successful for r in result)
    wait_for(lambda: any("BEST_EFFORT" in p and "/image" in p for p in node.qos_problems),
             20, "a QoS mismatch warning for /image")

    def diag_mentions(msgs):
        return any("BEST_EFFORT" in diagnostic_dict(m).get("depth_node: depth", {}).get(
            "qos_problems", "") for m in msgs)

    diags.wait(diag_mentions, 10, "diagnostics naming the QoS problem")
    # back to best effort: the problem clears and frames flow again
    node.set_parameters([Parameter("input_reliability", value="best_effort")])
    wait_for(lambda: not node.qos_problems, 20, "the QoS problem to clear")


def test_image_before_its_first_camera_info_is_not_lost(setup):
    """A camera's first CameraInfo may arrive just after its first image (same stamp):
    that image waits for it and is published, instead of being rejected."""
    ros, node, depth, diags, image_pub, info_pub = setup
    for k in range(20):  # a fresh frame_id per try, in case DDS loses a first message
        frame_id, t = f"late_info_camera_{k}", 300_000_000_000 + k * 10_000_000
        rejected = node.stats.bad["no_camera_info"]
        image_pub.publish(image_msg(rgb(), t, frame_id=frame_id))
        try:
            wait_for(lambda: node.cameras[0].pairer.waiting > 0, 2.0, "image waiting for info")
            info_pub.publish(camera_info_msg(K, t, frame_id=frame_id))
            wait_for(lambda: any(m.header.frame_id == frame_id for m in depth.messages), 2.0,
                     "depth for the early image")
        except AssertionError:
            continue
        out = next(m for m in depth.messages if m.header.frame_id == frame_id)
        assert stamp_ns(out) == t
        assert node.stats.bad["no_camera_info"] == rejected
        return
    pytest.fail("an image sent before its CameraInfo never produced depth")
