"""Synthetic driving bags: one rosbag2 per condition of the same procedural drive.

``make_synthetic_bags(out_dir, frames, size, conditions, seed, storage)`` renders a
street (:mod:`depth_perception.synth.street`) and writes ``out_dir/<condition>``
bags with the package's default topics:

============================  ==========================  =================================
topic                         type                        content
============================  ==========================  =================================
``/tf_static``                tf2_msgs/TFMessage          base_link -> camera_optical_frame,
                                                          base_link -> lidar (one message,
                                                          transient local)
``/tf``                       tf2_msgs/TFMessage          odom -> base_link per camera frame
``/odom``                     nav_msgs/Odometry           odom -> base_link, twist in
                                                          base_link (linear.x = speed)
``/camera/camera_info``       sensor_msgs/CameraInfo      plumb_bob, zero distortion (or the
                                                          ``distortion`` lens: its model,
                                                          D, K = P, R = I)
``/camera/image_raw``         sensor_msgs/Image           rgb8 (or CompressedImage jpeg /
                                                          png on ``.../compressed``), as
                                                          that lens records it
``/ground_truth/depth``       sensor_msgs/Image           32FC1 z-depth metres, +inf sky
                                                          (REP 117), in the rectified
                                                          camera (pinhole K = P)
``/ground_truth/camera_info`` sensor_msgs/CameraInfo      that camera (D = 0)
``/ground_truth/moving``      sensor_msgs/Image           mono8, 255 where the pixel centre
                                                          sees a moving car (oncoming or
                                                          lead), else 0; same camera as
                                                          the depth
``/lidar/points``             sensor_msgs/PointCloud2     x, y, z, intensity float32 in
                                                          ``lidar``, own clock (+4 ms)
============================  ==========================  =================================

All bags share geometry, trajectory, LiDAR and ground truth; only the camera images
differ. A lens (``distortion=('plumb_bob', D)``, ``--distortion MODEL:coeffs``) warps the
pinhole render into the image that lens records (:func:`depth_perception.rectify.
render_distorted`: each raw pixel the average of 3 x 3 sub-pixel samples); raw pixels
whose rays fall outside the rendered pinhole view (the corners of a barrel lens) repeat
its border. The rectified camera is the pinhole one, so the ground truth stays where a
rectifying node puts its depth. ``custom_data`` holds ``condition`` (and the generator settings). A bag is
written to a hidden temporary folder and renamed when complete, so an interrupted run
never leaves a half-written bag under the final name.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from depth_perception import __version__
from depth_perception.data.writer import (BASE_FRAME, IMAGE_FORMATS, ODOM_FRAME, BagMessages,
                                          check_overwrite, compressed_image, discard_partial,
                                          transient_local_qos)
from depth_perception.rectify import Calibration, distortion_maps, render_distorted
from depth_perception.synth.conditions import CONDITIONS
from depth_perception.synth.layout import SynthConfig
from depth_perception.synth.street import SyntheticStreet

logger = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
#: sub-pixel samples per raw pixel side when a lens warps the pinhole render (area average)
LENS_SUPERSAMPLE = 3
CAMERA_FRAME = "camera_optical_frame"
LIDAR_FRAME = "lidar"
TOPICS = {
    "tf_static": "/tf_static",
    "tf": "/tf",
    "odom": "/odom",
    "camera_info": "/camera/camera_info",
    "image": "/camera/image_raw",
    "gt_depth": "/ground_truth/depth",
    "gt_camera_info": "/ground_truth/camera_info",
    "gt_moving": "/ground_truth/moving",
    "lidar": "/lidar/points",
}
MSG_TYPES = {
    "tf_static": "tf2_msgs/msg/TFMessage",
    "tf": "tf2_msgs/msg/TFMessage",
    "odom": "nav_msgs/msg/Odometry",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "image": "sensor_msgs/msg/Image",
    "gt_depth": "sensor_msgs/msg/Image",
    "gt_camera_info": "sensor_msgs/msg/CameraInfo",
    "gt_moving": "sensor_msgs/msg/Image",
    "lidar": "sensor_msgs/msg/PointCloud2",
}


def _check_conditions(conditions: Sequence[str]) -> tuple[str, ...]:
    conditions = tuple(conditions)
    if not conditions:
        raise ValueError(f"no condition given; expected some of {', '.join(CONDITIONS)}")
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; expected some of "
                         f"{', '.join(CONDITIONS)}")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"condition listed twice in {list(conditions)}")
    return conditions


def _check_image_format(image_format: str) -> str:
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r}: expected one of "
                         f"{', '.join(IMAGE_FORMATS)}")
    return image_format


def write_synthetic_bags(street: SyntheticStreet, targets: dict[str, Path],
                         storage: str = "mcap",
                         progress: Callable[[int, int], None] | None = None,
                         overwrite: bool = False, image_format: str = "raw",
                         distortion: tuple | None = None) -> dict:
    """Render ``street.frames`` frames and write one bag per condition.

    image_format: ``raw`` (sensor_msgs/Image rgb8 on /camera/image_raw), ``jpeg`` or
    ``png`` (sensor_msgs/CompressedImage on /camera/image_raw/compressed).
    distortion: (distortion_model, D) of the camera's lens (None: a pinhole camera).

    targets: {condition: final bag folder}. An existing folder is an error unless
    ``overwrite`` (and it is a rosbag2 folder); it is replaced only once the new bag is
    complete. Returns timing in seconds: {"geometry", "lidar", "write",
    condition: shading seconds, "total"}.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from depth_perception import conversions as conv

    if storage not in STORAGES:
        raise ValueError(f"storage {storage!r}: expected one of {STORAGES}")
    _check_conditions(list(targets))
    _check_image_format(image_format)
    targets = {c: Path(p) for c, p in targets.items()}
    for path in targets.values():
        check_overwrite(path, overwrite)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    msgs = BagMessages(MSG_TYPES)
    T = msgs.T
    K = street.intrinsics
    lens = Calibration.pinhole(K, *(distortion or ("plumb_bob", (0.0,) * 5)))
    warp = distortion_maps(lens, LENS_SUPERSAMPLE) if lens.distorts else None  # raw <- pinhole
    timing = {"geometry": 0.0, "lidar": 0.0, "write": 0.0, **{c: 0.0 for c in targets}}
    start = time.perf_counter()
    topics, types = dict(TOPICS), dict(MSG_TYPES)
    if image_format != "raw":
        topics["image"] = TOPICS["image"] + "/compressed"
        types["image"] = "sensor_msgs/msg/CompressedImage"
    custom = {
        "generator": f"depth_perception {__version__} synth",
        "synth_config": json.dumps({**asdict(street.config), "frames": street.frames},
                                   sort_keys=True),
        "distortion": json.dumps([lens.distortion_model, list(lens.D)]),
    }

    # 1. Writers into hidden temporary folders beside the final ones.
    #    (bag folders keep their final names, which rosbags gives the storage files)
    temps = {c: p.parent / f".synth-partial-{os.getpid()}" / p.name for c, p in targets.items()}
    writers, connections = {}, {}
    try:
        for condition, tmp in temps.items():
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            writer = Writer(tmp, version=9, storage_plugin=plugin)
            writer.set_custom_data("condition", condition)
            for key, value in custom.items():
                writer.set_custom_data(key, value)
            writer.open()
            writers[condition] = writer
            connections[condition] = {
                key: writer.add_connection(
                    topic, types[key], typestore=msgs.typestore,
                    offered_qos_profiles=[transient_local_qos()] if key == "tf_static" else ())
                for key, topic in topics.items()}

        def write_all(key: str, stamp_ns: int, data: bytes) -> None:
            for condition, writer in writers.items():
                writer.write(connections[condition][key], stamp_ns, data)

        # 2. Static transforms once, at the first stamp.
        t0 = street.stamp_ns(0.0)
        tf_static = msgs.tf(t0, [(BASE_FRAME, CAMERA_FRAME, street.T_base_camera),
                                 (BASE_FRAME, LIDAR_FRAME, street.T_base_lidar)])
        write_all("tf_static", t0, msgs.serialize(tf_static, "tf_static"))

        # 3. Frames: shared messages serialized once, images per condition.
        for frame in range(street.frames):
            t = street.frame_time(frame)
            stamp = street.stamp_ns(t)
            tic = time.perf_counter()
            geom = street.geometry(frame)
            timing["geometry"] += time.perf_counter() - tic
            T_odom_base = street.trajectory.T_odom_base(t)
            speed, yaw_rate = street.trajectory.twist(t)
            tic = time.perf_counter()
            shared = [
                ("tf", msgs.tf(stamp, [(ODOM_FRAME, BASE_FRAME, T_odom_base)])),
                ("odom", msgs.odometry(stamp, T_odom_base, speed, yaw_rate)),
                ("camera_info", conv.calibration_to_camera_info(
                    lens, msgs.header(stamp, CAMERA_FRAME), T["sensor_msgs/msg/CameraInfo"])),
                ("gt_camera_info", conv.intrinsics_to_camera_info(
                    K, msgs.header(stamp, CAMERA_FRAME), T["sensor_msgs/msg/CameraInfo"])),
                ("gt_depth", conv.depth_to_image(geom.depth, msgs.header(stamp, CAMERA_FRAME),
                                                 "32FC1", T["sensor_msgs/msg/Image"])),
                ("gt_moving", conv.numpy_to_image(
                    street.moving(frame).astype(np.uint8) * np.uint8(255), "mono8",
                    msgs.header(stamp, CAMERA_FRAME), T["sensor_msgs/msg/Image"])),
            ]
            for key, msg in shared:
                write_all(key, stamp, msgs.serialize(msg, key))
            timing["write"] += time.perf_counter() - tic
            for condition, writer in writers.items():
                tic = time.perf_counter()
                rgb, _ = street.render(frame, condition)
                if warp is not None:
                    rgb = render_distorted(rgb, warp, (K.width, K.height))
                timing[condition] += time.perf_counter() - tic
                tic = time.perf_counter()
                header = msgs.header(stamp, CAMERA_FRAME)
                if image_format == "raw":
                    image = conv.numpy_to_image(rgb, "rgb8", header, T["sensor_msgs/msg/Image"])
                else:
                    image = compressed_image(msgs, rgb, header, image_format)
                writer.write(connections[condition]["image"], stamp,
                             bytes(msgs.typestore.serialize_cdr(image, types["image"])))
                timing["write"] += time.perf_counter() - tic
            # LiDAR on its own clock, computed for the pose at its stamp.
            tic = time.perf_counter()
            scan = street.lidar_scan(frame)
            timing["lidar"] += time.perf_counter() - tic
            tic = time.perf_counter()
            lidar_stamp = street.stamp_ns(street.lidar_time(frame))
            cloud = conv.points_to_cloud(scan, ("x", "y", "z", "intensity"),
                                         msgs.header(lidar_stamp, LIDAR_FRAME),
                                         T["sensor_msgs/msg/PointCloud2"])
            write_all("lidar", lidar_stamp, msgs.serialize(cloud, "lidar"))
            timing["write"] += time.perf_counter() - tic
            if progress is not None:
                progress(frame + 1, street.frames)
        for writer in writers.values():
            writer.close()
        writers.clear()
        # 4. Publish: rename the complete bags to their final names.
        for condition, tmp in temps.items():
            if targets[condition].exists():  # overwrite, checked above
                shutil.rmtree(targets[condition])
            os.replace(tmp, targets[condition])
    finally:
        for writer in writers.values():  # only left here when something failed
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; keep the first error
                logger.debug("closing a failed bag writer", exc_info=True)
        for tmp in temps.values():
            discard_partial(tmp)  # the partial folder too, once empty
    timing["total"] = time.perf_counter() - start
    return timing


def make_synthetic_bags(out_dir: str | Path, frames: int = 30,
                        size: tuple[int, int] = (640, 192),
                        conditions: Sequence[str] = ("day-clear", "night", "rain"),
                        seed: int = 0, storage: str = "mcap", overwrite: bool = False,
                        config: SynthConfig | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        image_format: str = "raw",
                        distortion: tuple | None = None) -> list[Path]:
    """Write ``out_dir/<condition>`` rosbag2 folders of one synthetic drive.

    Args:
        out_dir: parent folder (created if missing).
        frames: camera frames (10 Hz by default) per bag.
        size: (width, height) of the camera image.
        conditions: any of day-clear, night, rain, snow.
        seed: scene seed; same seed -> byte-identical images.
        storage: ``mcap`` or ``sqlite3``.
        overwrite: replace existing bag folders of the same names (only folders that
            hold a rosbag2 ``metadata.yaml``; anything else is refused).
        config: further settings (trajectory, rig, LiDAR); ``size`` and ``seed`` given
            here override its fields.
        progress: called with (frames done, frames) after each frame.
        image_format: ``raw`` rgb8 Image, or ``jpeg`` / ``png`` CompressedImage on
            ``/camera/image_raw/compressed``.
        distortion: (distortion_model, D) of the lens (see the module docstring).
    Returns:
        bag folders in the order of ``conditions``.
    """
    conditions = _check_conditions(conditions)
    if storage not in STORAGES:
        raise ValueError(f"storage {storage!r}: expected one of {STORAGES}")
    _check_image_format(image_format)
    if int(frames) < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    size = (int(size[0]), int(size[1]))
    config = replace(config or SynthConfig(), size=size, seed=int(seed))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a folder")
    targets = {c: out_dir / c for c in conditions}
    for path in targets.values():
        if path.exists() and not overwrite:
            raise ValueError(f"bag folder {path} already exists; remove it or pass "
                             "overwrite=True (--overwrite)")
    street = SyntheticStreet(config, frames=int(frames))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Existing bags are replaced only when the new ones are complete.
    timing = write_synthetic_bags(street, targets, storage, progress, overwrite=overwrite,
                                  image_format=image_format, distortion=distortion)
    logger.info("wrote %d bags of %d frames at %dx%d in %.1f s (%s)", len(targets), frames,
                size[0], size[1], timing["total"],
                ", ".join(f"{k} {v:.1f} s" for k, v in timing.items() if k != "total"))
    return [targets[c] for c in conditions]


def make_varied_drives(root: str | Path, seeds: Sequence[int], frames: int = 60,
                       size: tuple[int, int] = (320, 96),
                       conditions: Sequence[str] = ("day-clear",),
                       storage: str = "mcap") -> list[Path]:
    """One drive per seed with its rig and street drawn from the seed
    (:meth:`SynthConfig.varied`): ``root/seed<NNN>_<frames>f/<condition>`` bags, reused
    when complete ones are already there. Returns the bag folders, seed-major."""
    root = Path(root)
    bags = []
    for seed in seeds:
        folder = root / f"seed{int(seed):03d}_{int(frames)}f"
        targets = [folder / c for c in conditions]
        if not all((t / "metadata.yaml").is_file() for t in targets):
            make_synthetic_bags(folder, frames=frames, size=size, conditions=conditions,
                                seed=int(seed), storage=storage, overwrite=True,
                                config=SynthConfig.varied(int(seed)))
        bags += targets
    return bags
