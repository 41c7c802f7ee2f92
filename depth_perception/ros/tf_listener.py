"""Transforms from TF for the depth node: ``tf2_ros`` when importable, else ``/tf`` and
``/tf_static`` subscriptions feeding the package's pure-python buffer.

On a ROS 2 installation :class:`TfSource` wraps ``tf2_ros.Buffer`` +
``TransformListener``. On pip-only machines (no ``tf2_ros``) it subscribes ``/tf_static``
(reliable, transient-local, depth 100: late joiners still get the static transforms, as
tf2 does) and ``/tf`` (reliable, volatile) with ``tf2_msgs/msg/TFMessage`` (built by
``scripts/build_interfaces.sh`` when not installed) and fills a
:class:`depth_perception.data.tf.TfBuffer`. Without ``tf2_msgs`` there is no TF at all:
``available`` is False and ``reason`` says why.

    tf = TfSource(node)
    T_camera_lidar = tf.lookup("camera_optical_frame", "lidar", stamp_ns)   # [4,4]

``lookup(target, source, stamp_ns)`` returns ``T_target_source`` (``X_target = T @
X_source``) at ``stamp_ns``, or at the latest time the transform is known when that
stamp cannot be served (e.g. a dynamic link not yet received for it; ``latest=False``:
only at ``stamp_ns``); it raises :class:`depth_perception.data.tf.TransformError` saying
why when no transform exists.
"""
from __future__ import annotations

import logging
import math
import threading

import numpy as np

from depth_perception.conversions import stamp_to_ns
from depth_perception.data.projection import camera_from_lidar
from depth_perception.data.tf import TfBuffer, TransformError, transform_from_msg
from depth_perception.data.warp import camera_motion

log = logging.getLogger(__name__)

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"


def tf_qos(static: bool):
    """QoS of tf2's listeners: reliable, depth 100; transient-local for ``/tf_static``."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if static
                                  else DurabilityPolicy.VOLATILE))


def camera_height_and_pitch(T_base_camera) -> tuple[float, float]:
    """Height [m] and pitch below the horizon [deg] of a camera optical frame.

    ``T_base_camera``: [4,4] camera optical frame -> base frame (REP 105 ``base_link``,
    taken to lie on the road plane, z up). Height = z of the camera origin; pitch from the
    optical axis (z) in the base frame, positive when it looks down.
    """
    T = np.asarray(T_base_camera, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"T_base_camera must be a finite 4x4 transform, got shape {T.shape}")
    forward = T[:3, :3] @ np.array([0.0, 0.0, 1.0])
    pitch = math.degrees(math.asin(float(np.clip(-forward[2], -1.0, 1.0))))
    return float(T[2, 3]), pitch


def _import_tf2_ros():
    try:
        import tf2_ros
        return tf2_ros
    except ImportError:
        return None


def _import_tf_message():
    try:
        from tf2_msgs.msg import TFMessage
        return TFMessage, ""
    except ImportError as exc:
        return None, (f"tf2_msgs is not importable ({exc}): /tf and /tf_static cannot be "
                      "received; run scripts/build_interfaces.sh (pip-only machines) or "
                      "source a ROS 2 installation")


class TfSource:
    """TF for one rclpy node; see the module docstring.

    ``backend``: 'tf2_ros' | 'tf_messages' (own subscriptions, pure-python buffer) |
    'none' (no tf2_msgs: ``reason`` says why). ``prefer_tf2_ros=False`` forces the own
    subscriptions even where tf2_ros imports.
    """

    def __init__(self, node, callback_group=None, prefer_tf2_ros: bool = True):
        self.node = node
        self.backend = "none"
        self.reason = ""
        self.received = {"static": 0, "dynamic": 0, "rejected": 0}
        self._lock = threading.Lock()
        self._subs: list = []
        self._tf2_buffer = self._listener = None
        self._buffer = TfBuffer()
        self._parent: dict[str, str] = {}      # child -> parent (own subscriptions)
        self._latest: dict[str, int] = {}      # dynamic child -> newest stamp [ns]
        tf2_ros = _import_tf2_ros() if prefer_tf2_ros else None
        if tf2_ros is not None:
            self._tf2_buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._tf2_buffer, node,
                                                       spin_thread=False)
            self.backend = "tf2_ros"
            return
        msg_type, self.reason = _import_tf_message()
        if msg_type is None:
            return
        for topic, static in ((TF_STATIC_TOPIC, True), (TF_TOPIC, False)):
            self._subs.append(node.create_subscription(
                msg_type, topic, lambda msg, s=static: self._on_tf(msg, s), tf_qos(static),
                callback_group=callback_group))
        self.backend = "tf_messages"

    @property
    def available(self) -> bool:
        return self.backend != "none"

    def describe(self) -> str:
        return {"tf2_ros": "tf2_ros Buffer/TransformListener",
                "tf_messages": f"{TF_STATIC_TOPIC} + {TF_TOPIC} (tf2_msgs, own buffer)",
                }.get(self.backend, f"no TF: {self.reason}")

    # -- own subscriptions --------------------------------------------------------------
    def _on_tf(self, msg, static: bool) -> None:
        with self._lock:
            for tr in msg.transforms:
                parent = str(tr.header.frame_id).lstrip("/")
                child = str(tr.child_frame_id).lstrip("/")
                try:
                    T = transform_from_msg(tr.transform)
                    if static:
                        self._buffer.add_static(parent, child, T)
                        self._latest.pop(child, None)
                    else:
                        stamp = stamp_to_ns(tr.header.stamp)
                        self._buffer.add_dynamic(parent, child, stamp, T)
                        self._latest[child] = max(stamp, self._latest.get(child, stamp))
                    self._parent[child] = parent
                    self.received["static" if static else "dynamic"] += 1
                except ValueError as exc:  # zero quaternion, frame with two parents...
                    self.received["rejected"] += 1
                    log.warning("%s: transform %s -> %s ignored: %s",
                                TF_STATIC_TOPIC if static else TF_TOPIC, parent, child, exc)

    def _latest_common(self, target: str, source: str) -> int | None:
        """Newest stamp at which every dynamic link between the frames is known (the
        oldest of their newest stamps, as tf2 does for time 0); None if all static."""
        stamps = []
        for frame in (target, source):
            seen = 0
            while frame in self._parent and seen < 1000:
                if frame in self._latest:
                    stamps.append(self._latest[frame])
                frame, seen = self._parent[frame], seen + 1
        return min(stamps) if stamps else None

    # -- queries ------------------------------------------------------------------------
    def lookup(self, target: str, source: str, stamp_ns: int | None = None,
               latest: bool = True) -> np.ndarray:
        """[4,4] ``T_target_source`` at ``stamp_ns`` (None, or unservable with ``latest``:
        the latest; unservable without ``latest``: TransformError)."""
        target, source = str(target).lstrip("/"), str(source).lstrip("/")
        if not target or not source:
            raise TransformError(f"cannot look up a transform with an empty frame id "
                                 f"(target '{target}', source '{source}')")
        if self.backend == "tf2_ros":
            return self._lookup_tf2(target, source, stamp_ns, latest)
        if self.backend == "none":
            raise TransformError(f"cannot transform '{source}' -> '{target}': {self.reason}")
        with self._lock:
            first_error = None
            if stamp_ns is not None:
                try:
                    return self._buffer.lookup(target, source, int(stamp_ns))
                except TransformError as exc:
                    if not latest:
                        raise
                    first_error = exc
            newest = self._latest_common(target, source)
            try:
                return self._buffer.lookup(target, source, newest if newest is not None else 0)
            except TransformError as exc:
                raise (first_error or exc) from None

    def _lookup_tf2(self, target: str, source: str, stamp_ns: int | None,
                    latest: bool) -> np.ndarray:
        import tf2_ros
        from rclpy.time import Time

        errors = (tf2_ros.TransformException,)  # lookup, connectivity, extrapolation...
        first_error = None
        whens = [Time(nanoseconds=int(stamp_ns))] if stamp_ns is not None else []
        for when in whens + ([Time()] if latest or not whens else []):
            try:
                msg = self._tf2_buffer.lookup_transform(target, source, when)
                return transform_from_msg(msg.transform)
            except errors as exc:
                first_error = first_error or exc
        raise TransformError(f"cannot transform '{source}' -> '{target}': {first_error}")

    def close(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
        if self._listener is not None:
            unregister = getattr(self._listener, "unregister", None)
            if unregister is not None:
                unregister()
            self._listener = None


class _AtStamp:
    """A :class:`TfSource` answering only at the stamp asked (no latest fallback), for
    :func:`~depth_perception.data.projection.camera_from_lidar`."""

    def __init__(self, tf: TfSource):
        self._tf = tf

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        return self._tf.lookup(target, source, stamp_ns, latest=False)


class NodeTransforms:
    """The depth node's transforms: TF first (``use_tf``), the parameters as fallback.

    ``node``: the rclpy node (for the logger and the TF subscriptions); the source used
    for each transform is logged once, and again when it changes.
    """

    def __init__(self, node, callback_group=None):
        self._node = node
        self._group = callback_group
        self._tf: TfSource | None = None
        self._sources: dict[str, str] = {}
        self._said: dict[tuple[str, str], str] = {}

    def ensure(self, settings) -> None:
        """Create the TF source when a scale policy, ``point_frame`` or the temporal
        fusion needs a transform (kept afterwards)."""
        wanted = (settings.use_tf and settings.scale_policy in ("lidar_median", "ground_plane")
                  or bool(settings.point_frame) or settings.temporal_fusion)
        if self._tf is None and wanted:
            self._tf = TfSource(self._node, callback_group=self._group)
            self._node.get_logger().info(f"TF source: {self._tf.describe()}")

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
            self._tf = None

    def _note(self, what: str, source: str, frame: str = "") -> None:
        """``_sources[what]``: the latest source; logged once per camera ``frame``, and
        again when that camera's source changes (several cameras do not alternate)."""
        self._sources[what] = source
        if self._said.get((what, frame)) != source:
            self._said[(what, frame)] = source
            self._node.get_logger().info(f"{what}: {source}")

    def _lookup(self, target: str, source: str, stamp_ns, settings):
        """(T [4,4], '') from TF, or (None, why not)."""
        if not settings.use_tf:
            return None, "use_tf is false"
        if self._tf is None:
            return None, "no TF source"
        try:
            return self._tf.lookup(target, source, stamp_ns), ""
        except TransformError as exc:
            return None, str(exc)

    def cloud_target(self, camera_frame: str, stamp_ns: int, settings):
        """None (cloud in the camera frame) or ``(point_frame, T_point_frame_camera
        [4,4])`` from TF at the image stamp (else the latest). Raises TransformError when
        TF lacks it: the cloud frame has no parameter fallback (``use_tf`` is for the
        scale policies)."""
        target = str(settings.point_frame).lstrip("/")
        if not target or target == str(camera_frame).lstrip("/"):
            return None
        if self._tf is None:
            raise TransformError(f"no TF source for point_frame '{target}'")
        return target, self._tf.lookup(target, camera_frame, stamp_ns)

    def camera_from_lidar(self, camera_frame: str, lidar_frame: str, image_stamp_ns: int,
                          scan_stamp_ns: int, settings) -> np.ndarray:
        """[4,4] lidar cloud frame -> image frame, by
        :func:`depth_perception.data.projection.camera_from_lidar` as the data layer and
        the evaluator compute it: TF at the exact stamps, the scan moved to the image time
        through ``world_frame`` (``motion_compensation``) when TF has that chain at both
        stamps; else TF's camera<-LiDAR at the scan stamp, or its latest; else the
        ``lidar_to_camera`` parameter."""
        T, why = None, "use_tf is false" if not settings.use_tf else "no TF source"
        if settings.use_tf and self._tf is not None:
            attempts = ((_AtStamp(self._tf), settings.motion_compensation), (self._tf, False))
            for tf, compensate in attempts:
                try:
                    T = camera_from_lidar(tf, camera_frame, lidar_frame, image_stamp_ns,
                                          scan_stamp_ns, settings.world_frame, compensate)
                    break
                except TransformError as exc:
                    why = str(exc)
        if T is not None:
            self._note("camera<-lidar transform",
                       f"from TF ('{lidar_frame}' -> '{camera_frame}')", camera_frame)
            return T
        self._note("camera<-lidar transform", f"from parameter lidar_to_camera (TF: {why})",
                   camera_frame)
        return np.asarray(settings.lidar_to_camera, dtype=np.float64).reshape(4, 4)

    def camera_motion(self, camera_frame: str, prev_stamp_ns: int, stamp_ns: int,
                      settings) -> tuple[np.ndarray | None, str]:
        """(``T_cur_prev`` [4,4], '') of the camera between two image stamps, through
        ``world_frame`` by :func:`depth_perception.data.warp.camera_motion` (TF at exactly
        those stamps, as the offline evaluation reads a bag's TF), or (None, why not)."""
        if self._tf is None:
            return None, "no TF source"
        try:
            return camera_motion(_AtStamp(self._tf), camera_frame, prev_stamp_ns, stamp_ns,
                                 settings.world_frame), ""
        except TransformError as exc:
            return None, str(exc)

    def apply_camera_pose(self, est, frame_id: str, stamp_ns: int, settings) -> None:
        """Camera height and pitch of the ground_plane policy: TF (image frame in
        base_frame) when it has them, else camera_height / camera_pitch_deg."""
        policy = getattr(est, "scale_policy", None)
        if policy is None or not hasattr(policy, "camera_height"):
            return
        height, pitch = settings.camera_height, settings.camera_pitch_deg
        T, why = self._lookup(settings.base_frame, frame_id, stamp_ns, settings)
        if T is not None:
            tf_height, tf_pitch = camera_height_and_pitch(T)
            if tf_height > 0:
                height, pitch = tf_height, tf_pitch
                self._note("camera height", f"from TF ('{frame_id}' in "
                           f"'{settings.base_frame}': {height:.3f} m, pitch {pitch:.1f} deg)",
                           frame_id)
            else:
                T, why = None, (f"'{frame_id}' is {tf_height:.3f} m above "
                                f"'{settings.base_frame}', not above it")
        if T is None:
            self._note("camera height", f"from parameters camera_height ({height} m) / "
                       f"camera_pitch_deg (TF: {why})", frame_id)
        policy.camera_height = float(height)
        if hasattr(policy, "pitch_deg"):
            policy.pitch_deg = float(pitch)
