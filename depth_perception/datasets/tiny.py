"""Tiny datasets in the real on-disk layouts, written from a known geometry.

For tests, benches and trying ``depth-perception import`` without the datasets: a few
frames of a vehicle driving straight through a cloud of static world points, in the
KITTI raw layout (:func:`write_kitti_drive`) or the nuScenes layout
(:func:`depth_perception.datasets.tiny_nuscenes.write_nuscenes`). The returned
:class:`TinyDrive` holds the truth (world points, poses, calibration) that an import
must reproduce. The rig's rotations and offsets are larger than the real ones so that a
transposed rotation or a flipped sign moves points by pixels, not fractions of one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EARTH_RADIUS = 6378137.0           # the OXTS / pykitti Mercator earth radius (metres)


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """[3,3] Rz(rz) @ Ry(ry) @ Rx(rx) (radians)."""
    cx, sx, cy, sy = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def rigid(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


#: velodyne / vehicle axes (x forward, y left, z up) -> camera optical (x right, y down, z fwd)
FORWARD_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass
class TinyDrive:
    """The truth behind a tiny dataset.

    world_points: [N,3] static points in the world frame (the first pose's axes and
    position: the bag's ``odom``); T_world_base(stamp_ns) -> [4,4] vehicle pose;
    stamps: {sensor: [frames] ns}; calib: what the calibration files say.
    """

    world_points: np.ndarray
    speed: float
    t0_ns: int
    stamps: dict
    calib: dict = field(default_factory=dict)
    size: tuple = (160, 48)
    frames: int = 0

    def T_world_base(self, stamp_ns: int) -> np.ndarray:
        """Straight ahead (+x) at ``speed`` from the first pose stamp."""
        return rigid(np.eye(3), [self.speed * (stamp_ns - self.t0_ns) * 1e-9, 0.0, 0.0])


def world_points(seed: int, n: int = 400, far: float = 45.0) -> np.ndarray:
    """[N,3] points ahead of the start: x 4..far, y +-8, z -1.5..2.5 (metres)."""
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(4.0, far, n), rng.uniform(-8.0, 8.0, n),
                 rng.uniform(-1.5, 2.5, n)]


def frame_image(k: int, width: int, height: int) -> np.ndarray:
    """[H,W,3] uint8 RGB: a gradient with a bright square whose position encodes ``k``."""
    u = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    v = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    img = np.concatenate([np.broadcast_to(u, (height, width, 1)),
                          np.broadcast_to(v, (height, width, 1)),
                          np.full((height, width, 1), 40.0, np.float32)], axis=2)
    x0 = (7 * k) % max(width - 8, 1)
    img[2:10, x0:x0 + 8] = 255.0
    return img.astype(np.uint8)


# -- KITTI raw ------------------------------------------------------------------------------
def kitti_rig(size=(160, 48)) -> dict:
    """Calibration of a KITTI-like rig (arrays as the calib_*.txt files hold them)."""
    w, h = size
    K = np.array([[110.0, 0.0, w / 2 - 3.5], [0.0, 105.0, h / 2 + 2.5], [0.0, 0.0, 1.0]])
    t2 = np.array([0.30, -0.05, 0.02])            # rectified cam0 -> cam2 (metres)
    return {
        "R_velo_cam": rotation(0.03, -0.04, 0.02) @ FORWARD_TO_OPTICAL,   # velo -> cam0
        "T_velo_cam": np.array([-0.10, -0.08, -0.27]),
        "R_rect_00": rotation(0.035, -0.02, 0.03),
        "P_rect_02": np.c_[K, K @ t2],
        "R_imu_velo": rotation(0.01, 0.02, -0.05),                         # imu -> velo
        "T_imu_velo": np.array([-0.81, 0.32, -0.80]),
        "size": (w, h),
    }


def _fmt(values) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, np.float64).ravel())


def _stamp_text(ns: int) -> str:
    import datetime as dt

    sec, frac = divmod(int(ns), 1_000_000_000)
    day = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{day}.{frac:09d}"


def _oxts_line(x_east: float, speed: float, lat0: float = 49.0, lon0: float = 8.4) -> str:
    """An OXTS record at ``x_east`` metres east of (lat0, lon0), heading east at ``speed``."""
    scale = np.cos(lat0 * np.pi / 180.0)
    lon = lon0 + x_east * 180.0 / (scale * np.pi * EARTH_RADIUS)
    values = [lat0, lon, 110.0, 0.0, 0.0, 0.0,           # lat lon alt roll pitch yaw
              0.0, speed, speed, 0.0, 0.0,               # vn ve vf vl vu
              0.0, 0.0, 0.0, 0.0, 0.0, 0.0,              # ax ay az af al au
              0.0, 0.0, 0.0, 0.0, 0.0, 0.0]              # wx wy wz wf wl wu
    return " ".join(f"{v:.12f}" for v in values) + " 0.5 0.05 4 10 4 4 4"


def write_kitti_drive(basedir: str | Path,
                      folder: str = "2011_09_26/2011_09_26_drive_0048_sync",
                      frames: int = 23, size=(160, 48), speed: float = 10.0,
                      lidar_offset_ms: float = -20.0, oxts_offset_ms: float = -25.0,
                      seed: int = 0, annotated: tuple = (), points: int = 400) -> TinyDrive:
    """Write a KITTI raw drive (calib_*.txt, oxts/, velodyne_points/, image_02/, their
    timestamps) of ``frames`` frames at 10 Hz; ``annotated``: frame indices that get a
    ``proj_depth/groundtruth/image_02`` depth PNG (the Velodyne truth at the camera time).

    The OXTS record of frame k is taken ``oxts_offset_ms`` and its scan
    ``lidar_offset_ms`` from the camera, so a stamp or motion error shows.
    """
    import cv2

    basedir = Path(basedir)
    date = folder.split("/")[0]
    rig = kitti_rig(size)
    w, h = size
    calib_dir = basedir / date
    drive_dir = basedir / folder
    calib_dir.mkdir(parents=True, exist_ok=True)
    (calib_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
        f"S_rect_00: {w:.6e} {h:.6e}\nR_rect_00: {_fmt(rig['R_rect_00'])}\n"
        f"P_rect_00: {_fmt(np.c_[rig['P_rect_02'][:, :3], np.zeros(3)])}\n"
        f"S_rect_01: {w:.6e} {h:.6e}\nR_rect_01: {_fmt(np.eye(3))}\n"
        f"P_rect_01: {_fmt(np.c_[rig['P_rect_02'][:, :3], [-60.0, 0, 0]])}\n"
        f"S_rect_02: {w:.6e} {h:.6e}\nR_rect_02: {_fmt(np.eye(3))}\n"
        f"P_rect_02: {_fmt(rig['P_rect_02'])}\n"
        f"S_rect_03: {w:.6e} {h:.6e}\nR_rect_03: {_fmt(np.eye(3))}\n"
        f"P_rect_03: {_fmt(np.c_[rig['P_rect_02'][:, :3], [-40.0, 0, 0]])}\n")
    (calib_dir / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(rig['R_velo_cam'])}\n"
        f"T: {_fmt(rig['T_velo_cam'])}\ndelta_f: 0 0\ndelta_c: 0 0\n")
    (calib_dir / "calib_imu_to_velo.txt").write_text(
        f"calib_time: 25-May-2012 16:47:16\nR: {_fmt(rig['R_imu_velo'])}\n"
        f"T: {_fmt(rig['T_imu_velo'])}\n")

    t0 = 1_317_042_145_594_360_375                 # 2011-09-26 13:02:25.59... (UTC)
    cam = [t0 + k * 100_000_000 for k in range(frames)]
    stamps = {"image_02": cam,
              "velodyne_points": [int(t + lidar_offset_ms * 1e6) for t in cam],
              "oxts": [int(t + oxts_offset_ms * 1e6) for t in cam]}
    drive = TinyDrive(world_points(seed, points), speed, stamps["oxts"][0], stamps, rig, size, frames)
    T_velo_imu = rigid(rig["R_imu_velo"], rig["T_imu_velo"])
    for name in ("image_02", "velodyne_points", "oxts"):
        (drive_dir / name / "data").mkdir(parents=True, exist_ok=True)
        (drive_dir / name / "timestamps.txt").write_text(
            "".join(_stamp_text(t) + "\n" for t in stamps[name]))
    X = np.c_[drive.world_points, np.ones(len(drive.world_points))]
    for k in range(frames):
        x = speed * (stamps["oxts"][k] - drive.t0_ns) * 1e-9
        (drive_dir / "oxts" / "data" / f"{k:010d}.txt").write_text(_oxts_line(x, speed) + "\n")
        T_world_velo = drive.T_world_base(stamps["velodyne_points"][k]) @ np.linalg.inv(T_velo_imu)
        velo = (X @ np.linalg.inv(T_world_velo).T)[:, :3]
        scan = np.c_[velo, np.linspace(0, 1, len(velo))].astype(np.float32)
        scan.tofile(drive_dir / "velodyne_points" / "data" / f"{k:010d}.bin")
        bgr = cv2.cvtColor(frame_image(k, w, h), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(drive_dir / "image_02" / "data" / f"{k:010d}.png"), bgr)
        if k in annotated:
            _write_annotated(drive, k, drive_dir / "proj_depth" / "groundtruth" / "image_02")
    return drive


def kitti_truth(drive: TinyDrive, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([N,2] pixel, [N] camera z) of the world points at frame k's camera time, through
    the KITTI convention ``P_rect_02 R_rect_00 T_velo_cam`` (points ahead only)."""
    rig = drive.calib
    T_velo_imu = rigid(rig["R_imu_velo"], rig["T_imu_velo"])
    T_world_velo = drive.T_world_base(drive.stamps["image_02"][k]) @ np.linalg.inv(T_velo_imu)
    X = np.c_[drive.world_points, np.ones(len(drive.world_points))] @ np.linalg.inv(T_world_velo).T
    R = np.eye(4)
    R[:3, :3] = rig["R_rect_00"]
    uvw = (rig["P_rect_02"] @ R @ rigid(rig["R_velo_cam"], rig["T_velo_cam"]) @ X.T).T
    ahead = uvw[:, 2] > 0.5
    return uvw[ahead, :2] / uvw[ahead, 2:], uvw[ahead, 2]


def _write_annotated(drive: TinyDrive, k: int, folder: Path) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    w, h = drive.size
    uv, z = kitti_truth(drive, k)
    depth = np.zeros((h, w), np.uint16)
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    for uu, vv, zz in sorted(zip(u[inside], v[inside], z[inside]), key=lambda p: -p[2]):
        depth[vv, uu] = int(round(zz * 256))                    # nearest drawn last
    cv2.imwrite(str(folder / f"{k:010d}.png"), depth)
