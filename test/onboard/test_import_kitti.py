"""``depth-perception import kitti``: a tiny KITTI raw drive with known geometry, read by
pykitti, imported, and read back by the data layer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from depth_perception.data.bag import BagReader, read_bag_metadata
from depth_perception.data.samples import BagSequence, SampleConfig
from depth_perception.datasets import tiny

pytest.importorskip("pykitti")

FOLDER = "2011_09_26/2011_09_26_drive_0048_sync"     # eigen test: frames 0..21


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from depth_perception.datasets.kitti import import_kitti

    root = tmp_path_factory.mktemp("kitti")
    drive = tiny.write_kitti_drive(root / "raw", FOLDER, frames=23, annotated=(5, 6))
    seen = []
    bags = import_kitti(root / "raw", "eigen", root / "bags",
                        progress=lambda *a: seen.append(a))
    return drive, bags, seen


def test_counts_stamps_and_metadata(imported):
    drive, bags, seen = imported
    assert [b.name for b in bags] == ["2011_09_26_drive_0048"]
    assert seen[0][:4] == (1, 1, FOLDER, 22)             # progress per drive
    with BagReader(bags[0]) as reader:
        assert reader.condition == "day-clear"
        assert reader.count("image") == reader.count("camera_info") == 22
        assert reader.count("lidar") == 22
        assert reader.count("odom") == 23                 # frames 0..21 and neighbour 22
        assert reader.topic_name("image") == "/camera/image_raw/compressed"
        np.testing.assert_array_equal(reader.stamps("image"), drive.stamps["image_02"][:22])
        np.testing.assert_array_equal(reader.stamps("lidar"),
                                      drive.stamps["velodyne_points"][:22])
        assert reader.image(3).shape == (48, 160, 3)
        np.testing.assert_array_equal(reader.image(3), tiny.frame_image(3, 160, 48))
        K = reader.camera_info(0)
        np.testing.assert_allclose([K.fx, K.fy, K.cx, K.cy],
                                   drive.calib["P_rect_02"][[0, 1, 0, 1], [0, 1, 2, 2]])
        assert abs(reader.odometry(4).speed - drive.speed) < 1e-9
        assert reader.frame_id("lidar") == "velodyne"
    custom = read_bag_metadata(bags[0])["custom_data"]
    assert json.loads(custom["frames"]) == list(range(22))
    assert custom["split_source"] == "monodepth2 splits/eigen/test_files.txt"


@pytest.mark.parametrize("motion_compensation", [True, False])
def test_lidar_lands_where_the_calibration_puts_it(imported, motion_compensation):
    """The bag's TF + CameraInfo place every Velodyne point on the pixel P_rect_02 R_rect
    T_velo_cam gives it; with motion compensation at the camera time, without at the
    scan time (20 ms earlier at 10 m/s: 0.2 m). A transposed rotation, a flipped offset or
    a wrong motion direction moves points by pixels."""
    drive, bags, _ = imported
    seq = BagSequence(bags[0], SampleConfig(offsets=(), skip_static=False, with_gt=False,
                                            motion_compensation=motion_compensation))
    checked, worst = 0, 0.0
    for k in (0, 7, 21):
        depth = seq.lidar_depth(k)
        if motion_compensation:
            uv, z = tiny.kitti_truth(drive, k)
        else:                       # where the points were at the scan time
            shifted = tiny.TinyDrive(drive.world_points, drive.speed, drive.t0_ns,
                                     {**drive.stamps, "image_02": drive.stamps["velodyne_points"]},
                                     drive.calib, drive.size)
            uv, z = tiny.kitti_truth(shifted, k)
        u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
        inside = (u >= 0) & (u < 160) & (v >= 0) & (v < 48)
        pixels = list(zip(v[inside], u[inside]))
        alone = [i for i, p in zip(np.flatnonzero(inside), pixels) if pixels.count(p) == 1]
        for i in alone:
            assert depth[v[i], u[i]] == pytest.approx(z[i], abs=2e-3)
            worst = max(worst, abs(float(depth[v[i], u[i]]) - z[i]))
        checked += len(alone)
        assert np.isfinite(depth).sum() == len(set(pixels))
    print(f"motion compensation {motion_compensation}: {checked} points on their pixels, "
          f"max |depth error| {worst:.1e} m")
    assert checked > 100


def test_annotated_depth_becomes_ground_truth(imported):
    _, bags, _ = imported
    with BagReader(bags[0]) as reader:
        assert reader.count("gt_depth") == 2
        gt = reader.gt_depth(0)
        assert gt.shape == (48, 160) and np.isfinite(gt).sum() > 50


def test_bad_input_gets_a_clear_error(tmp_path):
    from depth_perception.datasets.kitti import import_kitti

    with pytest.raises(FileNotFoundError, match="none of the .* drives of split eigen"):
        tiny.write_kitti_drive(tmp_path / "raw", "2011_09_26/2011_09_26_drive_9999_sync",
                               frames=3)
        import_kitti(tmp_path / "raw", "eigen", tmp_path / "bags")
    tiny.write_kitti_drive(tmp_path / "raw", FOLDER, frames=23)
    scan = tmp_path / "raw" / FOLDER / "velodyne_points" / "data" / "0000000004.bin"
    scan.write_bytes(scan.read_bytes()[:-5])
    with pytest.raises(ValueError, match="0000000004.bin: .* truncated"):
        import_kitti(tmp_path / "raw", "eigen", tmp_path / "bags")
    assert not (tmp_path / "bags" / "2011_09_26_drive_0048").exists()   # no half bag
    (tmp_path / "raw" / "2011_09_26" / "calib_velo_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match="calib_velo_to_cam.txt"):
        import_kitti(tmp_path / "raw", "eigen", tmp_path / "bags")
    with pytest.raises(ValueError, match="unknown KITTI split 'eigen_full'"):
        import_kitti(tmp_path / "raw", "eigen_full", tmp_path / "bags")


def test_missing_pykitti_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from depth_perception.datasets.kitti import import_kitti

    monkeypatch.setitem(sys.modules, "pykitti", None)
    with pytest.raises(RuntimeError, match=r"pip install 'depth_perception\[kitti\]'"):
        import_kitti(tmp_path, "eigen", tmp_path / "bags")
