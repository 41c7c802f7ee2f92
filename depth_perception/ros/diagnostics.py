"""Counters, rates and the diagnostics status of the depth node.

:class:`FrameStats` and :func:`diagnostic_values` are plain Python (key/value strings);
:func:`diagnostic_array` turns them into ``diagnostic_msgs/DiagnosticArray``.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from depth_perception import conversions


# -- throttling, rates, counters ----------------------------------------------------------
class Throttle:
    """``ready(key)`` is True at most once per ``period_s`` per key (monotonic clock)."""

    def __init__(self, period_s: float = 5.0):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True


class RateMeter:
    """Events per second over a sliding window of the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0, maxlen: int = 1000):
        self.window_s = window_s
        self._times: collections.deque = collections.deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        times = [t for t in list(self._times) if now - t <= self.window_s]
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0


#: Reasons a frame is rejected, as counted in diagnostics (``bad_<reason>``).
BAD_REASONS = ("encoding", "size", "empty", "image", "camera_info", "no_camera_info",
               "stamp_backwards", "model_nan", "backend_error")


@dataclass
class FrameStats:
    """Counters and last values of the node, updated from several threads."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    bad: dict = field(default_factory=lambda: {r: 0 for r in BAD_REASONS})
    last_inference_ms: float = float("nan")
    last_rectify_ms: float = float("nan")   # lens rectification of the last frame
    last_latency_ms: float = float("nan")
    max_latency_ms: float = float("nan")
    last_scale: float = float("nan")
    last_scale_source: str = ""
    input_plan: str = ""            # model input geometry and focal policy (why)
    input_size: str = ""            # model input WxH of the last frame
    camera_info_fallbacks: int = 0  # images paired with an older CameraInfo after the wait
    cloud_tf_failures: int = 0      # clouds not published: no transform to point_frame
    fusion_resets_no_tf: int = 0    # temporal fusion: frames published single-frame (no TF)
    last_fused_fraction: float = float("nan")   # share of the last frame's pixels fused
    confidence_source: str = ""     # of confidence/image: model | temporal | '' (none)
    backend: str = ""
    precision: str = ""
    input_rate: RateMeter = field(default_factory=RateMeter)
    output_rate: RateMeter = field(default_factory=RateMeter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())

    def count_bad(self, reason: str) -> None:
        if reason not in self.bad:
            raise ValueError(f"unknown bad-input reason '{reason}'; known: {BAD_REASONS}")
        with self.lock:
            self.bad[reason] += 1

    def reset(self) -> None:
        with self.lock:
            self.frames_in = self.frames_out = self.frames_dropped = 0
            self.camera_info_fallbacks = self.cloud_tf_failures = 0
            self.fusion_resets_no_tf = 0
            self.bad = {r: 0 for r in BAD_REASONS}
            self.max_latency_ms = float("nan")
            self.input_rate = RateMeter()
            self.output_rate = RateMeter()


# -- diagnostics ------------------------------------------------------------------------
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels (bytes 0, 1, 2)


def diagnostic_values(stats: FrameStats, state: str, problem: str = "") -> tuple[int, str, list]:
    """(level, message, [(key, value-string)]) describing the node, numpy-free.

    ERROR when the node is not producing depth because of ``problem`` (e.g. the model
    failed to load), WARN while bad input is being rejected or frames are dropped in the
    last window, OK otherwise.
    """
    with stats.lock:
        values = [
            ("state", state),
            ("backend", stats.backend),
            ("precision", stats.precision),
            ("input_rate_hz", f"{stats.input_rate.rate():.2f}"),
            ("output_rate_hz", f"{stats.output_rate.rate():.2f}"),
            ("latency_ms", f"{stats.last_latency_ms:.1f}"),
            ("max_latency_ms", f"{stats.max_latency_ms:.1f}"),
            ("inference_ms", f"{stats.last_inference_ms:.1f}"),
            ("rectify_ms", f"{stats.last_rectify_ms:.2f}"),
            ("frames_in", str(stats.frames_in)),
            ("frames_out", str(stats.frames_out)),
            ("frames_dropped", str(stats.frames_dropped)),
            ("frames_bad", str(sum(stats.bad.values()))),
            ("scale_source", stats.last_scale_source),
            ("scale", f"{stats.last_scale:.4f}"),
            ("input_size", stats.input_size),
            ("input_geometry", stats.input_plan),
            ("camera_info_fallbacks", str(stats.camera_info_fallbacks)),
            ("cloud_tf_failures", str(stats.cloud_tf_failures)),
            ("fusion_resets_no_tf", str(stats.fusion_resets_no_tf)),
            ("fused_fraction", f"{stats.last_fused_fraction:.3f}"),
            ("confidence_source", stats.confidence_source or "none"),
        ]
        values += [(f"bad_{reason}", str(n)) for reason, n in stats.bad.items()]
        bad = sum(stats.bad.values())
    if problem:
        return ERROR, problem, values
    if state != "active":
        return WARN, f"node is {state}", values
    if bad:
        return WARN, f"{bad} bad input frame(s) rejected", values
    return OK, "producing depth", values


def diagnostic_array(stamp, hardware_id: str, statuses: list):
    """Build a diagnostic_msgs/DiagnosticArray: one status per (name, level, message,
    values) of ``statuses``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    array = DiagnosticArray(status=[
        DiagnosticStatus(level=bytes([level]), name=name, message=message,
                         hardware_id=hardware_id,
                         values=[KeyValue(key=k, value=v) for k, v in values])
        for name, level, message, values in statuses])
    array.header.stamp = stamp
    return array


def diagnostic_dict(array) -> dict[str, dict]:
    """DiagnosticArray -> {status name: {'level', 'message', key: value...}} (for tests/tools)."""
    out = {}
    for status in array.status:
        level = status.level
        entry = {"level": level[0] if isinstance(level, (bytes, bytearray)) else int(level),
                 "message": status.message}
        entry.update({kv.key: kv.value for kv in status.values})
        out[status.name] = entry
    return out




def image_problem(msg) -> tuple[str, str] | None:
    """(reason, text) when an Image cannot be a colour input, None if it looks usable.

    Classifies the failure for the diagnostics counters; the decoding itself (and its own
    checks) stays in :mod:`depth_perception.conversions`.
    """
    if not hasattr(msg, "encoding"):  # CompressedImage
        return ("empty", "compressed image with no data") if len(msg.data) == 0 else None
    width, height, encoding = int(msg.width), int(msg.height), str(msg.encoding)
    if width <= 0 or height <= 0:
        return "empty", f"empty {width}x{height} image (frame_id '{msg.header.frame_id}')"
    if encoding not in conversions.COLOUR_ENCODINGS:
        return "encoding", (f"image encoding '{encoding}' is not a colour encoding; expected "
                            f"one of {list(conversions.COLOUR_ENCODINGS)}")
    dtype, channels = conversions.ENCODINGS[encoding]
    row = width * channels * dtype.itemsize
    if int(msg.step) < row or len(msg.data) != int(msg.step) * height:
        return "size", (f"image {width}x{height} {encoding}: step {msg.step} and "
                        f"{len(msg.data)} data bytes do not fit (expected step >= {row} and "
                        f"step*height bytes)")
    return None


class StatusReporter:
    """``/diagnostics`` (diagnostic_updater where it imports, else a plain publisher) and
    ``~/status`` (depth_perception/msg/DepthStatus when the interfaces are built) of a
    depth node. Reads ``node.cameras`` (each with ``stats`` and ``label``),
    ``node.state``, ``node.problem``, ``node.qos_problems`` and ``node.settings``;
    publishes in every lifecycle state. One status per camera: ``<node>: depth`` with
    one camera, ``<node>: depth <camera>`` with several."""

    def __init__(self, node, period: float, callback_group, updater_module=None):
        from depth_perception.ros import interfaces
        from depth_perception.ros.qos import output_qos

        self._node = node
        self._status_type = interfaces.message_type("DepthStatus")
        self._status_pub = None
        if self._status_type is not None:
            try:
                self._status_pub = node.create_publisher(self._status_type, "~/status",
                                                         output_qos(10))
            except RuntimeError as exc:     # rclpy's RCLError: a typesupport did not load
                node.get_logger().error(f"~/status disabled: {interfaces.load_error(exc)}")
        else:
            node.get_logger().info(f"~/status disabled: {interfaces.availability().reason}")
        self._updater = None
        if updater_module is not None:
            self._updater = updater_module.Updater(node, period=period)
            self._updater.setHardwareID(node.get_fully_qualified_name())
            for camera in node.cameras:
                self._updater.add(self._status_name(camera),
                                  lambda stat, camera=camera: self._task(stat, camera))
            self.timer = node.create_timer(period, self.publish_statuses,
                                           callback_group=callback_group)
            return
        from diagnostic_msgs.msg import DiagnosticArray

        self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", output_qos(10))
        self.timer = node.create_timer(period, self.publish, callback_group=callback_group)

    def _status_name(self, camera) -> str:
        name = f"{self._node.get_name()}: depth"
        return name if len(self._node.cameras) == 1 else f"{name} {camera.label}"

    def _values(self, camera):
        node = self._node
        level, message, values = diagnostic_values(camera.stats, node.state, node.problem)
        values.append(("focal_policy", node.settings.focal_policy))
        values.append(("qos_problems", "; ".join(node.qos_problems)))
        if len(node.cameras) > 1:
            values.append(("camera", camera.label))
        return level, message, values

    def _task(self, stat, camera):
        level, message, values = self._values(camera)
        stat.summary(level, message)
        for key, value in values:
            stat.add(key, value)
        return stat

    def publish(self) -> None:
        """/diagnostics now, then ~/status."""
        node = self._node
        if self._updater is not None:
            self._updater.force_update()
        else:
            statuses = [(self._status_name(camera), *self._values(camera))
                        for camera in node.cameras]
            self._diag_pub.publish(diagnostic_array(
                node.get_clock().now().to_msg(), node.get_fully_qualified_name(), statuses))
        self.publish_statuses()

    def publish_statuses(self) -> None:
        """~/status now: one message, or one per camera (frame_id: the camera's last
        image frame) with several."""
        cameras = self._node.cameras
        if len(cameras) == 1:
            self.publish_status(None)
            return
        for camera in cameras:
            self.publish_status(None, camera.stats, camera.frame_id)

    def publish_status(self, header, stats: FrameStats | None = None,
                       frame_id: str = "") -> None:
        """~/status stamped with ``header`` (the frame's), or now and ``frame_id`` when
        None, with the counters ``stats`` of that frame's camera (default: the first
        camera's)."""
        if self._status_pub is None:
            return
        node = self._node
        s = stats if stats is not None else node.stats
        msg = self._status_type()
        if header is not None:
            msg.header.stamp = header.stamp
            msg.header.frame_id = header.frame_id
        else:
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = frame_id
        with s.lock:
            msg.state = node.state
            msg.message = node.problem
            msg.backend, msg.precision = s.backend, s.precision
            msg.model = node.settings.model
            msg.scale_source = s.last_scale_source
            msg.scale = float(s.last_scale)
            msg.focal_policy = node.settings.focal_policy
            msg.input_geometry = s.input_plan
            msg.input_size = s.input_size
            msg.inference_ms = float(s.last_inference_ms)
            msg.latency_ms = float(s.last_latency_ms)
            msg.input_hz = float(s.input_rate.rate())
            msg.output_hz = float(s.output_rate.rate())
            msg.frames_in, msg.frames_out = s.frames_in, s.frames_out
            msg.frames_dropped, msg.frames_bad = s.frames_dropped, sum(s.bad.values())
            msg.camera_info_fallbacks = s.camera_info_fallbacks
        self._status_pub.publish(msg)
