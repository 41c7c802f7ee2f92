"""A rosbag2 per (source bag, condition) with the translated images.

Every connection of the source bag is copied message by message (same topics, types,
QoS, receive times), except the camera image topic: each image whose stamp has an
accepted translation is replaced by the translated image (same header, same message
type: raw ``rgb8`` Image, or a CompressedImage in the source's jpeg/png format);
images without one are left out and counted. ``custom_data`` carries ``condition`` (so
the data layer and ``evaluate`` file the bag under it) and where it came from. Written
into a hidden folder and renamed when complete, like the synthetic bags.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from depth_perception import conversions
from depth_perception.data.bag import read_bag_metadata
from depth_perception.data.writer import discard_partial
from depth_perception_training.translate import manifest

log = logging.getLogger(__name__)


def _image_message(typestore, original, rgb, msgtype: str):
    """A message of ``msgtype`` with ``original``'s header holding ``rgb``."""
    import cv2

    if msgtype == "sensor_msgs/msg/Image":
        return conversions.numpy_to_image(rgb, "rgb8", original.header,
                                          typestore.types["sensor_msgs/msg/Image"])
    fmt = str(original.format).lower()
    ext = ".png" if "png" in fmt else ".jpg"
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {ext}")
    return typestore.types["sensor_msgs/msg/CompressedImage"](
        header=original.header, format=original.format, data=data.reshape(-1))


def write_translated_bag(source: Path, target: Path, records: list[dict], root: Path,
                         condition: str, translator: str, storage: str = "mcap") -> dict:
    """Copy ``source`` to ``target`` with the images of ``records`` (one condition).

    Returns counts: {"replaced", "dropped", "copied"}.
    """
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    source, target = Path(source), Path(target)
    topic = records[0]["topic"] if records else None
    by_stamp = {int(r["stamp_ns"]): root / r["image"] for r in records}
    typestore = get_typestore(Stores.ROS2_KILTED)
    custom = dict(read_bag_metadata(source).get("custom_data") or {})
    custom.update(condition=condition, translated_from=str(source), translator=translator)
    tmp = target.parent / f".translate-partial-{os.getpid()}" / target.name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    counts = {"replaced": 0, "dropped": 0, "copied": 0}
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with Reader(source) as reader:
            writer = Writer(tmp, version=9, storage_plugin=plugin)
            for key, value in custom.items():
                writer.set_custom_data(str(key), str(value))
            writer.open()
            conns = {}
            for c in reader.connections:
                if c.msgtype not in typestore.types and c.msgdef.data:
                    is_idl = c.msgdef.format == MessageDefinitionFormat.IDL
                    typestore.register(get_types_from_idl(c.msgdef.data) if is_idl else
                                       get_types_from_msg(c.msgdef.data, c.msgtype))
                conns[c.id] = writer.add_connection(
                    c.topic, c.msgtype, typestore=typestore,
                    offered_qos_profiles=getattr(c.ext, "offered_qos_profiles", ()))
            for c, bag_time, raw in reader.messages():
                if c.topic != topic:
                    writer.write(conns[c.id], bag_time, raw)
                    counts["copied"] += 1
                    continue
                msg = typestore.deserialize_cdr(raw, c.msgtype)
                path = by_stamp.get(conversions.stamp_to_ns(msg.header.stamp))
                if path is None:
                    counts["dropped"] += 1
                    continue
                out = _image_message(typestore, msg, manifest.read_image(path), c.msgtype)
                writer.write(conns[c.id], bag_time,
                             bytes(typestore.serialize_cdr(out, c.msgtype)))
                counts["replaced"] += 1
            writer.close()
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    finally:
        discard_partial(tmp)
    return counts


def write_translated_bags(records: list[dict], root: Path, translator: str,
                          storage: str = "mcap") -> dict[str, dict]:
    """``root/bags/<condition>/<bag_id>`` for every (source bag, condition) in records."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        if r["accepted"]:
            groups.setdefault((r["source_bag"], r["bag_id"], r["condition"]), []).append(r)
    out = {}
    for (source, bag_id, condition), recs in sorted(groups.items()):
        target = Path(root) / "bags" / condition / bag_id
        counts = write_translated_bag(Path(source), target, recs, Path(root), condition,
                                      translator, storage)
        log.info("bag %s: %s", target, counts)
        out[str(target)] = counts
    return out
