"""A small pure-numpy TF buffer for offline use (bags): static and dynamic transforms.

Conventions as in tf2: an edge ``parent -> child`` stores ``T_parent_child`` (4x4, maps
points expressed in the child frame into the parent frame). ``lookup(target, source,
stamp_ns)`` returns ``T_target_source``: ``X_target = T @ X_source``. Quaternions are
``(x, y, z, w)`` as in ROS messages. Dynamic edges are interpolated (lerp for the
translation, slerp for the rotation) between the two stamps around the query; queries
outside a dynamic edge's time range raise :class:`TransformError` (no extrapolation).
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import numpy as np

from depth_perception.conversions import stamp_to_ns

log = logging.getLogger(__name__)


class TransformError(ValueError):
    """A transform cannot be looked up (missing link, unconnected frames, extrapolation)."""


# ---------------------------------------------------------------------------------------
# quaternion / transform helpers (xyzw)
# ---------------------------------------------------------------------------------------
def quat_normalize(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    return q / n


def quat_to_matrix(q) -> np.ndarray:
    """(x, y, z, w) -> [3,3] rotation matrix."""
    x, y, z, w = quat_normalize(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R) -> np.ndarray:
    """[3,3] rotation matrix -> (x, y, z, w) with w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = s / 4
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    return q if q[3] >= 0 else -q


def quat_slerp(q0, q1, t: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (shortest path), t in [0, 1]."""
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact enough and stable
        return quat_normalize(q0 + t * (q1 - q0))
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def make_transform(translation=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0, 1.0)) -> np.ndarray:
    """Translation (x, y, z) and rotation -> [4,4] float64 ``T`` with ``X' = R X + t``.

    ``rotation``: a quaternion (x, y, z, w) as in ROS messages, or a [3,3] matrix."""
    R = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    if t.shape != (3,) or R.shape not in ((4,), (3, 3)):
        raise ValueError(f"make_transform: expected a translation [3] and a quaternion [4] "
                         f"(x, y, z, w) or rotation matrix [3,3], got {t.shape} and {R.shape}")
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(R) if R.shape == (4,) else R
    T[:3, 3] = t
    return T


def invert_transform(T) -> np.ndarray:
    """Inverse of a rigid [4,4] transform."""
    T = np.asarray(T, dtype=np.float64)
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


def transform_from_msg(transform) -> np.ndarray:
    """geometry_msgs/Transform (translation, rotation) -> [4,4]."""
    t, r = transform.translation, transform.rotation
    return make_transform((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def pose_from_msg(pose) -> np.ndarray:
    """geometry_msgs/Pose (position, orientation) -> [4,4]."""
    p, r = pose.position, pose.orientation
    return make_transform((p.x, p.y, p.z), (r.x, r.y, r.z, r.w))


def _strip(frame: str) -> str:
    return str(frame).lstrip("/")


# ---------------------------------------------------------------------------------------
# buffer
# ---------------------------------------------------------------------------------------
@dataclass
class _DynamicEdge:
    stamps: list = field(default_factory=list)        # sorted int ns
    translations: list = field(default_factory=list)  # [3]
    quats: list = field(default_factory=list)         # [4] xyzw

    def insert(self, stamp_ns: int, T: np.ndarray) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:  # same stamp: replace
            self.translations[i], self.quats[i] = T[:3, 3].copy(), matrix_to_quat(T[:3, :3])
            return
        self.stamps.insert(i, stamp_ns)
        self.translations.insert(i, T[:3, 3].copy())
        self.quats.insert(i, matrix_to_quat(T[:3, :3]))

    def at(self, stamp_ns: int, parent: str, child: str) -> np.ndarray:
        if not self.stamps:
            raise TransformError(f"no transform {parent} -> {child} recorded")
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            return make_transform(self.translations[i], self.quats[i])
        if i == 0 or i == len(self.stamps):
            raise TransformError(
                f"transform {parent} -> {child} at {stamp_ns * 1e-9:.9f} s would need "
                f"extrapolation: known from {self.stamps[0] * 1e-9:.9f} to "
                f"{self.stamps[-1] * 1e-9:.9f} s")
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        a = (stamp_ns - t0) / (t1 - t0)
        trans = (1 - a) * self.translations[i - 1] + a * self.translations[i]
        return make_transform(trans, quat_slerp(self.quats[i - 1], self.quats[i], a))


class TfBuffer:
    """Frames form a tree: each child has one parent (static or dynamic edge)."""

    def __init__(self):
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}       # child -> T_parent_child
        self._dynamic: dict[str, _DynamicEdge] = {}    # child -> edge

    # -- filling ----------------------------------------------------------------------
    def _set_parent(self, parent: str, child: str) -> None:
        if parent == child:
            raise ValueError(f"transform from frame '{parent}' to itself")
        old = self._parent.get(child)
        if old is not None and old != parent:
            raise ValueError(f"frame '{child}' already has parent '{old}', cannot also be a "
                             f"child of '{parent}' (TF frames form a tree)")
        self._parent[child] = parent

    def add_static(self, parent: str, child: str, T) -> None:
        parent, child = _strip(parent), _strip(child)
        self._set_parent(parent, child)
        self._dynamic.pop(child, None)
        self._static[child] = np.asarray(T, dtype=np.float64).copy()

    def add_dynamic(self, parent: str, child: str, stamp_ns: int, T) -> None:
        parent, child = _strip(parent), _strip(child)
        if child in self._static:
            raise ValueError(f"frame '{child}' has a static transform from '{parent}'; "
                             "it cannot also be dynamic")
        self._set_parent(parent, child)
        self._dynamic.setdefault(child, _DynamicEdge()).insert(int(stamp_ns),
                                                              np.asarray(T, np.float64))

    def add_tf_message(self, msg, static: bool) -> None:
        """tf2_msgs/TFMessage (rclpy or rosbags): every TransformStamped in it."""
        for tr in msg.transforms:
            T = transform_from_msg(tr.transform)
            if static:
                self.add_static(tr.header.frame_id, tr.child_frame_id, T)
            else:
                self.add_dynamic(tr.header.frame_id, tr.child_frame_id,
                                 stamp_to_ns(tr.header.stamp), T)

    def add_odometry(self, msg) -> None:
        """nav_msgs/Odometry: header.frame_id (odom) -> child_frame_id (base_link)."""
        self.add_dynamic(msg.header.frame_id, msg.child_frame_id, stamp_to_ns(msg.header.stamp),
                         pose_from_msg(msg.pose.pose))

    # -- queries ----------------------------------------------------------------------
    @property
    def frames(self) -> list[str]:
        return sorted(set(self._parent) | set(self._parent.values()))

    def _describe(self) -> str:
        edges = [f"{p}->{c}{'' if c in self._static else ' (dynamic)'}"
                 for c, p in sorted(self._parent.items())]
        return ", ".join(edges) if edges else "no transforms at all"

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise TransformError(f"TF loop above frame '{frame}'")
        return chain

    def _edge(self, child: str, stamp_ns: int) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        return self._dynamic[child].at(stamp_ns, self._parent[child], child)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        """[4,4] T_target_source at ``stamp_ns``: maps source-frame points into target."""
        target, source = _strip(target_frame), _strip(source_frame)
        if target == source:
            return np.eye(4)
        known = set(self.frames)
        for name in (target, source):
            if name not in known:
                raise TransformError(
                    f"cannot transform '{source}' -> '{target}': frame '{name}' is unknown; "
                    f"known transforms: {self._describe()}")
        up_t, up_s = self._chain(target), self._chain(source)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TransformError(
                f"cannot transform '{source}' -> '{target}': the frames are not connected "
                f"(roots '{up_s[-1]}' and '{up_t[-1]}'); known transforms: {self._describe()}")
        # T_common_source and T_common_target by composing edges up to the common ancestor
        T_cs = np.eye(4)
        for child in up_s[: up_s.index(common)]:
            T_cs = self._edge(child, stamp_ns) @ T_cs
        T_ct = np.eye(4)
        for child in up_t[: up_t.index(common)]:
            T_ct = self._edge(child, stamp_ns) @ T_ct
        return invert_transform(T_ct) @ T_cs
