"""A tiny nuScenes dataset in the devkit's layout, written from a known geometry.

``write_nuscenes(dataroot, descriptions)`` writes ``dataroot/v1.0-mini/*.json`` (every
table the devkit loads), ``samples/`` and ``sweeps/`` (CAM_FRONT JPEGs at 12 Hz,
keyframes at 2 Hz; LIDAR_TOP keyframe scans as ``.pcd.bin``) and a map mask, one scene
per description, each a vehicle driving straight through static world points.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from depth_perception.data.tf import matrix_to_quat
from depth_perception.datasets.tiny import (FORWARD_TO_OPTICAL, TinyDrive, frame_image, rigid,
                                            rotation, world_points)

LOG = "n008-2018-08-01-15-16-36-0400"


def _quat_wxyz(R: np.ndarray) -> list:
    x, y, z, w = matrix_to_quat(R)
    return [float(w), float(x), float(y), float(z)]


def nuscenes_rig(size=(160, 90)) -> dict:
    """{sensor: [4,4] base_link -> sensor}, the camera matrix and image size."""
    w, h = size
    return {"LIDAR_TOP": rigid(rotation(0.01, -0.015, -np.pi / 2 + 0.03), [0.94, 0.02, 1.84]),
            "CAM_FRONT": rigid(rotation(0.0, 0.0, 0.04) @ FORWARD_TO_OPTICAL.T
                               @ rotation(0.03, -0.02, 0.01), [1.70, 0.05, 1.51]),
            "K": np.array([[120.0, 0.0, w / 2 + 2.5], [0.0, 118.0, h / 2 - 3.5], [0, 0, 1.0]]),
            "size": (w, h)}


def write_nuscenes(dataroot: str | Path, descriptions, samples: int = 3, speed: float = 8.0,
                   size=(160, 90), seed: int = 0, version: str = "v1.0-mini",
                   points: int = 400) -> list[TinyDrive]:
    """One scene per description (names scene-0001, ...); returns each scene's truth,
    with world points in the nuScenes global frame and stamps in nanoseconds."""
    import cv2

    root = Path(dataroot)
    rig = nuscenes_rig(size)
    tables = {name: [] for name in ("category", "attribute", "visibility", "instance",
                                    "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
                                    "sample", "sample_data", "sample_annotation", "map")}
    for channel, modality in (("CAM_FRONT", "camera"), ("LIDAR_TOP", "lidar")):
        tables["sensor"].append({"token": f"sensor-{channel}", "channel": channel,
                                 "modality": modality})
        T = rig[channel]
        tables["calibrated_sensor"].append({
            "token": f"cs-{channel}", "sensor_token": f"sensor-{channel}",
            "translation": T[:3, 3].tolist(), "rotation": _quat_wxyz(T[:3, :3]),
            "camera_intrinsic": rig["K"].tolist() if channel == "CAM_FRONT" else []})
    tables["log"].append({"token": "log-0", "logfile": LOG, "vehicle": "n008",
                          "date_captured": "2018-08-01", "location": "boston-seaport"})
    tables["map"].append({"token": "map-0", "log_tokens": ["log-0"],
                          "category": "semantic_prior", "filename": "maps/tiny.png"})
    (root / "maps").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "maps" / "tiny.png"), np.zeros((8, 8), np.uint8))
    drives = []
    for s, description in enumerate(descriptions):
        t0_us = 1533151603512404 + s * 60_000_000
        heading = 0.5 + 0.3 * s
        start = rigid(rotation(0.0, 0.0, heading), [400.0 + 50 * s, 1100.0, 0.0])
        local = world_points(seed + s, points, far=40.0)
        pts = np.c_[local, np.ones(len(local))] @ start.T
        lidar_us = [t0_us + 500_000 * k for k in range(samples)]
        cam_us = [t0_us + 12_000 + 83_333 * m for m in range(6 * (samples - 1) + 1)]
        drive = TinyDrive(pts[:, :3], speed, t0_us * 1000,
                          {"lidar": [t * 1000 for t in lidar_us], "camera": [t * 1000 for t in cam_us],
                           "camera_keyframes": [cam_us[6 * k] * 1000 for k in range(samples)]},
                          {"start": start, **rig}, size, samples)
        drives.append(drive)
        scene, sample_tokens = f"scene-{s}", [f"sample-{s}-{k}" for k in range(samples)]
        for k, tok in enumerate(sample_tokens):
            tables["sample"].append({"token": tok, "timestamp": lidar_us[k], "scene_token": scene,
                                     "prev": sample_tokens[k - 1] if k else "",
                                     "next": sample_tokens[k + 1] if k + 1 < samples else ""})
        tables["scene"].append({"token": scene, "log_token": "log-0", "nbr_samples": samples,
                                "first_sample_token": sample_tokens[0],
                                "last_sample_token": sample_tokens[-1],
                                "name": f"scene-{s + 1:04d}", "description": description})
        _sensor_records(tables, root, drive, "LIDAR_TOP", lidar_us, list(range(samples)), s)
        _sensor_records(tables, root, drive, "CAM_FRONT", cam_us,
                        [m // 6 if m % 6 == 0 else None for m in range(len(cam_us))], s)
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (folder / f"{name}.json").write_text(json.dumps(rows, indent=0))
    return drives


def pose_at(drive: TinyDrive, stamp_ns: int) -> np.ndarray:
    """[4,4] global pose of the vehicle at ``stamp_ns`` (straight ahead from the start)."""
    return drive.calib["start"] @ drive.T_world_base(stamp_ns)


def _sensor_records(tables, root: Path, drive: TinyDrive, channel: str, stamps_us, keys, s):
    import cv2

    w, h = drive.size
    tokens = [f"sd-{s}-{channel}-{m}" for m in range(len(stamps_us))]
    last_key = 0
    for m, (t_us, key) in enumerate(zip(stamps_us, keys)):
        last_key = key if key is not None else last_key
        folder = "samples" if key is not None else "sweeps"
        ext = "jpg" if channel == "CAM_FRONT" else "pcd.bin"
        filename = f"{folder}/{channel}/{LOG}__{channel}__{t_us}.{ext}"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        T_global_base = pose_at(drive, t_us * 1000)
        if channel == "CAM_FRONT":
            bgr = cv2.cvtColor(frame_image(m, w, h), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / filename), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        else:
            T = T_global_base @ drive.calib[channel]
            X = np.c_[drive.world_points, np.ones(len(drive.world_points))] @ np.linalg.inv(T).T
            scan = np.c_[X[:, :3], np.linspace(0, 100, len(X)), np.zeros(len(X))]
            scan.astype(np.float32).tofile(root / filename)
        tables["ego_pose"].append({"token": f"ego-{tokens[m]}", "timestamp": t_us,
                                   "translation": T_global_base[:3, 3].tolist(),
                                   "rotation": _quat_wxyz(T_global_base[:3, :3])})
        tables["sample_data"].append({
            "token": tokens[m], "sample_token": f"sample-{s}-{last_key}",
            "ego_pose_token": f"ego-{tokens[m]}", "calibrated_sensor_token": f"cs-{channel}",
            "timestamp": t_us, "fileformat": "jpg" if channel == "CAM_FRONT" else "pcd",
            "is_key_frame": key is not None, "height": h if channel == "CAM_FRONT" else 0,
            "width": w if channel == "CAM_FRONT" else 0, "filename": filename,
            "prev": tokens[m - 1] if m else "", "next": tokens[m + 1] if m + 1 < len(tokens) else ""})
