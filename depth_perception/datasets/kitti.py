"""KITTI raw drives -> rosbag2, one bag per drive, through ``pykitti``.

``import_kitti(basedir, split, out)`` reads the frames a monodepth2 split names
(:data:`SPLITS`, the lists as monodepth2 ships them, in ``splits/kitti/``) from the
KITTI raw layout (``basedir/<date>/calib_*.txt``, ``basedir/<date>/<drive>_sync/
{image_02,velodyne_points,oxts}/``) and writes ``out/<date>_drive_<NNNN>``:

=======================  =========================================================
topic                    content
=======================  =========================================================
``/camera/image_raw``    image_02 (rectified left colour camera); by default its PNG
(``/compressed``)        file as recorded (CompressedImage), or rgb8 / JPEG
``/camera/camera_info``  K = P_rect_02[:3,:3], R = I, D = 0, P = [K | 0] in the
                         camera's own optical frame (P_rect_02's fourth column, the
                         offset from rectified camera 0, is in the TF below)
``/lidar/points``        the Velodyne scan (x, y, z, intensity) in ``velodyne``
``/tf_static``           ``map -> odom`` (the Mercator position of the drive's first
                         OXTS record), ``base_link`` (the OXTS/IMU frame: x forward,
                         y left, z up) -> ``velodyne`` and -> ``camera_optical_frame``
``/tf``, ``/odom``       ``odom -> base_link`` from OXTS (pykitti's ``T_w_imu``),
                         twist (vf, vl, vu; wf, wl, wu) in base_link
``/ground_truth/depth``  KITTI's annotated depth (``proj_depth/groundtruth/image_02``,
                         32FC1 metres, NaN where 0) where those files are present
=======================  =========================================================

The camera transform is ``velodyne -> camera`` = ``[I | K^-1 p4] R_rect_00 T_velo_cam``
with ``p4`` the fourth column of P_rect_02, so ``K T X`` = ``P_rect_02 R_rect_00
T_velo_cam X``: the projection monodepth2's ``generate_depth_map`` uses. Stamps are the
drive's ``timestamps.txt`` (nanoseconds, read as UTC). Frames stream one at a time; the
OXTS records of the neighbours of each frame are written too, so poses between frames
are interpolated over 0.1 s, never across a gap of the split.
"""
from __future__ import annotations

import gzip
import json
import logging
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import numpy as np

from depth_perception.data.tf import invert_transform
from depth_perception.datasets.bagfile import ImportBag, read_timestamps

log = logging.getLogger(__name__)

#: split -> the parts monodepth2 ships (the first is the default)
SPLITS = {"eigen": ("test",), "eigen_benchmark": ("test",), "eigen_zhou": ("train", "val")}
CAMERA_FRAME = "camera_optical_frame"
LIDAR_FRAME = "velodyne"
BASE_FRAME = "base_link"
MISSING_PYKITTI = ("importing KITTI needs pykitti: pip install 'depth_perception[kitti]' "
                   "(or pip install pykitti)")


def _pykitti():
    try:
        import pykitti
    except ImportError as err:
        raise RuntimeError(f"{MISSING_PYKITTI} ({err})") from err
    return pykitti


def read_split(split: str, part: str | None = None) -> list[tuple[str, int, str]]:
    """[(drive folder, frame index, side)] of a monodepth2 split list."""
    if split not in SPLITS:
        raise ValueError(f"unknown KITTI split {split!r}; expected one of {', '.join(SPLITS)}")
    part = part or SPLITS[split][0]
    if part not in SPLITS[split]:
        raise ValueError(f"split {split} has the parts {', '.join(SPLITS[split])}, not {part!r}")
    path = resources.files("depth_perception.datasets") / "splits" / "kitti" / split / \
        f"{part}_files.txt.gz"
    entries = []
    for line in gzip.decompress(path.read_bytes()).decode().splitlines():
        folder, frame, side = line.split()
        entries.append((folder, int(frame), side))
    return entries


def camera_from_velodyne(P_rect_02: np.ndarray, R_rect_00: np.ndarray,
                         T_cam0unrect_velo: np.ndarray) -> np.ndarray:
    """[4,4] velodyne -> rectified camera 2 optical frame (see the module docstring)."""
    P = np.asarray(P_rect_02, np.float64).reshape(3, 4)
    R = np.eye(4)
    R[:3, :3] = np.asarray(R_rect_00, np.float64)[:3, :3]
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    return shift @ R @ np.asarray(T_cam0unrect_velo, np.float64)


def _drive_path(basedir: Path, folder: str) -> tuple[str, str, Path]:
    """'2011_09_26/2011_09_26_drive_0002_sync' -> (date, '0002', its folder)."""
    date, name = folder.split("/")
    try:
        drive = name.split("_drive_")[1].split("_")[0]
    except IndexError:
        raise ValueError(f"split entry {folder!r}: expected <date>/<date>_drive_NNNN_sync") from None
    return date, drive, basedir / folder


def _check_velodyne(path: str) -> None:
    size = Path(path).stat().st_size
    if size % 16:
        raise ValueError(f"{path}: {size} bytes is not a whole number of Velodyne points "
                         "(16 bytes each: x, y, z, reflectance float32); the file is truncated")


def _select(frames: list[int], n: int, context: int, folder: str) -> list[int]:
    bad = [f for f in frames if not 0 <= f < n]
    if bad:
        raise ValueError(f"drive {folder}: frames {bad[:5]} of the split are beyond its "
                         f"{n} frames; is the drive complete?")
    wanted = {f + o for f in frames for o in range(-context, context + 1)}
    return sorted(f for f in wanted if 0 <= f < n)


def import_kitti(basedir: str | Path, split: str, out: str | Path, part: str | None = None,
                 context: int = 0, storage: str = "mcap", image_format: str = "png",
                 overwrite: bool = False, drives: list[str] | None = None,
                 progress=None) -> list[Path]:
    """Write one bag per drive of ``split`` found under ``basedir``; returns the bags.

    context: neighbours on each side of every listed frame imported too (1 for
    self-supervised training on eigen_zhou: the frames -1 and +1). image_format: ``png``
    (the recorded file), ``jpeg`` or ``raw``. drives: only these drive folders.
    progress: called as ``progress(drive_index, n_drives, drive_folder, frames, seconds)``.
    Drives of the split that are not on disk are skipped with a warning; none at all is
    an error.
    """
    pykitti = _pykitti()
    basedir, out = Path(basedir), Path(out)
    if not basedir.is_dir():
        raise FileNotFoundError(f"KITTI basedir {basedir} does not exist")
    by_drive: OrderedDict[str, set] = OrderedDict()
    for folder, frame, _side in read_split(split, part):
        if drives is None or folder in drives:
            by_drive.setdefault(folder, set()).add(frame)
    present = [f for f in by_drive if (basedir / f).is_dir()]
    missing = [f for f in by_drive if f not in present]
    if not present:
        raise FileNotFoundError(
            f"none of the {len(by_drive)} drives of split {split} is under {basedir} "
            f"(expected e.g. {basedir / next(iter(by_drive))}); the KITTI raw layout is "
            "<basedir>/<date>/<date>_drive_NNNN_sync with calib_*.txt in <basedir>/<date>")
    if missing:
        log.warning("split %s: %d of %d drives are not under %s; skipped (first: %s)",
                    split, len(missing), len(by_drive), basedir, missing[0])
    bags = []
    for k, folder in enumerate(present):
        tic = time.perf_counter()
        date, drive, path = _drive_path(basedir, folder)
        data = pykitti.raw(str(basedir), date, drive)
        target = out / f"{date}_drive_{drive}"
        frames = _select(sorted(by_drive[folder]), len(data), context, folder)
        custom = {"condition": "day-clear", "dataset": "kitti", "split": split,
                  "part": part or SPLITS[split][0], "drive": folder,
                  "split_source": f"monodepth2 splits/{split}/"
                                  f"{part or SPLITS[split][0]}_files.txt",
                  "frames": json.dumps(frames)}
        _write_drive(data, path, frames, target, custom, storage, image_format, overwrite)
        bags.append(target)
        seconds = time.perf_counter() - tic
        log.info("drive %d/%d %s: %d frames in %.1f s -> %s", k + 1, len(present), folder,
                 len(frames), seconds, target)
        if progress is not None:
            progress(k + 1, len(present), folder, len(frames), seconds)
    return bags


def _write_drive(data, path: Path, frames: list[int], target: Path, custom: dict,
                 storage: str, image_format: str, overwrite: bool) -> None:
    """Stream the frames of one pykitti drive into ``target``."""
    from depth_perception import conversions as conv
    from pykitti.utils import pose_from_oxts_packet

    n = len(data)
    stamps = {name: read_timestamps(path / name / "timestamps.txt")
              for name in ("image_02", "velodyne_points", "oxts")}
    files = {"image_02": data.cam2_files, "velodyne_points": data.velo_files,
             "oxts": data.oxts_files}
    for name, values in stamps.items():
        if len(values) != n or len(files[name]) != n:
            raise ValueError(f"drive {path}: {name} has {len(files[name])} files and "
                             f"{len(values)} timestamps; expected {n} (as oxts)")
    calib = data.calib
    T_cam_velo = camera_from_velodyne(calib.P_rect_20, calib.R_rect_00,
                                      calib.T_cam0_velo_unrect)
    T_velo_imu = np.asarray(calib.T_velo_imu, np.float64)
    K = np.asarray(calib.P_rect_20, np.float64)[:, :3]
    first = data.oxts[0].packet
    _, origin = pose_from_oxts_packet(first, np.cos(first.lat * np.pi / 180.0))
    T_map_odom = np.eye(4)
    T_map_odom[:3, 3] = origin
    poses = sorted({j for f in frames for j in (f - 1, f, f + 1) if 0 <= j < n})
    with ImportBag(target, custom, storage, image_format, overwrite) as bag:
        T = bag.T
        t0 = min(stamps["oxts"][poses[0]], stamps["image_02"][frames[0]])
        bag.write("tf_static", t0, bag.msgs.tf(t0, [
            ("map", "odom", T_map_odom),
            (BASE_FRAME, LIDAR_FRAME, invert_transform(T_velo_imu)),
            (BASE_FRAME, CAMERA_FRAME, invert_transform(T_cam_velo @ T_velo_imu))]))
        # 1. OXTS: odom -> base_link and odometry at each frame and its neighbours
        for j in poses:
            oxts, stamp = data.oxts[j], stamps["oxts"][j]
            p = oxts.packet
            bag.write("tf", stamp, bag.msgs.tf(stamp, [("odom", BASE_FRAME, oxts.T_w_imu)]))
            bag.write("odom", stamp, bag.msgs.odometry(
                stamp, oxts.T_w_imu, 0.0, 0.0, linear=(p.vf, p.vl, p.vu),
                angular=(p.wf, p.wl, p.wu)))
        # 2. camera, CameraInfo, Velodyne (and annotated depth) frame by frame
        height = width = None
        for i in frames:
            stamp = stamps["image_02"][i]
            encoded = Path(data.cam2_files[i]).read_bytes() if image_format == "png" else None
            rgb = None if encoded is not None else np.asarray(data.get_cam2(i).convert("RGB"))
            if height is None:
                width, height = (data.get_cam2(i).size if rgb is None
                                 else (rgb.shape[1], rgb.shape[0]))
            bag.image(stamp, CAMERA_FRAME, rgb=rgb, encoded=encoded)
            bag.write("camera_info", stamp, conv.intrinsics_to_camera_info(
                _intrinsics(K, width, height), bag.header(stamp, CAMERA_FRAME),
                T["sensor_msgs/msg/CameraInfo"]))
            _check_velodyne(data.velo_files[i])
            scan = data.get_velo(i)                                      # [N,4] float32
            velo_stamp = stamps["velodyne_points"][i]
            bag.write("lidar", velo_stamp, conv.points_to_cloud(
                scan, ("x", "y", "z", "intensity"), bag.header(velo_stamp, LIDAR_FRAME),
                T["sensor_msgs/msg/PointCloud2"]))
            annotated = path / "proj_depth" / "groundtruth" / "image_02" / f"{i:010d}.png"
            if annotated.is_file():
                bag.write("gt_depth", stamp, conv.depth_to_image(
                    _annotated_depth(annotated), bag.header(stamp, CAMERA_FRAME), "32FC1",
                    T["sensor_msgs/msg/Image"]))


def _intrinsics(K: np.ndarray, width: int, height: int):
    from depth_perception.camera import Intrinsics

    return Intrinsics.from_matrix(K, width, height)


def _annotated_depth(path: Path) -> np.ndarray:
    """KITTI annotated depth PNG (uint16, metres x 256, 0 = none) -> [H,W] float32, NaN."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16:
        raise ValueError(f"{path}: expected a 16-bit PNG of depth x 256 (KITTI annotated depth)")
    depth = raw.astype(np.float32) / 256.0
    depth[raw == 0] = np.nan
    return depth
