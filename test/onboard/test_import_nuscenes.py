"""``depth-perception import nuscenes``: a tiny nuScenes layout with known geometry, read
by the official devkit, imported, read back by the data layer; md4all's condition and
split rules on crafted descriptions."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception.data.bag import BagReader, read_bag_metadata
from depth_perception.data.samples import BagSequence, SampleConfig
from depth_perception.datasets import tiny_nuscenes
from depth_perception.datasets.nuscenes import (MD4ALL_TEST_RANGES, md4all_test_weather,
                                                md4all_weather)

pytest.importorskip("nuscenes")

DESCRIPTIONS = ["Parking lot, big trucks", "Night, rain, parked cars", "Rain, wet road, peds"]

#: description -> (md4all weather, the bag's condition); md4all matches substrings of
#: the lower-cased text, so "Train station" is rain and "drizzle" is not
CONDITION_TABLE = [
    ("Parking lot, big trucks", "day-clear", "day-clear"),
    ("Night, rain, parked cars", "night-rain", "night"),
    ("Rain, wet road, peds", "day-rain", "rain"),
    ("NIGHT, intersection", "night-clear", "night"),
    ("Nighttime drizzle", "night-clear", "night"),
    ("Heavy rainfall, puddles", "day-rain", "rain"),
    ("Train station, bus stop", "day-rain", "rain"),
    ("Overcast, after the storm", "day-clear", "day-clear"),
]


def test_condition_rule_on_crafted_descriptions():
    from depth_perception.datasets.nuscenes import CONDITION_OF_WEATHER

    rows = []
    for description, weather, condition in CONDITION_TABLE:
        got = md4all_weather(description)
        rows.append(f"| {description} | {got} | {CONDITION_OF_WEATHER[got]} |")
        assert (got, CONDITION_OF_WEATHER[got]) == (weather, condition), description
    print("\n| description | md4all weather | condition |\n|---|---|---|\n" + "\n".join(rows))


def test_md4all_test_split_corrections():
    (lo, hi), = MD4ALL_TEST_RANGES["day-rain"]
    assert md4all_test_weather(f"samples/CAM_FRONT/{lo}.jpg") == "day-rain"       # inclusive
    assert md4all_test_weather(f"samples/CAM_FRONT/{hi}.jpg") == "day-rain"
    (lo, _), = MD4ALL_TEST_RANGES["night-clear"]
    assert md4all_test_weather(f"samples/CAM_FRONT/{lo}.jpg") == "night-clear"
    # outside every range: day-clear, whatever the description said
    assert md4all_test_weather("samples/CAM_FRONT/n008-2018-09-18-14-18-33-0400__CAM_FRONT"
                               "__1537295445612405.jpg") == "day-clear"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from depth_perception.datasets.nuscenes import import_nuscenes

    root = tmp_path_factory.mktemp("nusc")
    drives = tiny_nuscenes.write_nuscenes(root / "data", DESCRIPTIONS)
    seen = []
    bags = import_nuscenes(root / "data", "v1.0-mini", root / "bags",
                           progress=lambda *a: seen.append(a))
    sweeps = import_nuscenes(root / "data", "v1.0-mini", root / "sweeps", sweeps=True,
                             scenes=["scene-0001"], image_format="raw")
    return drives, bags, seen, sweeps


def test_one_bag_per_scene_with_condition_split_counts_and_stamps(imported):
    drives, bags, seen, sweeps = imported
    assert [b.name for b in bags] == ["scene-0001", "scene-0002", "scene-0003"]
    assert [s[2:4] for s in seen] == [("scene-0001", 3), ("scene-0002", 3), ("scene-0003", 3)]
    custom = [read_bag_metadata(b)["custom_data"] for b in bags]
    assert [c["condition"] for c in custom] == ["day-clear", "night", "rain"]
    assert [c["md4all_weather"] for c in custom] == ["day-clear", "night-rain", "day-rain"]
    # v1.0-mini: md4all validates on the 2nd (and 10th) scene; trains on day-clear only
    assert [c["md4all_split"] for c in custom] == ["train", "val", ""]
    for bag, drive in zip(bags, drives):
        with BagReader(bag) as reader:
            assert reader.count("image") == reader.count("camera_info") == 3
            assert reader.count("lidar") == 3
            assert reader.topic_name("image") == "/camera/image_raw/compressed"
            np.testing.assert_array_equal(reader.stamps("image"),
                                          drive.stamps["camera_keyframes"])
            np.testing.assert_array_equal(reader.stamps("lidar"), drive.stamps["lidar"])
            K = reader.camera_info(0)
            np.testing.assert_allclose([K.fx, K.fy, K.cx, K.cy], drive.calib["K"][[0, 1, 0, 1],
                                                                                   [0, 1, 2, 2]])
            assert (K.width, K.height) == (160, 90)
            assert abs(reader.odometry(1).speed - drive.speed) < 1e-6
            assert reader.frame_id("lidar") == "lidar_top"
    with BagReader(sweeps[0]) as reader:
        assert reader.count("image") == 13 and reader.count("lidar") == 3
        np.testing.assert_array_equal(reader.stamps("image"), drives[0].stamps["camera"])
        assert reader.image(5).shape == (90, 160, 3)


def test_lidar_lands_where_the_calibration_and_ego_poses_put_it(imported):
    """Through calibrated_sensor and ego_pose, each LIDAR_TOP point lands on the pixel of
    the world point seen by CAM_FRONT at the camera time (12 ms after the scan at 8 m/s:
    0.1 m of motion compensated). A transposed quaternion or a wrong motion sign fails."""
    drives, bags, _, _ = imported
    checked, worst = 0, 0.0
    for bag, drive in zip(bags, drives):
        seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_gt=False))
        for k in range(3):
            depth = seq.lidar_depth(k)
            T_global_cam = tiny_nuscenes.pose_at(drive, drive.stamps["camera_keyframes"][k]) \
                @ drive.calib["CAM_FRONT"]
            X = np.c_[drive.world_points, np.ones(len(drive.world_points))]
            cam = (X @ np.linalg.inv(T_global_cam).T)[:, :3]
            cam = cam[cam[:, 2] > 0.5]
            uv = cam @ drive.calib["K"].T
            u, v = np.rint(uv[:, 0] / uv[:, 2]).astype(int), np.rint(uv[:, 1] / uv[:, 2]).astype(int)
            inside = (u >= 0) & (u < 160) & (v >= 0) & (v < 90)
            pixels = list(zip(v[inside], u[inside]))
            for i, p in zip(np.flatnonzero(inside), pixels):
                if pixels.count(p) == 1:
                    assert depth[p] == pytest.approx(cam[i, 2], abs=2e-3)
                    worst = max(worst, abs(float(depth[p]) - cam[i, 2]))
                    checked += 1
    print(f"nuScenes import: {checked} points on their pixels, max |depth error| {worst:.1e} m")
    assert checked > 150


def test_bad_input_gets_a_clear_error(tmp_path):
    from depth_perception.datasets.nuscenes import import_nuscenes

    tiny_nuscenes.write_nuscenes(tmp_path / "data", DESCRIPTIONS[:1])
    scan = next((tmp_path / "data" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    scan.write_bytes(scan.read_bytes()[:-7])
    with pytest.raises(ValueError, match="pcd.bin: .* truncated"):
        import_nuscenes(tmp_path / "data", "v1.0-mini", tmp_path / "bags")
    assert not (tmp_path / "bags" / "scene-0001").exists()
    (tmp_path / "data" / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(FileNotFoundError, match="ego_pose.json is missing"):
        import_nuscenes(tmp_path / "data", "v1.0-mini", tmp_path / "bags")
    with pytest.raises(FileNotFoundError, match="no table folder"):
        import_nuscenes(tmp_path / "data", "v1.0-trainval", tmp_path / "bags")
    with pytest.raises(ValueError, match="split 'md4all'"):
        import_nuscenes(tmp_path / "data", "v1.0-mini", tmp_path / "bags", split="md4all")


def test_missing_devkit_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from depth_perception.datasets.nuscenes import import_nuscenes

    monkeypatch.setitem(sys.modules, "nuscenes", None)
    with pytest.raises(RuntimeError, match=r"pip install 'depth_perception\[nuscenes\]'"):
        import_nuscenes(tmp_path, "v1.0-mini", tmp_path / "bags")
