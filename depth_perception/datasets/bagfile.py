"""One imported recording being written: the package's topics, in a hidden folder until
complete (:class:`ImportBag`).

Imported bags use the topics of the synthetic drives (:data:`TOPICS`, what
:class:`depth_perception.data.bag.BagTopics` reads by default) and carry the bag's
``condition`` and where it came from in ``custom_data``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from depth_perception import __version__
from depth_perception.data.writer import (IMAGE_FORMATS, BagMessages, discard_partial,
                                          partial_folder, publish_bag, transient_local_qos)

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
TOPICS = {"tf_static": "/tf_static", "tf": "/tf", "odom": "/odom",
          "camera_info": "/camera/camera_info", "image": "/camera/image_raw",
          "lidar": "/lidar/points", "gt_depth": "/ground_truth/depth"}
MSG_TYPES = {"tf_static": "tf2_msgs/msg/TFMessage", "tf": "tf2_msgs/msg/TFMessage",
             "odom": "nav_msgs/msg/Odometry", "camera_info": "sensor_msgs/msg/CameraInfo",
             "image": "sensor_msgs/msg/Image", "lidar": "sensor_msgs/msg/PointCloud2",
             "gt_depth": "sensor_msgs/msg/Image"}


class ImportBag:
    """Writer of one imported bag (use as a context manager).

    target: final bag folder; image_format: ``raw`` (Image rgb8 on /camera/image_raw) or
    ``jpeg`` / ``png`` (CompressedImage on /camera/image_raw/compressed); custom: strings
    for ``custom_data`` (``condition`` among them). The bag is written beside the target
    and renamed when the block ends without an error; otherwise it is removed.
    """

    def __init__(self, target: str | Path, custom: dict, storage: str = "mcap",
                 image_format: str = "raw", overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r}: expected one of {STORAGES}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format {image_format!r}: expected one of "
                             f"{', '.join(IMAGE_FORMATS)}")
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise ValueError(f"bag folder {self.target} already exists; remove it or pass "
                             "--overwrite")
        self.overwrite = overwrite
        self.image_format = image_format
        types = dict(MSG_TYPES)
        self.topics = dict(TOPICS)
        if image_format != "raw":
            self.topics["image"] += "/compressed"
            types["image"] = "sensor_msgs/msg/CompressedImage"
        self.msgs = BagMessages(types)
        self.T = self.msgs.T
        self.tmp = partial_folder(self.target, "import")
        discard_partial(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.tmp, version=9, storage_plugin=plugin)
        custom = {"generator": f"depth_perception {__version__} import", **custom}
        for key, value in custom.items():
            self._writer.set_custom_data(key, value if isinstance(value, str)
                                         else json.dumps(value))
        self._writer.open()
        self._connections = {}
        self.counts = {key: 0 for key in self.topics}

    def _connection(self, key: str):
        if key not in self._connections:
            qos = [transient_local_qos()] if key == "tf_static" else ()
            self._connections[key] = self._writer.add_connection(
                self.topics[key], self.msgs.msg_types[key], typestore=self.msgs.typestore,
                offered_qos_profiles=qos)
        return self._connections[key]

    def write(self, key: str, stamp_ns: int, msg) -> None:
        """Write ``msg`` (a typestore message) on the topic of ``key`` at ``stamp_ns``."""
        self._writer.write(self._connection(key), int(stamp_ns), self.msgs.serialize(msg, key))
        self.counts[key] += 1

    def header(self, stamp_ns: int, frame_id: str):
        return self.msgs.header(stamp_ns, frame_id)

    def image(self, stamp_ns: int, frame_id: str, rgb: np.ndarray | None = None,
              encoded: bytes | None = None) -> None:
        """The camera image: ``rgb`` [H,W,3] uint8, or ``encoded`` file bytes already in the
        bag's compressed format (a dataset's own JPEG / PNG, kept as recorded)."""
        from depth_perception import conversions as conv
        from depth_perception.data.writer import compressed_image

        header = self.header(stamp_ns, frame_id)
        if encoded is not None:
            if self.image_format == "raw":
                raise ValueError("encoded image bytes need a compressed image format")
            msg = self.T["sensor_msgs/msg/CompressedImage"](
                header=header, format=IMAGE_FORMATS[self.image_format],
                data=np.frombuffer(encoded, dtype=np.uint8))
        elif self.image_format == "raw":
            msg = conv.numpy_to_image(rgb, "rgb8", header, self.T["sensor_msgs/msg/Image"])
        else:
            msg = compressed_image(self.msgs, rgb, header, self.image_format)
        self.write("image", stamp_ns, msg)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._writer.close()
        if exc_type is None:
            publish_bag(self.tmp, self.target, self.overwrite)
        else:
            discard_partial(self.tmp)
        return False


def read_timestamps(path: Path) -> list[int]:
    """KITTI-style ``timestamps.txt`` (``2011-09-26 13:02:25.594360375`` per line) ->
    nanoseconds since the epoch, the clock read as UTC (the files give no zone)."""
    import calendar
    import time

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: timestamps file missing")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            day_time, _, frac = line.partition(".")
            seconds = calendar.timegm(time.strptime(day_time, "%Y-%m-%d %H:%M:%S"))
            out.append(seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9]))
        except ValueError:
            raise ValueError(f"{path}, line {n}: {line!r} is not a timestamp "
                             "YYYY-MM-DD HH:MM:SS.fffffffff") from None
    return out
