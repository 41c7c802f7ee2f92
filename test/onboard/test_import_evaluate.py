"""Imported bags scored by ``evaluate`` with the matching preset equal the reference
evaluation run on the dataset files themselves (monodepth2 on the KITTI drive's
Velodyne files, md4all + the devkit's projection on the nuScenes tables)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from depth_perception.datasets import tiny, tiny_nuscenes
from depth_perception.evaluation.offline import EvaluateConfig, evaluate
from test_protocols import (KEYS, _max_difference, generate_depth_map_arrays,
                            map_pointcloud_to_image, md4all_evaluate, monodepth2_evaluate,
                            generate_image_from_points)


class PlaneModel:
    """A stand-in depth model with the estimator's interface: depth = 4 + 0.1 u + 0.2 v
    metres at every pixel (the imported images are rectified: no rectifier to apply)."""

    def estimate(self, image, intrinsics, reference_depth=None, rectifier=None):
        assert rectifier is None or rectifier.identity
        h, w = image.shape[:2]
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        return SimpleNamespace(depth=4.0 + 0.1 * u + 0.2 * v)


def test_kitti_import_scored_with_kitti_eigen_matches_monodepth2(tmp_path):
    pytest.importorskip("pykitti")
    from depth_perception.datasets.kitti import import_kitti

    folder = "2011_09_26/2011_09_26_drive_0048_sync"
    drive = tiny.write_kitti_drive(tmp_path / "raw", folder, frames=23)
    bags = import_kitti(tmp_path / "raw", "eigen", tmp_path / "bags")
    rig = drive.calib
    gts = []
    for k in range(22):       # export_gt_depth.py: generate_depth_map(calib, velo, 2, True)
        velo = np.fromfile(tmp_path / "raw" / folder / "velodyne_points" / "data" /
                           f"{k:010d}.bin", dtype=np.float32).reshape(-1, 4).astype(np.float64)
        velo[:, 3] = 1.0
        gts.append(generate_depth_map_arrays(rig["R_velo_cam"], rig["T_velo_cam"],
                                             rig["R_rect_00"], rig["P_rect_02"], (48, 160),
                                             velo).astype(np.float32))
    preds = [PlaneModel().estimate(np.zeros((48, 160, 3)), None).depth] * 22
    for name, no_median in (("kitti-eigen", False), ("kitti-eigen-metric", True)):
        results = evaluate(bags, EvaluateConfig.for_protocol(name),
                           estimators={"plane": PlaneModel()})
        ours = results.models["plane"].summary()["all"]
        ref = monodepth2_evaluate(gts, [1.0 / p for p in preds], "eigen", no_median)
        diff = _max_difference(ours, ref)
        print(f"imported KITTI drive, {name}: {ours['frames']} frames, abs_rel "
              f"{ours['abs_rel']:.5f}, max difference vs monodepth2 {diff:.1e}")
        assert ours["frames"] == 22
        assert diff < 1e-6


def test_nuscenes_import_scored_with_md4all_matches_md4all(tmp_path):
    pytest.importorskip("nuscenes")
    pytest.importorskip("torch")
    from depth_perception.datasets.nuscenes import import_nuscenes

    descriptions = ["Parking lot", "Night, dark", "Rain, wet road"]
    drives = tiny_nuscenes.write_nuscenes(tmp_path / "data", descriptions)
    bags = import_nuscenes(tmp_path / "data", "v1.0-mini", tmp_path / "bags")
    gts, weathers = [], []
    for drive, weather in zip(drives, ("day-clear", "night-clear", "day-rain")):
        for k in range(3):           # md4all get_depth: map_pointcloud_to_image + image
            t_lidar, t_cam = drive.stamps["lidar"][k], drive.stamps["camera_keyframes"][k]
            ego_l, ego_c = (tiny_nuscenes.pose_at(drive, t) for t in (t_lidar, t_cam))
            T_lidar = drive.calib["LIDAR_TOP"]
            pts = (np.c_[drive.world_points, np.ones(len(drive.world_points))]
                   @ np.linalg.inv(ego_l @ T_lidar).T)[:, :3].astype(np.float32)
            p, d = map_pointcloud_to_image(
                pts, (T_lidar[:3, :3], T_lidar[:3, 3]), (ego_l[:3, :3], ego_l[:3, 3]),
                (ego_c[:3, :3], ego_c[:3, 3]),
                (drive.calib["CAM_FRONT"][:3, :3], drive.calib["CAM_FRONT"][:3, 3]),
                drive.calib["K"], (160, 90))
            gts.append(generate_image_from_points(p[:2], d, (90, 160)))
            weathers.append(weather)
    preds = [PlaneModel().estimate(np.zeros((90, 160, 3)), None).depth] * len(gts)
    results = evaluate(bags, EvaluateConfig.for_protocol("md4all-nuscenes"),
                       estimators={"plane": PlaneModel()})
    ours = results.models["plane"].summary()
    ref = md4all_evaluate(gts, preds, weathers, use_gt_scale=False)
    pairs = {"all": "all-conditions", "day-clear": "day-clear", "night": "night",
             "rain": "day-rain"}
    diff = max(_max_difference(ours[a], ref[b]) for a, b in pairs.items())
    print(f"imported nuScenes scenes, md4all-nuscenes: abs_rel per condition "
          f"{ {a: round(ours[a]['abs_rel'], 5) for a in pairs} }, max difference vs md4all "
          f"{diff:.1e}")
    assert [ours[c]["frames"] for c in ("day-clear", "night", "rain")] == [3, 3, 3]
    # The devkit moves the float32 cloud through global coordinates (~1e3 m): its depths
    # are off by up to 6e-5 m and 2 of ~2500 points land on the neighbouring pixel
    # (test_protocols); the package's float64 chain does not. Measured here: 2.6e-5.
    assert diff < 1e-4
    assert set(KEYS) <= set(ours["all"])
