"""Reading rosbag2 recordings (mcap or sqlite3) with ``rosbags``: no ROS install needed.

:class:`BagReader` indexes the header stamps of every topic it is asked for, reads the
bag's ``condition`` from ``metadata.yaml`` ``custom_data``, and decodes messages by index
on demand (images, camera infos, clouds, odometry, ground-truth depth). Big messages are
read again from the storage when asked for, so memory stays flat on long bags.

A damaged bag is reported with its file name. Messages stored before the damage stay
usable where the storage allows it (:mod:`depth_perception.data.recovery`), and
:attr:`BagReader.damage` says what went wrong; a storage whose reading fails part-way
keeps what was indexed. When nothing can be recovered, the error names the file and
the repair tools.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from depth_perception import conversions
from depth_perception.camera import Intrinsics

log = logging.getLogger(__name__)

#: message types whose CDR payload starts with std_msgs/Header (stamp read without decoding)
_STAMPED = {
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2", "nav_msgs/msg/Odometry",
}


@dataclass(frozen=True)
class BagTopics:
    """Topic names in a recording (defaults: the package's conventions)."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    lidar: str = "/lidar/points"
    odom: str = "/odom"
    tf_static: str = "/tf_static"
    tf: str = "/tf"
    gt_depth: str = "/ground_truth/depth"
    #: mono8 mask of the pixels that see moving objects (synthetic drives), optional
    gt_moving: str = "/ground_truth/moving"

    def names(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Odometry:
    """One nav_msgs/Odometry: pose ``T_parent_child`` [4,4] and body-frame twist."""

    stamp_ns: int
    frame_id: str
    child_frame_id: str
    T: np.ndarray
    linear: np.ndarray    # [3] m/s in child frame
    angular: np.ndarray   # [3] rad/s in child frame

    @property
    def speed(self) -> float:
        return float(np.linalg.norm(self.linear))


def _cdr_header_stamp(raw: bytes | memoryview) -> int:
    """Header stamp (ns) of a CDR-serialized stamped message: sec, nanosec after 4 bytes."""
    order = "<" if raw[1] == 1 else ">"  # encapsulation kind: 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nanosec = np.frombuffer(bytes(raw[4:12]), dtype=f"{order}i4,{order}u4")[0]
    return int(sec) * 1_000_000_000 + int(nanosec)


def read_bag_metadata(path: Path) -> dict:
    """``rosbag2_bagfile_information`` of a bag's metadata.yaml (yaml.safe_load)."""
    import yaml

    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        raise FileNotFoundError(
            f"bag {path}: no metadata.yaml; expected a rosbag2 directory (for a bag whose "
            "recording was interrupted, `ros2 bag reindex` rebuilds it)")
    try:
        data = yaml.safe_load(meta.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"bag {path}: metadata.yaml is not valid YAML: {err}") from err
    info = data.get("rosbag2_bagfile_information")
    if not isinstance(info, dict):
        raise ValueError(f"bag {path}: metadata.yaml has no 'rosbag2_bagfile_information'")
    return info


class BagReader:
    """Random access to the topics of one rosbag2 recording.

    Args:
        path: the bag directory (or a storage file inside it).
        topics: topic names; only topics present in the bag are indexed.
    """

    def __init__(self, path: str | Path, topics: BagTopics | None = None):
        path = Path(path)
        if path.is_file():
            path = path.parent
        if not path.exists():
            raise FileNotFoundError(f"bag {path} does not exist")
        self.path = path
        self.topics = topics or BagTopics()
        self.metadata = read_bag_metadata(path)
        custom = self.metadata.get("custom_data") or {}
        self.condition: str | None = custom.get("condition") if isinstance(custom, dict) else None
        self.damage: str | None = None
        self._reader = None
        self._pid = None
        self._typestore = None
        self._types_registered = False
        # when damaged: [(topic, msgtype, bag_time, raw bytes | (file, offset, k) in an mcap)]
        self._salvaged: list | None = None
        self._salvaged_types: list[tuple[str, str, bool, str]] = []  # custom types, mcap
        self._mcap_cache: dict[tuple[int, int], list[bytes]] = {}
        self._open()
        self._index()

    # -- opening / typestore ----------------------------------------------------------
    def _open(self):
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        if self._typestore is None:
            self._typestore = get_typestore(Stores.ROS2_KILTED)
        if self._salvaged is not None:
            return
        storage = self.metadata.get("storage_identifier", "?")
        files = ", ".join(str(p) for p in self.metadata.get("relative_file_paths", []))
        reader = Reader(self.path)
        try:
            reader.open()
        except Exception as err:
            if self._pid is None and self._salvage(err):
                return
            hint = ("an mcap file whose summary/footer is missing (recording interrupted) "
                    "and that holds no complete message; `ros2 bag reindex` or "
                    "`mcap recover` rebuilds it"
                    if storage == "mcap" else
                    "damaged storage (the file may be truncated or not a bag)")
            raise ValueError(f"bag {self.path}: cannot open storage file(s) {files} "
                             f"({storage}): {str(err).rstrip('.')}. This looks like {hint}") from err
        self._reader, self._pid = reader, os.getpid()
        if not self._types_registered:
            self._register_custom_types(reader.connections)
            self._types_registered = True

    def _salvage(self, open_error: Exception) -> bool:
        """Keep the messages before the damage of a storage rosbags cannot open."""
        from depth_perception.data import recovery

        storage = self.metadata.get("storage_identifier", "?")
        files = [self.path / f for f in self.metadata.get("relative_file_paths", [])]
        if storage == "sqlite3":
            salvaged = recovery.salvage_sqlite3(self.path, files, open_error)
        elif storage == "mcap":
            salvaged = recovery.salvage_mcap(self.path, files, open_error)
        else:
            salvaged = None
        if salvaged is None:
            return False
        self._salvaged = salvaged.rows
        self._salvaged_types = salvaged.types
        if salvaged.types:
            self._register_types(salvaged.types)
        self._pid = os.getpid()
        self.damage = salvaged.damage
        return True

    def _row_raw(self, row) -> bytes | memoryview:
        """Serialized message of a salvaged row (read again from an mcap file)."""
        from depth_perception.data.recovery import mcap_messages

        where = row[3]
        if not isinstance(where, tuple):
            return where
        fi, offset, k = where
        if (fi, offset) not in self._mcap_cache:
            path = self.path / self.metadata["relative_file_paths"][fi]
            self._mcap_cache.clear()  # one chunk at a time: memory stays flat
            self._mcap_cache[(fi, offset)] = mcap_messages(path, offset)
        return self._mcap_cache[(fi, offset)][k]

    def _register_custom_types(self, connections) -> None:
        from rosbags.interfaces import MessageDefinitionFormat

        self._register_types([(c.topic, c.msgtype, c.msgdef.format == MessageDefinitionFormat.IDL,
                               c.msgdef.data) for c in connections])

    def _register_types(self, defs) -> None:
        """Register the (topic, msgtype, is_idl, definition) types the typestore lacks."""
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        for topic, msgtype, is_idl, text in defs:
            if msgtype in self._typestore.types or not text:
                continue
            try:
                types = (get_types_from_idl(text) if is_idl
                         else get_types_from_msg(text, msgtype))
                self._typestore.register(types)
                log.info("bag %s: registered custom type %s", self.path, msgtype)
            except Exception as err:  # an unreadable custom type only hides its topic
                log.warning("bag %s: cannot register type %s of %s: %s", self.path,
                            msgtype, topic, err)

    @property
    def reader(self):
        """The rosbags Reader, reopened after a fork (DataLoader workers)."""
        if self._salvaged is None and self._pid != os.getpid():
            self._reader = None
            self._open()
        return self._reader

    @property
    def typestore(self):
        if self._typestore is None:
            self._open()
        return self._typestore

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"], state["_pid"] = None, None
        state["_typestore"], state["_types_registered"] = None, False  # rebuilt on use
        state["_mcap_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._salvaged is not None:
            from rosbags.typesys import Stores, get_typestore

            self._typestore = get_typestore(Stores.ROS2_KILTED)
            self._register_types(self._salvaged_types)
            self._pid = os.getpid()

    # -- index ------------------------------------------------------------------------
    def _connections(self) -> list[tuple[str, str]]:
        """(topic, msgtype) of every connection."""
        if self._salvaged is not None:
            return sorted({(r[0], r[1]) for r in self._salvaged})
        return [(c.topic, c.msgtype) for c in self._reader.connections]

    def _iter_raw(self, topics: set[str]):
        """(topic, msgtype, bag_time, raw) of ``topics`` in receive-time order."""
        if self._salvaged is not None:
            for row in self._salvaged:
                if row[0] in topics:
                    yield row[0], row[1], row[2], self._row_raw(row)
            return
        conns = [c for c in self._reader.connections if c.topic in topics]
        for conn, bag_time, raw in self._reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, bag_time, raw

    def _index(self) -> None:
        """One pass: per topic, [bag time, header stamp] of every message; small ones kept."""
        wanted = set(self.topics.names().values())
        image = self.topics.image
        compressed = image.rstrip("/") + "/compressed"
        available = {t for t, _ in self._connections()}
        if image not in available and compressed in available:
            wanted.add(compressed)
            self._image_topic = compressed
        else:
            self._image_topic = image
        present = sorted(available & wanted)
        self._msgtype = {t: m for t, m in self._connections() if t in wanted}
        self._bag_times: dict[str, list[int]] = {t: [] for t in present}
        self._stamps: dict[str, list[int]] = {t: [] for t in present}
        self._dup_rank: dict[str, list[int]] = {t: [] for t in present}
        self._raw_index: dict[str, list[int]] = {t: [] for t in present}  # salvaged rows
        self._small: dict[str, list] = {}  # decoded small messages (tf, tf_static, odom...)
        small = {self.topics.tf, self.topics.tf_static, self.topics.odom,
                 self.topics.camera_info}
        row = -1
        try:
            for row, (topic, msgtype, bag_time, raw) in enumerate(self._iter_raw(set(present))):
                if topic in small or msgtype not in _STAMPED:
                    msg = self._typestore.deserialize_cdr(raw, msgtype)
                    self._small.setdefault(topic, []).append(msg)
                    stamp = (conversions.stamp_to_ns(msg.header.stamp)
                             if hasattr(msg, "header") else bag_time)
                else:
                    stamp = _cdr_header_stamp(raw)
                times = self._bag_times[topic]
                dup = self._dup_rank[topic]
                dup.append(dup[-1] + 1 if times and times[-1] == bag_time else 0)
                times.append(bag_time)
                self._stamps[topic].append(stamp)
                self._raw_index[topic].append(row)
        except Exception as err:
            n = sum(len(v) for v in self._bag_times.values())
            files = ", ".join(self.metadata.get("relative_file_paths", [])) or "?"
            self.damage = (f"bag {self.path} (storage file(s) {files}): reading stopped "
                           f"after {n} messages: {type(err).__name__}: {err}")
            log.warning("%s; the messages before the damage stay usable", self.damage)
            if n == 0:
                raise ValueError(f"{self.damage}; no message could be read (the file is "
                                 "corrupt or truncated)") from err
        if self._salvaged is not None:  # keep only the rows of the wanted topics
            self._salvaged = [r for r in self._salvaged if r[0] in set(present)]
            self._raw_index = {t: [] for t in present}
            for k, r in enumerate(self._salvaged):
                self._raw_index[r[0]].append(k)
        self._sorted_stamps: dict[str, np.ndarray] = {}
        # stable order by header stamp (bags are ordered by receive time)
        self._order: dict[str, np.ndarray] = {
            topic: np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
            for topic, stamps in self._stamps.items()}

    # -- topic lookup -----------------------------------------------------------------
    @property
    def available_topics(self) -> list[str]:
        return sorted({t for t, _ in self._connections()})

    def topic_name(self, key: str) -> str:
        """Topic name for a BagTopics field ('image' resolves to the compressed topic
        when only ``<image>/compressed`` is recorded)."""
        return self._image_topic if key == "image" else getattr(self.topics, key)

    def has(self, key: str) -> bool:
        return len(self._stamps.get(self.topic_name(key), [])) > 0

    def require(self, key: str) -> str:
        topic = self.topic_name(key)
        if not self._stamps.get(topic):
            extra = (" (nor its /compressed variant)" if key == "image" else "")
            state = ("has no messages" if topic in self._stamps else "is not in the bag")
            raise ValueError(f"bag {self.path}: topic '{topic}'{extra} {state}; expected "
                             f"{key} messages there. Topics in this bag: "
                             f"{self.available_topics}")
        return topic

    def count(self, key: str) -> int:
        return len(self._stamps.get(self.topic_name(key), []))

    def stamps(self, key: str) -> np.ndarray:
        """[N] int64 header stamps (ns) of a topic, sorted; index i matches ``*(i)``."""
        topic = self.require(key)
        if topic not in self._sorted_stamps:
            stamps = np.asarray(self._stamps[topic], dtype=np.int64)[self._order[topic]]
            stamps.flags.writeable = False
            self._sorted_stamps[topic] = stamps
        return self._sorted_stamps[topic]

    def nearest(self, key: str, stamp_ns: int) -> tuple[int, int]:
        """(index, |dt| ns) of the message of ``key`` nearest in time to ``stamp_ns``."""
        stamps = self.stamps(key)
        i = int(np.searchsorted(stamps, stamp_ns))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(candidates, key=lambda k: abs(int(stamps[k]) - stamp_ns))
        return j, abs(int(stamps[j]) - stamp_ns)

    # -- decoding ---------------------------------------------------------------------
    def message(self, key: str, index: int):
        """The decoded (rosbags) message number ``index`` (in header-stamp order)."""
        topic = self.require(key)
        n = len(self._stamps[topic])
        if not 0 <= index < n:
            raise IndexError(f"bag {self.path}: topic '{topic}' has {n} messages, asked for "
                             f"index {index}")
        raw_index = int(self._order[topic][index])
        if topic in self._small:
            return self._small[topic][raw_index]
        if self._salvaged is not None:
            row = self._salvaged[self._raw_index[topic][raw_index]]
            return self.typestore.deserialize_cdr(self._row_raw(row), row[1])
        bag_time = self._bag_times[topic][raw_index]
        same = self._dup_rank[topic][raw_index]  # earlier messages with this receive time
        conns = [c for c in self.reader.connections if c.topic == topic]
        for conn, _, raw in self.reader.messages(connections=conns, start=bag_time,
                                                 stop=bag_time + 1):
            if same == 0:
                return self.typestore.deserialize_cdr(raw, conn.msgtype)
            same -= 1
        raise ValueError(f"bag {self.path}: message {index} of '{topic}' could not be read "
                         "back (damaged storage?)")

    def _wrap(self, key: str, index: int, func):
        msg = self.message(key, index)
        try:
            return func(msg)
        except ValueError as err:
            raise ValueError(f"bag {self.path}, topic '{self.topic_name(key)}', message "
                             f"{index}: {err}") from err

    def image(self, index: int) -> np.ndarray:
        """[H,W,3] uint8 RGB (Image or CompressedImage)."""
        return self._wrap("image", index, conversions.image_to_rgb)

    def camera_info(self, index: int = 0) -> Intrinsics:
        return self._wrap("camera_info", index, conversions.camera_info_to_intrinsics)

    def calibration(self, index: int = 0):
        """:class:`~depth_perception.rectify.Calibration` of CameraInfo ``index``."""
        return self._wrap("camera_info", index, conversions.camera_info_to_calibration)

    def frame_id(self, key: str, index: int = 0) -> str:
        return str(self.message(key, index).header.frame_id).lstrip("/")

    def cloud(self, index: int, fields=("x", "y", "z")) -> np.ndarray:
        """[N,len(fields)] float32 points in the LiDAR frame (NaN points removed)."""
        pts = self._wrap("lidar", index, lambda m: conversions.cloud_to_numpy(m, fields))
        return pts[np.isfinite(pts[:, :3]).all(axis=1)]

    def gt_depth(self, index: int) -> np.ndarray:
        """[H,W] float32 metres, NaN invalid."""
        return self._wrap("gt_depth", index, conversions.image_to_depth)

    def moving_mask(self, index: int) -> np.ndarray:
        """[H,W] bool: pixels marked (non-zero) in the moving-object mask ``gt_moving``."""
        def decode(msg):
            mask = conversions.image_to_numpy(msg)
            if mask.ndim != 2:
                raise ValueError(f"moving-object mask has encoding '{msg.encoding}'; "
                                 "expected mono8")
            return mask != 0

        return self._wrap("gt_moving", index, decode)

    def odometry(self, index: int) -> Odometry:
        from depth_perception.data.tf import pose_from_msg

        msg = self.message("odom", index)
        lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
        return Odometry(conversions.stamp_to_ns(msg.header.stamp),
                        str(msg.header.frame_id).lstrip("/"),
                        str(msg.child_frame_id).lstrip("/"), pose_from_msg(msg.pose.pose),
                        np.array([lin.x, lin.y, lin.z]), np.array([ang.x, ang.y, ang.z]))

    def tf_buffer(self, use_odom: bool = True):
        """TfBuffer with /tf_static, /tf and (if ``use_odom``) the odometry poses."""
        from depth_perception.data.tf import TfBuffer

        buf = TfBuffer()
        for key, static in (("tf_static", True), ("tf", False)):
            for msg in self._small.get(self.topic_name(key), []):
                buf.add_tf_message(msg, static=static)
        if use_odom:
            tf_children = {tr.child_frame_id.lstrip("/")
                           for msg in self._small.get(self.topics.tf, [])
                           for tr in msg.transforms}
            for msg in self._small.get(self.topics.odom, []):
                if str(msg.child_frame_id).lstrip("/") in tf_children:
                    break  # /tf already carries odom -> base_link
                buf.add_odometry(msg)
        return buf
