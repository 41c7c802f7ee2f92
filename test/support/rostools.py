"""Helpers for tests that talk over real DDS (rclpy): spin nodes in a background
executor, collect messages, and wait on conditions with a timeout (never fixed sleeps).

    with RosHarness() as ros:
        node = ros.add(DepthNode(context=ros.context, ...))
        out = ros.collect(Image, "/depth/image")
        pub = ros.publisher(Image, "/image")
        ros.wait_matched(pub)
        pub.publish(msg)
        out.wait_count(1)
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import numpy as np

DEFAULT_TIMEOUT = 30.0


def wait_for(predicate: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT,
             what: str = "condition", poll: float = 0.005) -> None:
    """Wait until ``predicate()`` is true; AssertionError naming ``what`` on timeout.

    For states without an event to wait on (DDS matching, lifecycle state): checks the
    predicate at short intervals up to the deadline (a bounded wait on a condition, not
    a sleep that assumes something happened).
    """
    deadline = time.monotonic() + timeout
    ticker = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        ticker.wait(poll)


class Collector:
    """Subscription that stores every message and wakes waiters."""

    def __init__(self, node, msg_type, topic: str, qos=None, keep: int | None = None,
                 on_message: Callable | None = None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.topic = topic
        self.messages: list = []
        self.count = 0
        self.keep = keep
        self._on_message = on_message
        self._cond = threading.Condition()
        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.subscription = node.create_subscription(msg_type, topic, self._callback, qos)

    def _callback(self, msg) -> None:
        if self._on_message is not None:
            self._on_message(msg)
        with self._cond:
            self.messages.append(msg)
            self.count += 1
            if self.keep is not None and len(self.messages) > self.keep:
                del self.messages[: len(self.messages) - self.keep]
            self._cond.notify_all()

    def wait_count(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list:
        """Wait until ``n`` messages arrived in total; returns the stored messages."""
        return self.wait(lambda msgs: self.count >= n, timeout, f"{n} message(s) on {self.topic}")

    def wait(self, predicate: Callable[[list], bool], timeout: float = DEFAULT_TIMEOUT,
             what: str = "") -> list:
        """Wait until ``predicate(messages)``; AssertionError on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.messages), timeout)
            if not ok:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for "
                                     f"{what or 'messages'} on {self.topic} "
                                     f"(received {self.count})")
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    @property
    def last(self):
        with self._cond:
            return self.messages[-1] if self.messages else None


class RosHarness:
    """Own rclpy context + the nodes' executor (one thread unless ``threads`` > 1, see
    :func:`depth_perception.ros.lifetime.make_executor`) spinning in a background thread."""

    def __init__(self, threads: int = 1, args: list[str] | None = None):
        import rclpy

        from depth_perception.ros.lifetime import make_executor

        self.context = rclpy.Context()
        rclpy.init(args=args, context=self.context)
        self.executor = make_executor(threads, context=self.context)
        self.nodes: list = []
        self.errors: list[Exception] = []
        self._closing = threading.Event()
        self.helper = self.add(rclpy.create_node(f"test_helper_{uuid.uuid4().hex[:8]}",
                                                 context=self.context))
        self._thread = threading.Thread(target=self._spin, daemon=True, name="test_executor")
        self._thread.start()

    def _spin(self) -> None:
        """Spin until close(); a callback that raises is recorded (close() fails the
        test with it) instead of silently stopping the executor."""
        from rclpy.executors import ExternalShutdownException

        while self.context.ok() and not self._closing.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                break
            except Exception as exc:  # noqa: BLE001 - reported by close()
                if self._closing.is_set() or not self.context.ok():
                    break
                self.errors.append(exc)

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def collect(self, msg_type, topic: str, qos=None, **kwargs) -> Collector:
        return Collector(self.helper, msg_type, topic, qos, **kwargs)

    def publisher(self, msg_type, topic: str, qos=None):
        from rclpy.qos import qos_profile_sensor_data

        return self.helper.create_publisher(msg_type, topic, qos or qos_profile_sensor_data)

    def wait_matched(self, publisher, n: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_for(lambda: publisher.get_subscription_count() >= n, timeout,
                 f"{n} subscriber(s) on {publisher.topic_name}")

    def wait_subscribed(self, collector: Collector, n: int = 1,
                        timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_for(lambda: collector.subscription.get_publisher_count() >= n, timeout,
                 f"{n} publisher(s) on {collector.topic}")

    def close(self) -> None:
        """Tear down in the executables' order (:mod:`depth_perception.ros.lifetime`):
        spinning stops, lifecycle nodes take their shutdown transition (worker threads
        joined), then nodes are destroyed and the context shut down."""
        from depth_perception.ros.lifetime import shutdown_lifecycle

        self._closing.set()
        self._thread.join(timeout=10.0)
        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            try:
                shutdown_lifecycle(node)
            except Exception as exc:  # noqa: BLE001 - teardown goes on (a test may have
                print(f"teardown: shutdown of {node.get_name()}: {exc!r}")  # destroyed it)
        for node in self.nodes:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        if self.context.ok():
            self.context.try_shutdown()
        if self.errors:
            raise AssertionError(f"callbacks raised while spinning: {self.errors!r}")

    def __enter__(self) -> "RosHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- messages ---------------------------------------------------------------------------
def header(stamp_ns: int, frame_id: str = "camera_optical_frame"):
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    return Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000),
                             nanosec=int(stamp_ns % 1_000_000_000)), frame_id=frame_id)


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera_optical_frame",
              encoding: str = "rgb8"):
    from depth_perception.conversions import numpy_to_image

    return numpy_to_image(rgb, encoding, header(stamp_ns, frame_id))


def camera_info_msg(intrinsics, stamp_ns: int, frame_id: str = "camera_optical_frame"):
    from depth_perception.conversions import intrinsics_to_camera_info

    return intrinsics_to_camera_info(intrinsics, header(stamp_ns, frame_id))


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def node_state(node) -> str:
    """Lifecycle state label of an rclpy LifecycleNode (e.g. 'unconfigured', 'active')."""
    return node._state_machine.current_state[1]


def stop_process(proc, timeout: float = 60.0) -> str:
    """SIGINT a node process started with stderr=PIPE (killed after ``timeout`` s);
    returns its stderr."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err
