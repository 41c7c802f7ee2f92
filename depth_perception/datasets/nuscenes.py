"""nuScenes scenes -> rosbag2, one bag per scene, through the official nuScenes devkit.

``import_nuscenes(dataroot, version, out)`` writes ``out/<scene name>``:

=======================  =========================================================
topic                    content
=======================  =========================================================
``/camera/image_raw``    CAM_FRONT keyframes (``--sweeps``: every CAM_FRONT image of
(``/compressed``)        the scene), by default the recorded JPEG (CompressedImage)
``/camera/camera_info``  ``camera_intrinsic`` of its calibrated_sensor, D = 0, R = I,
                         P = [K | 0] (nuScenes images are undistorted)
``/lidar/points``        LIDAR_TOP keyframes (x, y, z, intensity) in ``lidar_top``
``/tf_static``           ``map -> odom`` (the scene's first ego pose),
                         ``base_link -> lidar_top`` and ``-> cam_front_optical_frame``
                         from calibrated_sensor (nuScenes camera axes are optical)
``/tf``, ``/odom``       ``odom -> base_link`` from the ego_pose of every imported
                         sample_data (camera and LiDAR stamps), twist from the poses
=======================  =========================================================

``custom_data``: ``condition`` (day-clear / night / rain), md4all's four-way
``md4all_weather``, ``md4all_split`` and the official ``split`` of the scene.

md4all's rules (md4all ``data/nuscenes_dataset.py``), :func:`md4all_weather`: "night"
in the lower-cased scene description -> night, else day; "rain" -> rain, else clear.
v1.0-test descriptions are replaced first (``modify_weather_descriptions_of_nuscenes_
scenes``): a scene whose first CAM_FRONT file name lies in one of md4all's ranges is
day-rain / night-clear, every other test scene day-clear (:func:`md4all_test_weather`).
md4all's splits: train = scenes of the official train split that are day-clear, val =
the official val split in all four conditions; on v1.0-mini the val scenes are the
2nd and 10th of the scene table, the rest train. The package's condition of a bag is
day-clear, night (night-clear and night-rain: md4all's "night" column) or rain
(day-rain).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from depth_perception.data.tf import invert_transform, quat_to_matrix
from depth_perception.datasets.bagfile import ImportBag

log = logging.getLogger(__name__)

CAMERA = "CAM_FRONT"
LIDAR = "LIDAR_TOP"
CAMERA_FRAME = "cam_front_optical_frame"
LIDAR_FRAME = "lidar_top"
BASE_FRAME = "base_link"
VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
SPLITS = ("all", "md4all-train", "md4all-val", "md4all-test", "train", "val", "test",
          "mini_train", "mini_val")
#: md4all's corrected v1.0-test weather: CAM_FRONT file-name ranges (first, last)
MD4ALL_TEST_RANGES = {
    "day-rain": [("n008-2018-09-18-14-18-33-0400__CAM_FRONT__1537294719112404",
                  "n008-2018-09-18-14-18-33-0400__CAM_FRONT__1537295445612404")],
    "night-clear": [("n015-2018-11-14-19-21-41+0800__CAM_FRONT__1542194502662460",
                     "n015-2018-11-14-19-52-02+0800__CAM_FRONT__1542196694912460")],
}
#: md4all weather -> the package's condition
CONDITION_OF_WEATHER = {"day-clear": "day-clear", "day-rain": "rain", "night-clear": "night",
                        "night-rain": "night"}
MD4ALL_MINI_VAL = (1, 9)       # indices in the scene table of v1.0-mini's md4all val scenes
MISSING_DEVKIT = ("importing nuScenes needs the nuScenes devkit: pip install "
                  "'depth_perception[nuscenes]' (in a numpy-2 environment: pip install "
                  "--no-deps nuscenes-devkit pyquaternion cachetools scikit-learn)")


def md4all_weather(description: str) -> str:
    """day-clear, day-rain, night-clear or night-rain of a scene description (md4all)."""
    text = description.lower()
    return ("night" if "night" in text else "day") + ("-rain" if "rain" in text else "-clear")


def md4all_test_weather(first_camera_file: str) -> str:
    """md4all's corrected weather of a v1.0-test scene from its first CAM_FRONT file."""
    name = Path(first_camera_file).stem
    for weather, ranges in MD4ALL_TEST_RANGES.items():
        if any(lo <= name <= hi for lo, hi in ranges):
            return weather
    return "day-clear"


def _devkit():
    try:
        from nuscenes import NuScenes
        from nuscenes.utils.data_classes import LidarPointCloud
        from nuscenes.utils.splits import create_splits_scenes
    except ImportError as err:
        raise RuntimeError(f"{MISSING_DEVKIT} ({err})") from err
    return NuScenes, LidarPointCloud, create_splits_scenes


def _load(dataroot: Path, version: str):
    NuScenes, _, _ = _devkit()
    tables = dataroot / version
    if not tables.is_dir():
        raise FileNotFoundError(f"nuScenes {version}: no table folder {tables}; expected "
                                "<dataroot>/<version>/*.json beside samples/ and sweeps/")
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"nuScenes {version} in {dataroot}: {err.filename or err} is "
                                "missing; the devkit needs every table (category, attribute, "
                                "visibility, instance, sensor, calibrated_sensor, ego_pose, "
                                "log, scene, sample, sample_data, sample_annotation, map) "
                                "and the map masks") from err
    except (json.JSONDecodeError, KeyError, AssertionError) as err:
        raise ValueError(f"nuScenes {version} in {dataroot}: a table cannot be read "
                         f"({type(err).__name__}: {err})") from err


def scene_splits(nusc, version: str) -> dict:
    """{scene name: (official split, md4all split or "")} (md4all: the module docstring)."""
    _, _, create_splits_scenes = _devkit()
    official = {name: split for split, names in create_splits_scenes(verbose=False).items()
                if split in ("train", "val", "test", "mini_train", "mini_val")
                for name in names}
    out = {}
    for i, scene in enumerate(nusc.scene):
        weather = scene_weather(nusc, scene, version)
        split = official.get(scene["name"], "")
        if version == "v1.0-mini":
            md4all = "val" if i in MD4ALL_MINI_VAL else "train"
        else:
            md4all = {"train": "train", "val": "val", "test": "test"}.get(split, "")
        if md4all == "train" and weather != "day-clear":
            md4all = ""                     # md4all trains on day-clear scenes only
        out[scene["name"]] = (split, md4all)
    return out


def scene_weather(nusc, scene: dict, version: str) -> str:
    if version == "v1.0-test":
        sample = nusc.get("sample", scene["first_sample_token"])
        return md4all_test_weather(nusc.get("sample_data", sample["data"][CAMERA])["filename"])
    return md4all_weather(scene["description"])


def import_nuscenes(dataroot: str | Path, version: str, out: str | Path, split: str = "all",
                    scenes: list[str] | None = None, sweeps: bool = False,
                    storage: str = "mcap", image_format: str = "jpeg", overwrite: bool = False,
                    progress=None) -> list[Path]:
    """Write one bag per scene of ``split`` (:data:`SPLITS`); returns the bags.

    progress: called as ``progress(scene_index, n_scenes, scene_name, frames, seconds)``.
    """
    if version not in VERSIONS:
        raise ValueError(f"nuScenes version {version!r}: expected one of {', '.join(VERSIONS)}")
    if split not in SPLITS:
        raise ValueError(f"nuScenes split {split!r}: expected one of {', '.join(SPLITS)}")
    dataroot, out = Path(dataroot), Path(out)
    nusc = _load(dataroot, version)
    splits = scene_splits(nusc, version)
    chosen = [s for s in nusc.scene
              if (scenes is None or s["name"] in scenes)
              and (split == "all" or splits[s["name"]][0] == split
                   or f"md4all-{splits[s['name']][1]}" == split)]
    if not chosen:
        raise ValueError(f"nuScenes {version}: no scene in split {split}"
                         + (f" named {scenes}" if scenes else ""))
    bags = []
    for k, scene in enumerate(chosen):
        tic = time.perf_counter()
        weather = scene_weather(nusc, scene, version)
        official, md4all = splits[scene["name"]]
        custom = {"condition": CONDITION_OF_WEATHER[weather], "md4all_weather": weather,
                  "md4all_split": md4all, "split": official, "dataset": "nuscenes",
                  "version": version, "scene": scene["name"],
                  "description": scene["description"]}
        target = out / scene["name"]
        frames = _write_scene(nusc, dataroot, scene, target, custom, sweeps, storage,
                              image_format, overwrite)
        bags.append(target)
        seconds = time.perf_counter() - tic
        log.info("scene %d/%d %s (%s): %d frames in %.1f s", k + 1, len(chosen),
                 scene["name"], weather, frames, seconds)
        if progress is not None:
            progress(k + 1, len(chosen), scene["name"], frames, seconds)
    return bags


def _records(nusc, scene: dict, sweeps: bool) -> tuple[list, list]:
    """(CAM_FRONT sample_data, LIDAR_TOP keyframe sample_data) of a scene, in time order."""
    cams, lidars = [], []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        cams.append(nusc.get("sample_data", sample["data"][CAMERA]))
        lidars.append(nusc.get("sample_data", sample["data"][LIDAR]))
        token = sample["next"]
    if sweeps:                      # every CAM_FRONT image from the first to the last keyframe
        last = cams[-1]["token"]
        cams = [cams[0]]
        while cams[-1]["token"] != last and cams[-1]["next"]:
            cams.append(nusc.get("sample_data", cams[-1]["next"]))
    return cams, lidars


def _pose(record: dict) -> np.ndarray:
    """[4,4] from a nuScenes translation + rotation (w, x, y, z) record."""
    w, x, y, z = record["rotation"]
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(np.array([x, y, z, w], np.float64))
    T[:3, 3] = record["translation"]
    return T


def _static(nusc, records: list, name: str) -> np.ndarray:
    """The one calibrated_sensor pose of ``records`` (base_link -> sensor)."""
    tokens = {r["calibrated_sensor_token"] for r in records}
    poses = [_pose(nusc.get("calibrated_sensor", t)) for t in sorted(tokens)]
    if any(not np.allclose(p, poses[0]) for p in poses):
        raise ValueError(f"{name}: its calibration changes within the scene; one bag holds "
                         "one static transform per sensor")
    return poses[0]


def _write_scene(nusc, dataroot: Path, scene: dict, target: Path, custom: dict, sweeps: bool,
                 storage: str, image_format: str, overwrite: bool) -> int:
    import cv2

    from depth_perception import conversions as conv
    from depth_perception.camera import Intrinsics

    _, LidarPointCloud, _ = _devkit()
    cams, lidars = _records(nusc, scene, sweeps)
    cam_cs = nusc.get("calibrated_sensor", cams[0]["calibrated_sensor_token"])
    T_base_cam = _static(nusc, cams, CAMERA)
    T_base_lidar = _static(nusc, lidars, LIDAR)
    # ego poses of every imported record, time-ordered
    poses = sorted({(r["timestamp"] * 1000, r["ego_pose_token"]) for r in cams + lidars})
    T_world = [_pose(nusc.get("ego_pose", tok)) for _, tok in poses]
    T_map_odom = T_world[0]
    with ImportBag(target, custom, storage, image_format, overwrite) as bag:
        T = bag.T
        t0 = poses[0][0]
        bag.write("tf_static", t0, bag.msgs.tf(t0, [("map", "odom", T_map_odom),
                                                   (BASE_FRAME, LIDAR_FRAME, T_base_lidar),
                                                   (BASE_FRAME, CAMERA_FRAME, T_base_cam)]))
        for j, (stamp, _) in enumerate(poses):
            T_odom_base = invert_transform(T_map_odom) @ T_world[j]
            linear, angular = _twist(poses, T_world, j)
            bag.write("tf", stamp, bag.msgs.tf(stamp, [("odom", BASE_FRAME, T_odom_base)]))
            bag.write("odom", stamp, bag.msgs.odometry(stamp, T_odom_base, 0.0, 0.0,
                                                       linear=linear, angular=angular))
        size = None
        for record in cams:
            stamp = record["timestamp"] * 1000
            encoded = _read(dataroot / record["filename"])
            if size is None or image_format != "jpeg":
                rgb = cv2.cvtColor(_decode(encoded, record["filename"]), cv2.COLOR_BGR2RGB)
                size = (rgb.shape[1], rgb.shape[0])
            if image_format == "jpeg":
                bag.image(stamp, CAMERA_FRAME, encoded=encoded)
            else:
                bag.image(stamp, CAMERA_FRAME, rgb=rgb)
            bag.write("camera_info", stamp, conv.intrinsics_to_camera_info(
                Intrinsics.from_matrix(cam_cs["camera_intrinsic"], *size),
                bag.header(stamp, CAMERA_FRAME), T["sensor_msgs/msg/CameraInfo"]))
        for record in lidars:
            stamp = record["timestamp"] * 1000
            path = dataroot / record["filename"]
            _read(path)                                              # exists, readable
            if path.stat().st_size % 20:
                raise ValueError(f"{path}: {path.stat().st_size} bytes is not a whole number "
                                 "of LIDAR_TOP points (20 bytes: x, y, z, intensity, ring "
                                 "float32); the file is truncated")
            points = LidarPointCloud.from_file(str(path)).points.T   # [N,4] float32
            bag.write("lidar", stamp, conv.points_to_cloud(
                points, ("x", "y", "z", "intensity"), bag.header(stamp, LIDAR_FRAME),
                T["sensor_msgs/msg/PointCloud2"]))
    return len(cams)


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file of the nuScenes tables is missing (are "
                                "samples/ and sweeps/ unpacked into the dataroot?)")
    return path.read_bytes()


def _decode(data: bytes, name: str) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{name}: not a readable image (truncated JPEG?)")
    return bgr


def _twist(stamps: list, poses: list, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame linear and angular velocity at pose j from its neighbours' poses."""
    lo, hi = max(j - 1, 0), min(j + 1, len(poses) - 1)
    if hi == lo:
        return np.zeros(3), np.zeros(3)
    dt = (stamps[hi][0] - stamps[lo][0]) * 1e-9
    R = poses[j][:3, :3]
    linear = R.T @ (poses[hi][:3, 3] - poses[lo][:3, 3]) / dt
    dR = poses[lo][:3, :3].T @ poses[hi][:3, :3]
    angle = np.arctan2(dR[1, 0], dR[0, 0])                       # yaw change
    return linear, np.array([0.0, 0.0, angle / dt])
