"""Reading rosbag2 recordings (mcap or sqlite3) with ``rosbags``: no ROS install needed.

:class:`BagReader` indexes the header stamps of every topic it is asked for, reads the
bag's ``condition`` from ``metadata.yaml`` ``custom_data``, and decodes messages by index
on demand (images, camera infos, clouds, odometry, ground-truth depth). Big messages are
read again from the storage when asked for, so memory stays flat on long bags.

A damaged bag is reported with its file name. Messages stored before the damage stay
usable where the storage allows it, and :attr:`BagReader.damage` says what went wrong:
a sqlite3 database truncated or with a damaged page gives the rows before the damage
(a truncated file is read through an in-memory copy whose header matches the pages
present); a storage whose reading fails part-way keeps what was indexed. An mcap file
without its summary section (interrupted recording) cannot be opened by rosbags: its
records are then walked from the start with the ``mcap`` package and every complete
message before the cut is kept (also those of a cut chunk, uncompressed or zstd/lz4);
when none is complete, the error names the file and the repair tools.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, fields
from io import BytesIO
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


def _open_damaged_sqlite(db: Path):
    """In-memory sqlite3 connection to a truncated database file.

    SQLite refuses a file shorter than the page count in its header; the copy gets the
    header count of the pages actually present, so the rows stored before the damage can
    be read (reading past them raises sqlite3.DatabaseError).
    """
    import sqlite3

    data = bytearray(Path(db).read_bytes())
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        raise ValueError(f"{db} is not an sqlite3 database ({len(data)} bytes, no SQLite header)")
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = len(data) // page_size
    del data[pages * page_size:]
    data[28:32] = pages.to_bytes(4, "big")
    conn = sqlite3.connect(":memory:")
    conn.deserialize(bytes(data))
    return conn


# -- mcap without its summary -------------------------------------------------------------
#: first (and last) bytes of an mcap file
_MCAP_MAGIC = b"\x89MCAP0\r\n"


def _mcap_inner_records(data: bytes) -> list:
    """Schema/Channel/Message records of the complete records at the start of ``data``
    (uncompressed chunk content); a record cut short ends the list."""
    from mcap.data_stream import ReadDataStream
    from mcap.opcode import Opcode
    from mcap.records import Channel, Message, Schema

    out, pos = [], 0
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if pos + 9 + length > len(data):
            break
        stream = ReadDataStream(BytesIO(data[pos + 9:pos + 9 + length]))
        if opcode == Opcode.MESSAGE:
            out.append(Message.read(stream, length))
        elif opcode == Opcode.CHANNEL:
            out.append(Channel.read(stream))
        elif opcode == Opcode.SCHEMA:
            out.append(Schema.read(stream))
        pos += 9 + length
    return out


def _mcap_cut_chunk(body: bytes) -> list:
    """Records of a Chunk record cut short: the complete records among the bytes present
    (uncompressed, or the prefix that a zstd/lz4 stream decompresses to)."""
    if len(body) < 32:
        return []
    (n,) = struct.unpack_from("<I", body, 28)
    compression = body[32:32 + n].decode("utf-8", "replace")
    data = body[32 + n + 8:]
    if compression == "zstd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif compression == "lz4":
        import lz4.frame

        data = lz4.frame.LZ4FrameDecompressor().decompress(data)
    elif compression != "":
        raise ValueError(f"unsupported chunk compression {compression!r}")
    return _mcap_inner_records(data)


def _read_mcap_record(f, offset: int, size: int) -> tuple[int, list, bool]:
    """(opcode, records, complete) of the top-level record at ``offset`` of an mcap file
    of ``size`` bytes: a Chunk gives its Schema/Channel/Message records (only the
    complete ones when the file ends inside it), other records themselves."""
    from mcap.data_stream import ReadDataStream
    from mcap.opcode import Opcode
    from mcap.records import Channel, Chunk, Message, Schema
    from mcap.stream_reader import breakup_chunk

    f.seek(offset)
    head = f.read(9)
    if len(head) < 9:
        return -1, [], False
    opcode, length = struct.unpack("<BQ", head)
    complete = offset + 9 + length <= size
    body = f.read(length if complete else size - offset - 9)
    if opcode == Opcode.CHUNK:
        if not complete:
            return opcode, _mcap_cut_chunk(body), False
        chunk = Chunk.read(ReadDataStream(BytesIO(body)))
        return opcode, breakup_chunk(chunk, validate_crc=True), True
    if not complete:
        return opcode, [], False
    stream = ReadDataStream(BytesIO(body))
    readers = {Opcode.MESSAGE: lambda: Message.read(stream, length),
               Opcode.CHANNEL: lambda: Channel.read(stream),
               Opcode.SCHEMA: lambda: Schema.read(stream)}
    return opcode, [readers[opcode]()] if opcode in readers else [], True


def _scan_mcap(path: Path, on_message) -> tuple[int, str | None]:
    """Walk the records of an mcap file from its start, without its summary section.

    Calls ``on_message(offset, k, message, channels, schemas)`` for message ``k`` of the
    top-level record at ``offset`` (a chunk or a lone message); returns (bytes read in
    full, why the walk stopped before the data end: None when the file is complete).
    """
    from mcap.opcode import Opcode

    size = path.stat().st_size
    channels: dict[int, object] = {}
    schemas: dict[int, object] = {}
    with open(path, "rb") as f:
        if f.read(8) != _MCAP_MAGIC:
            return 0, "no mcap magic at the start of the file"
        offset = 8
        while True:
            try:
                opcode, records, complete = _read_mcap_record(f, offset, size)
            except Exception as err:  # a damaged record ends the walk
                return offset, f"unreadable record at byte {offset}: {type(err).__name__}: {err}"
            if opcode in (Opcode.DATA_END, Opcode.FOOTER):
                return offset, None
            k = 0
            for rec in records:
                kind = type(rec).__name__
                if kind == "Schema":
                    schemas[rec.id] = rec
                elif kind == "Channel":
                    channels[rec.id] = rec
                elif kind == "Message":
                    on_message(offset, k, rec, channels, schemas)
                    k += 1
            if opcode == -1:
                return offset, f"the file ends at byte {size} without a data end or footer"
            if not complete:
                return offset, (f"the file ends at byte {size} inside a record "
                                f"(opcode {opcode:#04x}) starting at byte {offset}")
            offset = f.tell()


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
            if storage == "sqlite3" and self._pid is None:
                self._salvage_sqlite3(err)
                return
            if storage == "mcap" and self._pid is None and self._salvage_mcap(err):
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

    def _salvage_sqlite3(self, open_error: Exception) -> None:
        """Read the rows before the damage of a sqlite3 bag rosbags cannot open."""
        import sqlite3

        files = [self.path / f for f in self.metadata.get("relative_file_paths", [])]
        rows: list[tuple[str, str, int, bytes]] = []
        topics: dict[int, tuple[str, str]] = {}
        reason = f"{type(open_error).__name__}: {open_error}"
        for db in files:
            try:
                conn = _open_damaged_sqlite(db)
            except (OSError, ValueError, sqlite3.Error) as err:
                reason = f"{db}: {err}"
                break
            try:
                for tid, name, typ in conn.execute("SELECT id, name, type FROM topics"):
                    topics[int(tid)] = (str(name), str(typ))
                for tid, stamp, data in conn.execute(
                        "SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
                    if int(tid) in topics:
                        rows.append((*topics[int(tid)], int(stamp), bytes(data)))
            except sqlite3.Error as err:
                reason = f"{db}: {type(err).__name__}: {err}"
                break
            finally:
                conn.close()
        if not rows:
            raise ValueError(
                f"bag {self.path}: cannot open storage file(s) "
                f"{', '.join(str(f) for f in files)} (sqlite3): {open_error}; no message "
                f"could be salvaged ({reason}). The database is truncated or not a bag") from open_error
        rows.sort(key=lambda r: r[2])
        self._salvaged = rows
        self._pid = os.getpid()
        self.damage = (f"bag {self.path}: damaged sqlite3 storage ({reason}); "
                       f"{len(rows)} messages before the damage were salvaged")
        log.warning("%s", self.damage)

    def _salvage_mcap(self, open_error: Exception) -> bool:
        """Index the complete messages of mcap files rosbags cannot open (no summary).

        Records are walked from the start of each file (chunks are self-contained: their
        schemas and channels precede their messages); the messages are kept as (file,
        record offset, rank) and read again from the file when asked for. False when no
        message could be recovered.
        """
        files = [self.path / f for f in self.metadata.get("relative_file_paths", [])]
        rows: list[tuple[str, str, int, tuple[int, int, int]]] = []
        types: dict[str, tuple[str, str, bool, str]] = {}
        stops: list[str] = []
        for fi, path in enumerate(files):
            def keep(offset, k, msg, channels, schemas, fi=fi):
                channel = channels.get(msg.channel_id)
                schema = schemas.get(channel.schema_id) if channel is not None else None
                if schema is None:
                    return  # a message whose channel was lost: its type is unknown
                rows.append((channel.topic, schema.name, int(msg.log_time), (fi, offset, k)))
                types.setdefault(schema.name, (channel.topic, schema.name,
                                               schema.encoding == "ros2idl",
                                               schema.data.decode("utf-8", "replace")))
            try:
                _, why = _scan_mcap(path, keep)
            except OSError as err:
                why = f"{type(err).__name__}: {err}"
            if why is not None:
                stops.append(f"{path.name}: {why}")
                break  # the files after a damaged one are not part of a consistent record
        if not rows:
            return False
        rows.sort(key=lambda r: r[2])
        self._salvaged = rows
        self._salvaged_types = list(types.values())
        self._register_types(self._salvaged_types)
        self._pid = os.getpid()
        self.damage = (f"bag {self.path}: mcap storage {', '.join(f.name for f in files)} "
                       f"could not be opened ({type(open_error).__name__}: "
                       f"{str(open_error).rstrip('.')}); {len(rows)} messages before the "
                       f"damage were recovered ({'; '.join(stops) or 'read to the data end'})")
        log.warning("%s", self.damage)
        return True

    def _row_raw(self, row) -> bytes | memoryview:
        """Serialized message of a salvaged row (read again from an mcap file)."""
        where = row[3]
        if not isinstance(where, tuple):
            return where
        fi, offset, k = where
        if (fi, offset) not in self._mcap_cache:
            path = self.path / self.metadata["relative_file_paths"][fi]
            with open(path, "rb") as f:
                _, records, _ = _read_mcap_record(f, offset, path.stat().st_size)
            self._mcap_cache.clear()  # one chunk at a time: memory stays flat
            self._mcap_cache[(fi, offset)] = [r.data for r in records
                                              if type(r).__name__ == "Message"]
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

    def frame_id(self, key: str, index: int = 0) -> str:
        return str(self.message(key, index).header.frame_id).lstrip("/")

    def cloud(self, index: int, fields=("x", "y", "z")) -> np.ndarray:
        """[N,len(fields)] float32 points in the LiDAR frame (NaN points removed)."""
        pts = self._wrap("lidar", index, lambda m: conversions.cloud_to_numpy(m, fields))
        return pts[np.isfinite(pts[:, :3]).all(axis=1)]

    def gt_depth(self, index: int) -> np.ndarray:
        """[H,W] float32 metres, NaN invalid."""
        return self._wrap("gt_depth", index, conversions.image_to_depth)

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
