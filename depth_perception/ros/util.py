"""ROS plumbing shared by the depth node and the replay tool.

* QoS: the sensor-data profile for cameras and a check that names publishers whose QoS
  can never match a subscription (the classic silent failure: a reliable subscriber and
  a best-effort camera).
* Synchronisation fallback: the latest CameraInfo per frame_id, when message_filters is
  not importable (pip-only ROS 2).
* Counters, rates and the diagnostics status (plain Python: key/value strings), turned
  into ``diagnostic_msgs/DiagnosticArray`` by :func:`diagnostic_array`.
* Optional imports of ROS packages that are missing from PyPI (message_filters,
  diagnostic_updater).

rclpy and message modules are imported inside functions: importing this module is cheap.
"""
from __future__ import annotations

import collections
import importlib
import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


# -- optional packages ------------------------------------------------------------------
def optional_import(name: str):
    """The module ``name`` or None when it is not installed (logged at debug level)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("optional module %s not available: %s", name, exc)
        return None


def import_message_filters():
    """``message_filters`` (a ROS 2 installation) or None (pip-only ROS 2)."""
    return optional_import("message_filters")


def import_diagnostic_updater():
    """``diagnostic_updater`` (a ROS 2 installation) or None (pip-only ROS 2)."""
    return optional_import("diagnostic_updater")


# -- time -------------------------------------------------------------------------------
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# -- QoS --------------------------------------------------------------------------------
def sensor_qos(depth: int = 5, reliable: bool = False):
    """The sensor-data profile (best effort, volatile, keep last ``depth``); ``reliable``
    asks for RELIABLE instead (matches reliable publishers only)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ("history", "reliability", "durability")}, depth=depth)
    if reliable:
        profile.reliability = ReliabilityPolicy.RELIABLE
    return profile


def output_qos(depth: int = 1):
    """Outputs: reliable + volatile (matches reliable and best-effort subscribers)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1):
    """Transient local (late joiners get the last message), e.g. /tf_static."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_incompatibility(subscriber_qos, publisher_qos) -> list[str]:
    """Why a publisher with ``publisher_qos`` can never reach ``subscriber_qos`` ([] if it can).

    Request/offer rules: a RELIABLE subscriber needs a RELIABLE publisher; a
    TRANSIENT_LOCAL subscriber needs a TRANSIENT_LOCAL publisher.
    """
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    reasons = []
    if (subscriber_qos.reliability == ReliabilityPolicy.RELIABLE
            and publisher_qos.reliability == ReliabilityPolicy.BEST_EFFORT):
        reasons.append("the subscriber asks for RELIABLE, the publisher offers BEST_EFFORT")
    if (subscriber_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            and publisher_qos.durability == DurabilityPolicy.VOLATILE):
        reasons.append("the subscriber asks for TRANSIENT_LOCAL, the publisher offers VOLATILE")
    return reasons


def incompatible_publishers(node, topic: str, subscriber_qos) -> list[str]:
    """One line per publisher of ``topic`` (resolved name) whose QoS cannot match."""
    problems = []
    for info in node.get_publishers_info_by_topic(topic):
        reasons = qos_incompatibility(subscriber_qos, info.qos_profile)
        if reasons:
            who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
            problems.append(f"publisher {who} on {topic}: " + "; ".join(reasons))
    return problems


# -- CameraInfo cache (sync fallback) -----------------------------------------------------
class CameraInfoCache:
    """Latest CameraInfo per frame_id. CameraInfo rarely changes: an image is paired with
    the latest info of its frame (the fallback when message_filters is missing)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[str, object] = {}

    def put(self, msg) -> None:
        with self._lock:
            self._latest[msg.header.frame_id] = msg

    def get(self, frame_id: str):
        with self._lock:
            return self._latest.get(frame_id)

    def frames(self) -> list[str]:
        with self._lock:
            return sorted(self._latest)

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()


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
    last_latency_ms: float = float("nan")
    max_latency_ms: float = float("nan")
    last_scale: float = float("nan")
    last_scale_source: str = ""
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
            ("frames_in", str(stats.frames_in)),
            ("frames_out", str(stats.frames_out)),
            ("frames_dropped", str(stats.frames_dropped)),
            ("frames_bad", str(sum(stats.bad.values()))),
            ("scale_source", stats.last_scale_source),
            ("scale", f"{stats.last_scale:.4f}"),
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


def diagnostic_array(stamp, name: str, hardware_id: str, level: int, message: str,
                     values: list):
    """Build a diagnostic_msgs/DiagnosticArray with one status."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=bytes([level]), name=name, message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values])
    array = DiagnosticArray(status=[status])
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


# -- pure array helpers used by the node --------------------------------------------------
def lidar_depth_image(points, T_camera_lidar, intrinsics):
    """Sparse reference depth for LiDAR scale policies.

    points: [N,3] float (lidar frame); T_camera_lidar: [4,4] mapping lidar points to the
    camera optical frame; returns [H,W] float32 z-depth in metres, NaN where no point
    projects (the nearest point wins where several do).
    """
    import numpy as np

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_camera_lidar must be 4x4, got {T.shape}")
    cam = points @ T[:3, :3].T + T[:3, 3]                       # [N,3] optical frame
    cam = cam[np.isfinite(cam).all(axis=1) & (cam[:, 2] > 0)]
    uv, z = intrinsics.project(cam)                              # [N,2], [N]
    u, v = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
    u, v, z = u[inside], v[inside], z[inside]
    order = np.argsort(-z)                                       # far first, near overwrites
    depth = np.full((intrinsics.height, intrinsics.width), np.nan, dtype=np.float32)
    depth[v[order], u[order]] = z[order]
    return depth
