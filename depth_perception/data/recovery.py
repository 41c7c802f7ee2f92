"""Recovery of damaged rosbag2 storage: the messages stored before the damage.

A sqlite3 database truncated or with a damaged page gives the rows before the damage
(a truncated file is read through an in-memory copy whose header matches the pages
present). An mcap file without its summary section (interrupted recording) cannot be
opened by rosbags: its records are walked from the start with the ``mcap`` package and
every complete message before the cut is kept (also those of a cut chunk, uncompressed
or zstd/lz4). :class:`~depth_perception.data.bag.BagReader` uses these when the
storage does not open.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Salvaged:
    """Messages recovered from a damaged bag, sorted by bag time.

    rows: [(topic, msgtype, bag time ns, raw bytes | (file index, record offset, rank)
    in an mcap file)]; types: [(topic, msgtype, is_idl, definition)] of the mcap
    schemas (custom types to register); damage: what went wrong, for the user.
    """

    rows: list
    damage: str
    types: list = field(default_factory=list)


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


def salvage_sqlite3(path: Path, files: list[Path], open_error: Exception) -> Salvaged:
    """Read the rows before the damage of a sqlite3 bag rosbags cannot open."""
    import sqlite3

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
            f"bag {path}: cannot open storage file(s) "
            f"{', '.join(str(f) for f in files)} (sqlite3): {open_error}; no message "
            f"could be salvaged ({reason}). The database is truncated or not a bag") from open_error
    rows.sort(key=lambda r: r[2])
    damage = (f"bag {path}: damaged sqlite3 storage ({reason}); "
              f"{len(rows)} messages before the damage were salvaged")
    log.warning("%s", damage)
    return Salvaged(rows=rows, damage=damage)


def salvage_mcap(path: Path, files: list[Path], open_error: Exception) -> Salvaged | None:
    """Index the complete messages of mcap files rosbags cannot open (no summary).

    Records are walked from the start of each file (chunks are self-contained: their
    schemas and channels precede their messages); the messages are kept as (file,
    record offset, rank) and read again with :func:`mcap_message`. None when no
    message could be recovered.
    """
    rows: list[tuple[str, str, int, tuple[int, int, int]]] = []
    types: dict[str, tuple[str, str, bool, str]] = {}
    stops: list[str] = []
    for fi, file in enumerate(files):
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
            _, why = _scan_mcap(file, keep)
        except OSError as err:
            why = f"{type(err).__name__}: {err}"
        if why is not None:
            stops.append(f"{file.name}: {why}")
            break  # the files after a damaged one are not part of a consistent record
    if not rows:
        return None
    rows.sort(key=lambda r: r[2])
    damage = (f"bag {path}: mcap storage {', '.join(f.name for f in files)} "
              f"could not be opened ({type(open_error).__name__}: "
              f"{str(open_error).rstrip('.')}); {len(rows)} messages before the "
              f"damage were recovered ({'; '.join(stops) or 'read to the data end'})")
    log.warning("%s", damage)
    return Salvaged(rows=rows, damage=damage, types=list(types.values()))


def mcap_messages(file: Path, offset: int) -> list[bytes]:
    """Serialized messages of the top-level mcap record at ``offset`` (a salvaged row's
    (file, offset, rank) names one of them)."""
    with open(file, "rb") as f:
        _, records, _ = _read_mcap_record(f, offset, file.stat().st_size)
    return [r.data for r in records if type(r).__name__ == "Message"]
