"""BagSequence: neighbours, gaps, static frames, poses, LiDAR projection, resize/crop, cache.

The rig of test/bagtools.py: camera optical frame at (1, 0, 1.5) in base_link looking
along +x, LiDAR at (0, 0, 2) with base_link axes, K = [[100, 0, 64], [0, 100, 48]] at
128x96, the vehicle drives along +x at 2 m/s, frames at 10 Hz.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from support.bagtools import INTRINSICS, frame_image, make_drive_bag
from depth_perception.camera import Intrinsics
from depth_perception.data.cache import FrameCache
from depth_perception.data.projection import points_to_depth as project_points
from depth_perception.data.samples import BagSequence, SampleConfig

# LiDAR-frame points and where they must land (worked by hand in the comments)
LIDAR_POINTS = np.array([
    # far point on the same ray as the next one: hidden by the z-buffer
    [21.0, -1.6, -0.5],   # base (21,-1.6,1.5); from camera (20,-1.6,0) -> optical (1.6,0,20)
                          # u = 100*1.6/20 + 64 = 72, v = 48, z = 20
    [11.0, -0.8, -0.5],   # base (11,-0.8,1.5); from camera (10,-0.8,0) -> optical (0.8,0,10)
                          # u = 100*0.8/10 + 64 = 72, v = 48, z = 10  (wins the pixel)
    [11.0, -0.8, 0.0],    # base (11,-0.8,2.0); optical (0.8,-0.5,10): u = 72, v = 43, z = 10
    [6.0, 2.0, -1.0],     # base (6,2,1); from camera (5,2,-0.5) -> optical (-2,0.5,5)
                          # u = 100*(-2)/5 + 64 = 24, v = 100*0.5/5 + 48 = 58, z = 5
    [-5.0, 0.0, 0.0],     # behind the camera: dropped
    [11.0, -20.0, 0.0],   # optical x = 20 at z = 10: u = 264, outside: dropped
], np.float32)
EXPECTED = {(48, 72): 10.0, (43, 72): 10.0, (58, 24): 5.0}   # (v, u) -> z


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("drive")
    return make_drive_bag(root / "drive", "mcap", n=8, lidar_points=LIDAR_POINTS)


def _finite(depth):
    return {tuple(int(x) for x in vu): float(depth[tuple(vu)])
            for vu in np.argwhere(np.isfinite(depth))}


# -- LiDAR --------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_lidar_points_project_to_hand_computed_pixels(tmp_path, storage):
    bag = make_drive_bag(tmp_path / storage, storage, n=4, lidar_points=LIDAR_POINTS)
    seq = BagSequence(bag, SampleConfig())
    s = seq[0]
    assert s.lidar_depth.shape == (96, 128) and s.lidar_depth.dtype == np.float32
    got = _finite(s.lidar_depth)
    assert got.keys() == EXPECTED.keys()
    for vu, z in EXPECTED.items():
        assert got[vu] == pytest.approx(z, abs=1e-5)


def test_lidar_ego_motion_compensation(tmp_path):
    # scan stamped 40 ms after the image: the vehicle has moved 0.08 m further, so the
    # point 10 m ahead at scan time was 10.08 m ahead at the image time;
    # u = 100*0.8/10.08 + 64 = 71.94 -> 72
    bag = make_drive_bag(tmp_path / "late", "mcap", n=4, lidar_points=LIDAR_POINTS[1:2],
                         lidar_offset_ns=40_000_000)
    comp = BagSequence(bag, SampleConfig())[0].lidar_depth
    assert _finite(comp) == {(48, 72): pytest.approx(10.08, abs=1e-5)}
    plain = BagSequence(bag, SampleConfig(motion_compensation=False))[0].lidar_depth
    assert _finite(plain) == {(48, 72): pytest.approx(10.0, abs=1e-5)}
    too_old = BagSequence(bag, SampleConfig(max_lidar_gap_s=0.02))[0].lidar_depth
    assert np.isnan(too_old).all()


def test_project_points_z_buffer_is_order_independent():
    K = Intrinsics(10.0, 10.0, 2.0, 2.0, 5, 5)
    pts = np.array([[0, 0, 4.0], [0, 0, 2.0], [0, 0, 3.0], [0.5, 0, 1.0], [0, 0, -1.0]])
    # (0.5, 0, 1): u = 10*0.5/1 + 2 = 7 is outside the 5-pixel image; z = -1 is behind
    for perm in ([0, 1, 2, 3, 4], [2, 1, 0, 4, 3], [3, 4, 1, 0, 2]):
        d = project_points(pts[perm], K)
        assert d[2, 2] == 2.0            # nearest of the three on the optical axis
        assert np.isfinite(d).sum() == 1


# -- neighbours, gaps, static ---------------------------------------------------------
def test_triplets_and_relative_poses(drive):
    seq = BagSequence(drive, SampleConfig())
    assert len(seq) == 6 and seq.dropped["edge"] == 2
    assert seq.period_s == pytest.approx(0.1) and seq.max_gap_s == pytest.approx(0.15)
    for k, s in enumerate(seq):
        frame = k + 1
        assert s.index == frame
        np.testing.assert_array_equal(s.image, frame_image(frame))
        np.testing.assert_array_equal(s.context[-1], frame_image(frame - 1))
        np.testing.assert_array_equal(s.context[1], frame_image(frame + 1))
        assert s.stamp_ns == 10**9 + frame * 10**8
        # the next camera is 0.2 m further along its optical z: a target point at z
        # is at z - 0.2 in the source (+1) camera and at z + 0.2 in the previous one
        np.testing.assert_allclose(s.T_src_tgt[1] @ [0, 0, 10, 1], [0, 0, 9.8, 1], atol=1e-9)
        np.testing.assert_allclose(s.T_src_tgt[-1] @ [0, 0, 10, 1], [0, 0, 10.2, 1], atol=1e-9)
        assert s.distance == {-1: pytest.approx(0.2), 1: pytest.approx(0.2)}
        assert s.speed == pytest.approx(2.0) and s.condition == "day-clear"
        np.testing.assert_array_equal(s.gt_depth, np.full((96, 128), 10.0, np.float32))


def test_other_offsets(drive):
    seq = BagSequence(drive, SampleConfig(offsets=(-2, 1)))
    assert [s.index for s in seq] == [2, 3, 4, 5, 6]
    s = seq[0]
    np.testing.assert_array_equal(s.context[-2], frame_image(0))
    np.testing.assert_allclose(s.T_src_tgt[-2][:3, 3], [0, 0, 0.4], atol=1e-9)
    assert len(BagSequence(drive, SampleConfig(offsets=()))) == 8


def test_gaps_drop_targets(tmp_path):
    # frame 4 missing: the 200 ms gap between frames 3 and 5 exceeds 1.5 x 100 ms
    bag = make_drive_bag(tmp_path / "gap", "sqlite3", n=8, drop_frames=(4,))
    seq = BagSequence(bag, SampleConfig())
    frames = [round((s.stamp_ns - 10**9) / 1e8) for s in seq]
    assert frames == [1, 2, 6]
    assert seq.dropped == {"edge": 2, "gap": 2, "pose": 0, "static": 0}
    s = seq[2]                       # frame 6: neighbours 5 and 7, not across the gap
    np.testing.assert_array_equal(s.context[-1], frame_image(5))
    # a generous max gap keeps them, with the real (0.4 m) displacement across the gap
    loose = BagSequence(bag, SampleConfig(max_gap_s=0.25))
    assert len(loose) == 5
    s = next(s for s in loose if s.stamp_ns == 10**9 + 3 * 10**8)
    np.testing.assert_allclose(s.T_src_tgt[1][:3, 3], [0, 0, -0.4], atol=1e-9)


@pytest.mark.parametrize("odom_in_tf", [False, True])
def test_static_frames_are_skipped(tmp_path, odom_in_tf):
    # the vehicle stands still from frame 3 to frame 5
    bag = make_drive_bag(tmp_path / "static", "mcap", n=8, static_frames=(3, 4),
                         odom_in_tf=odom_in_tf)
    seq = BagSequence(bag, SampleConfig())
    kept = [s.index for s in seq]
    if odom_in_tf:   # speed from pose differences: frame 4 sees poses 3 and 5 equal
        assert kept == [1, 2, 3, 5, 6] and seq.speeds[4] == 0.0
        assert seq.speeds[5] == pytest.approx(1.0)   # (0.8 - 0.6) m / 0.2 s
    else:            # speed from the odometry twist
        assert kept == [1, 2, 5, 6]
    assert seq.dropped["static"] == 6 - len(kept)
    assert len(BagSequence(bag, SampleConfig(skip_static=False))) == 6


def test_condition_override(drive):
    assert BagSequence(drive, SampleConfig(condition="rain"))[0].condition == "rain"


def test_compressed_bag_samples(tmp_path):
    bag = make_drive_bag(tmp_path / "c", "mcap", n=4, compressed=True)
    s = BagSequence(bag, SampleConfig())[0]
    np.testing.assert_array_equal(s.image, frame_image(1))


def test_no_pose_source_is_explained(tmp_path):
    from support.bagtools import BagBuilder

    b = BagBuilder(tmp_path / "nopose", "mcap")
    for k in range(3):
        b.image(10**9 + k * 10**8, frame_image(k))
        b.camera_info(10**9 + k * 10**8, INTRINSICS)
    b.write()
    with pytest.raises(ValueError, match="no camera pose 'odom' -> 'camera_optical_frame'.*"
                                         "expected odometry on '/odom'"):
        BagSequence(tmp_path / "nopose", SampleConfig())
    # evaluation use: no neighbours, no static filter -> fine without poses
    seq = BagSequence(tmp_path / "nopose", SampleConfig(offsets=(), skip_static=False))
    assert len(seq) == 3 and seq[0].lidar_depth is None


# -- resize and crop keep K consistent ------------------------------------------------
def test_resize_and_crop_keep_projection_on_the_scene_point(tmp_path):
    # camera-frame point P = (0.8, -0.5, 10) projects to (72, 43) in the original image;
    # the same point is the LiDAR return (11, -0.8, 0) and a bright dot is drawn there.
    P = np.array([[0.8, -0.5, 10.0]])
    (u0, v0), = INTRINSICS.project(P)[0]
    assert (u0, v0) == (72.0, 43.0)
    bag = make_drive_bag(tmp_path / "dot", "mcap", n=3, dot=(72, 43), background=40,
                         lidar_points=np.array([[11.0, -0.8, 0.0]]))
    for cfg in (SampleConfig(size=(64, 48)),
                SampleConfig(crop=(16, 8, 96, 80)),
                SampleConfig(crop=(16, 8, 96, 80), size=(48, 40)),
                SampleConfig(crop=(40, 20, 64, 48), size=(128, 96))):
        s = BagSequence(bag, cfg)[0]
        H, W = s.image.shape[:2]
        assert (W, H) == (s.intrinsics.width, s.intrinsics.height)
        (u, v), = s.intrinsics.project(P)[0]
        # centroid of the dot (uniform background 40 removed): a half-pixel slip in
        # the principal point would move it by 0.25 px (x0.5) to 0.5 px (x2)
        mass = s.image.astype(float).sum(axis=2) - 3 * 40
        vs, us = np.mgrid[:H, :W]
        ub, vb = (mass * us).sum() / mass.sum(), (mass * vs).sum() / mass.sum()
        assert abs(ub - u) < 0.1 and abs(vb - v) < 0.1, (cfg, (u, v), (ub, vb))
        (vl, ul), = _finite(s.lidar_depth)            # one LiDAR pixel, on the same point
        assert abs(ul - u) <= 0.5 + 1e-6 and abs(vl - v) <= 0.5 + 1e-6
        assert s.lidar_depth[vl, ul] == pytest.approx(10.0)
        # a camera-sized depth map of the frame (a pseudo label): 7 m on a 3x3 block at
        # the point, NaN elsewhere, lands on it with values kept (nearest neighbour)
        label = np.full((INTRINSICS.height, INTRINSICS.width), np.nan, np.float32)
        label[42:45, 71:74] = 7.0
        seq = BagSequence(bag, cfg)
        prepared = seq.prepare_depth(label)
        assert prepared.shape == (H, W)
        assert set(np.unique(prepared[np.isfinite(prepared)])) == {7.0}
        vp, up = np.argwhere(np.isfinite(prepared)).mean(axis=0)
        assert abs(up - u) <= 1.0 and abs(vp - v) <= 1.0, (cfg, (u, v), (up, vp))
    with pytest.raises(ValueError, match="expected the camera size 128x96"):
        seq.prepare_depth(np.zeros((10, 10), np.float32))
    # hand-worked for crop (16, 8, 96x80) then resize x0.5: fx = 50,
    # cx = 0.5 * (48 + 0.5) - 0.5 = 23.75, cy = 0.5 * (40 + 0.5) - 0.5 = 19.75
    s = BagSequence(bag, SampleConfig(crop=(16, 8, 96, 80), size=(48, 40)))[0]
    assert s.intrinsics == Intrinsics(50.0, 50.0, 23.75, 19.75, 48, 40)


def test_bad_config():
    with pytest.raises(ValueError, match="distinct and non-zero"):
        SampleConfig(offsets=(0, 1))
    with pytest.raises(ValueError, match=r"\(W, H\)"):
        SampleConfig(size=(0, 10))


def test_crop_outside_image(drive):
    with pytest.raises(ValueError, match="outside image 128x96"):
        BagSequence(drive, SampleConfig(crop=(100, 0, 64, 48)))


def test_synthetic_bag_lidar_matches_ground_truth_and_poses_warp():
    """On a rendered drive: LiDAR depth agrees with the ray-cast ground truth, and
    warping a neighbour with GT depth, K and T_src_tgt reproduces the target."""
    import cv2

    synth = pytest.importorskip("depth_perception.synth")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bag, = synth.make_synthetic_bags(tmp, frames=4, size=(160, 64),
                                         conditions=("day-clear",), seed=0, storage="mcap")
        seq = BagSequence(bag, SampleConfig())
        assert len(seq) == 2 and seq.condition == "day-clear"
        s = seq[0]
    lidar, gt = s.lidar_depth, s.gt_depth
    both = np.isfinite(lidar) & np.isfinite(gt)
    assert both.sum() > 500
    rel = np.abs(lidar[both] - gt[both]) / gt[both]
    assert np.median(rel) < 0.02

    K, (H, W) = s.intrinsics.K, gt.shape
    v, u = np.mgrid[:H, :W].astype(np.float64)
    X = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T * gt[..., None]

    def warp_error(src, T):
        p = (X @ T[:3, :3].T + T[:3, 3]) @ K.T
        mapped = cv2.remap(src.astype(np.float32), (p[..., 0] / p[..., 2]).astype(np.float32),
                           (p[..., 1] / p[..., 2]).astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
        ok = np.isfinite(mapped).all(-1) & np.isfinite(gt)
        return np.abs(mapped[ok] - s.image[ok]).mean()

    for o in (-1, 1):
        right = warp_error(s.context[o], s.T_src_tgt[o])
        wrong = warp_error(s.context[o], np.linalg.inv(s.T_src_tgt[o]))   # sign slip
        identity = np.abs(s.context[o].astype(float) - s.image).mean()
        assert right < 0.6 * identity and right < 0.6 * wrong


# -- cache ------------------------------------------------------------------------------
def _read_all(seq):
    return [(s.image, s.lidar_depth, s.gt_depth, s.context) for s in seq]


def test_cache_second_epoch_decodes_nothing(drive, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    cfg = SampleConfig(size=(64, 48))
    seq = BagSequence(drive, cfg, cache=cache)
    first = _read_all(seq)
    decoded = seq.decode_count
    assert decoded == 8 + 6 + 6       # 8 images, 6 LiDAR projections, 6 ground truths
    second = _read_all(seq)
    assert seq.decode_count == decoded                      # second epoch: no decode
    fresh = BagSequence(drive, cfg, cache=cache)            # a new run reads the cache
    third = _read_all(fresh)
    assert fresh.decode_count == 0
    for a, b in zip(first, third):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[3][1], b[3][1])
    assert len(second) == len(first)
    # other settings -> other entries
    other = BagSequence(drive, SampleConfig(size=(32, 24)), cache=cache)
    assert other[0].image.shape == (24, 32, 3) and other.decode_count > 0


def test_changed_bag_invalidates_cache(tmp_path):
    bag = make_drive_bag(tmp_path / "b", "sqlite3", n=4)
    cache = FrameCache(tmp_path / "cache")
    seq = BagSequence(bag, SampleConfig(), cache=cache)
    _read_all(seq)
    old_dirs = {p.name for p in (tmp_path / "cache").iterdir()}
    again = BagSequence(bag, SampleConfig(), cache=cache)
    _read_all(again)
    assert again.decode_count == 0
    # touch: new mtime -> decoded again, stale entries removed
    db = next(bag.glob("*.db3"))
    st = db.stat()
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    touched = BagSequence(bag, SampleConfig(), cache=cache)
    _read_all(touched)
    assert touched.decode_count > 0
    new_dirs = {p.name for p in (tmp_path / "cache").iterdir()}
    assert new_dirs.isdisjoint(old_dirs) and len(new_dirs) == 1
    # rewritten with different content -> the new frames, not the cached ones
    import shutil

    shutil.rmtree(bag)
    make_drive_bag(bag, "sqlite3", n=4, dot=(20, 20))
    rewritten = BagSequence(bag, SampleConfig(), cache=cache)
    assert rewritten[0].image[20, 20].tolist() == [255, 255, 255]


def test_cache_writes_are_atomic_and_bad_entries_recomputed(drive, tmp_path, monkeypatch):
    cache = FrameCache(tmp_path / "cache")
    seq = BagSequence(drive, SampleConfig(), cache=cache)
    real_save = np.save

    def crash(fh, arr, allow_pickle=False):
        fh.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        seq[0]
    monkeypatch.setattr(np, "save", real_save)
    view_dir = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert [p.name for p in view_dir.iterdir()] == ["key.json"]   # nothing half-written
    s = seq[0]
    entry = view_dir / f"image_{s.index}.npy"
    assert entry.is_file()
    entry.write_bytes(entry.read_bytes()[:40])                     # damage an entry
    fresh = BagSequence(drive, SampleConfig(), cache=cache)
    np.testing.assert_array_equal(fresh[0].image, frame_image(1))
    assert fresh.decode_count == 1                                 # only that one redone


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    from depth_perception.data.cache import default_cache_dir

    monkeypatch.setenv("DEPTH_PERCEPTION_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DEPTH_PERCEPTION_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "depth_perception"
