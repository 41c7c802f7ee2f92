"""Costmap-ready clouds (depth_perception.cloud): flying pixels, caps, target frame and
voxels, on depth images whose points are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from depth_perception import cloud as dc
from depth_perception import conversions as conv
from depth_perception.camera import Intrinsics

W, H = 40, 20
K = Intrinsics(fx=50.0, fy=50.0, cx=19.5, cy=9.5, width=W, height=H)
#: camera optical frame in base_link (REP 103): z_opt -> x_base, x_opt -> -y_base,
#: y_opt -> -z_base; the camera 0.5 m ahead of base_link and 1.2 m above it
T_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.5],
                           [-1.0, 0.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0, 1.2],
                           [0.0, 0.0, 0.0, 1.0]])


def points(msg) -> np.ndarray:
    """Cloud -> [N,3] of its finite points."""
    xyz = conv.cloud_to_numpy(msg)
    return xyz[np.isfinite(xyz).all(axis=1)]


def step_depth(blend: tuple[float, ...]) -> np.ndarray:
    """Columns 0..19 at 2 m, then the blended columns ``blend``, then 5 m to the edge."""
    row = [2.0] * 20 + list(blend)
    row += [5.0] * (W - len(row))
    return np.tile(np.array(row, np.float32), (H, 1))


@pytest.mark.parametrize("blend, background_kept", [
    ((3.5,), 18),          # one blended pixel: it and the first 5 m column go -> 40-22
    ((3.0, 4.0), 17),      # a two-pixel blend: both and the first 5 m column go -> 40-23
])
def test_depth_step_leaves_no_point_between_the_surfaces(blend, background_kept):
    depth = step_depth(blend)
    before = depth.copy()
    # without the filter the blended pixels are points between the two surfaces
    raw = points(dc.costmap_cloud(depth, K, None, dc.CloudSettings()))
    assert np.sum((raw[:, 2] > 2.01) & (raw[:, 2] < 4.99)) == H * len(blend)

    pts = points(dc.costmap_cloud(depth, K, None, dc.CloudSettings(flying_jump=0.1)))
    z = pts[:, 2]
    assert not np.any((z > 2.0 + 1e-4) & (z < 5.0 - 1e-4)), "a point between the surfaces"
    # the foreground keeps every column (its edge is the obstacle's true boundary); the
    # background loses only the column next to the blend
    assert np.sum(np.isclose(z, 2.0)) == 20 * H
    assert np.sum(np.isclose(z, 5.0)) == background_kept * H
    # the foreground's edge column u = 19 is still there, at x = (19 - 19.5) * 2 / 50
    assert np.sum(np.isclose(pts[:, 0], -0.02, atol=1e-6) & np.isclose(z, 2.0)) == H
    np.testing.assert_array_equal(depth, before)        # the depth image is not touched


def test_flying_pixel_filter_keeps_a_smooth_slanted_surface_and_a_thin_pole():
    # a wall slanted away: z grows 1 % per column (under the 10 % jump): all kept
    wall = np.tile((3.0 * 1.01 ** np.arange(W)).astype(np.float32), (H, 1))
    assert not dc.flying_pixels(wall, 0.1).any()
    # a one-pixel-wide pole at 2 m in front of a 6 m wall: the pole stays, and the wall
    # columns on both sides of it go (each is farther than its pole neighbour)
    scene = np.full((H, W), 6.0, np.float32)
    scene[:, 10] = 2.0
    flying = dc.flying_pixels(scene, 0.1)
    assert not flying[:, 10].any()
    assert flying[:, 9].all() and flying[:, 11].all() and flying.sum() == 2 * H
    # unusable neighbours (NaN, +inf sky, -inf too close) never cause a drop
    holes = np.full((H, W), 4.0, np.float32)
    holes[5, 5], holes[6, 6], holes[7, 7] = np.nan, np.inf, -np.inf
    assert not dc.flying_pixels(holes, 0.1).any()


def test_range_cap_is_euclidean_and_removes_points():
    depth = np.full((H, W), 8.0, np.float32)
    settings = dc.CloudSettings(max_range=8.5)
    kept = dc.filter_depth(depth, K, settings)
    # principal ray: range 8 m <= 8.5 -> kept. Ray with x/z = 0.5 (u = cx + 25 is not a
    # pixel: take u = 39, x/z = 0.39, y/z = 0 -> +-0.01 rows): range 8 * sqrt(1 + 0.39^2)
    # = 8.587 m > 8.5 although z = 8 < 8.5 -> dropped
    assert math.isfinite(kept[9, 19]) and math.isfinite(kept[10, 20])
    assert math.isnan(kept[9, 39]) and 8.0 * math.hypot(1.0, 19.5 / 50.0) > 8.5
    # by hand: kept iff (u-cx)^2 + (v-cy)^2 <= f^2 ((8.5/8)^2 - 1) = 322.27 (r <= 17.95 px)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    assert np.isfinite(kept).sum() == np.sum((u - 19.5) ** 2 + (v - 9.5) ** 2 <= 322.265625)
    pts = points(dc.costmap_cloud(depth, K, None, settings))
    assert np.linalg.norm(pts, axis=1).max() <= 8.5 + 1e-5
    assert len(pts) == np.isfinite(kept).sum()


def test_sky_cap_gives_sky_no_points():
    depth = np.full((H, W), 5.0, np.float32)
    depth[:6] = 79.9                         # a model's saturated sky (max_depth 80)
    depth[6, :10] = np.inf                   # REP 117 beyond range
    depth[6, 10:20] = np.nan
    settings = dc.CloudSettings(sky_depth=0.95 * 80.0)
    pts = points(dc.costmap_cloud(depth, K, None, settings))
    assert len(pts) == (H - 7) * W + 20      # rows 7.. and row 6 columns 20..39
    assert pts[:, 2].max() == pytest.approx(5.0)
    # organized: same H x W grid, NaN where sky
    org = conv.cloud_to_numpy(dc.costmap_cloud(depth, K, None, settings)).reshape(H, W, 3)
    assert np.isnan(org[:7, :20]).all() and np.isfinite(org[7:]).all()
    # without the cap the saturated sky is a wall of points at 79.9 m
    assert np.sum(points(dc.costmap_cloud(depth, K, None, dc.CloudSettings()))[:, 2] > 79) \
        == 6 * W


def test_sky_fraction_one_keeps_a_pixel_exactly_at_max_depth():
    """point_sky_fraction's text: '1 = only depth beyond max_depth (+inf)': a pixel at
    exactly max_depth (the estimator marks only > max_depth as +inf) keeps its point."""
    from depth_perception.ros.params import NodeSettings

    depth = np.full((H, W), 5.0, np.float32)
    depth[0, :3] = 80.0                      # exactly max_depth: kept
    depth[0, 3:5] = np.inf                   # beyond: no point
    settings = NodeSettings(point_sky_fraction=1.0, point_flying_jump=0.0).cloud_settings(80.0)
    assert settings.sky_depth == math.inf
    pts = points(dc.costmap_cloud(depth, K, None, settings))
    assert len(pts) == H * W - 2 and np.sum(pts[:, 2] == 80.0) == 3
    # a fraction below one still caps at and beyond fraction x max_depth
    capped = NodeSettings(point_sky_fraction=0.95, point_flying_jump=0.0).cloud_settings(80.0)
    assert capped.sky_depth == pytest.approx(76.0)
    assert len(points(dc.costmap_cloud(depth, K, None, capped))) == H * W - 5


def test_cloud_in_base_link_is_the_camera_cloud_moved_by_the_transform():
    # hand numbers: principal pixel at 5 m is (0, 0, 5) optical -> (5.5, 0, 1.2) base
    np.testing.assert_allclose(dc.transform_points([[0, 0, 5], [1, 0, 5], [0, 1.2, 5]],
                                                   T_BASE_OPTICAL),
                               [[5.5, 0, 1.2], [5.5, -1.0, 1.2], [5.5, 0, 0.0]], atol=1e-6)
    depth = np.tile(np.linspace(2.0, 3.0, W, dtype=np.float32), (H, 1))
    depth[:3] = np.nan
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    settings = dc.CloudSettings(stride=2, organized=False)
    camera = dc.costmap_cloud(depth, K, None, settings, rgb=rgb)
    base = dc.costmap_cloud(depth, K, None, settings, rgb=rgb,
                            target=("base_link", T_BASE_OPTICAL))
    assert base.header.frame_id == "base_link" and base.height == 1 and base.is_dense
    cam_xyz = conv.cloud_to_numpy(camera)
    base_xyz = conv.cloud_to_numpy(base)
    assert len(cam_xyz) == len(base_xyz) == 8 * 20     # rows 4, 6 .. 18 (0-2 are NaN)
    want = cam_xyz @ T_BASE_OPTICAL[:3, :3].T + T_BASE_OPTICAL[:3, 3]
    np.testing.assert_allclose(base_xyz, want, atol=1e-5)
    # base_link axes: forward x = optical z, left y = -optical x, up z = 1.2 - optical y
    np.testing.assert_allclose(base_xyz[:, 0], cam_xyz[:, 2] + 0.5, atol=1e-6)
    np.testing.assert_allclose(base_xyz[:, 1], -cam_xyz[:, 0], atol=1e-6)
    np.testing.assert_allclose(base_xyz[:, 2], 1.2 - cam_xyz[:, 1], atol=1e-6)
    np.testing.assert_array_equal(conv.cloud_to_numpy(base, ("rgb",)),
                                  conv.cloud_to_numpy(camera, ("rgb",)))


def test_voxel_grid_reduces_to_centroids():
    # a 4x4x4 lattice, 5 cm apart from 2.5 cm: each 10 cm voxel holds 2x2x2 points whose
    # centroid is the voxel centre (0.05 or 0.15 per axis); one lone point far away
    axis = 0.025 + 0.05 * np.arange(4)
    lattice = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    pts = np.vstack([lattice, [[1.23, -0.46, 0.71]]])
    centroids, first = dc.voxel_downsample(pts, 0.1)
    assert centroids.shape == (9, 3)
    want = [(x, y, z) for x in (0.05, 0.15) for y in (0.05, 0.15) for z in (0.05, 0.15)]
    np.testing.assert_allclose(centroids[:8], want, atol=1e-6)     # ascending voxel order
    assert tuple(centroids[8]) == pytest.approx((1.23, -0.46, 0.71))  # largest key: last
    assert set(first.tolist()) <= set(range(len(pts))) and first[8] == 64
    # negative coordinates floor to their own voxels: -0.01 and 0.01 are in two voxels
    assert len(dc.voxel_downsample(np.array([[-0.01, 0, 0], [0.01, 0, 0]]), 0.1)[0]) == 2
    # a flat wall 2 m ahead: x in [-0.78, 0.78], y in [-0.38, 0.38] -> 2 x 2 voxels of 1 m
    wall = dc.costmap_cloud(np.full((H, W), 2.0, np.float32), K, None,
                            dc.CloudSettings(voxel_size=1.0))
    xyz = conv.cloud_to_numpy(wall)
    assert wall.height == 1 and len(xyz) == 4
    np.testing.assert_allclose(np.sort(np.abs(xyz[:, 0])), [0.4, 0.4, 0.4, 0.4], atol=0.01)
    np.testing.assert_allclose(xyz[:, 2], 2.0, atol=1e-6)


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="stride"):
        dc.CloudSettings(stride=0)
    with pytest.raises(ValueError, match="max_range"):
        dc.CloudSettings(max_range=0.0)
    with pytest.raises(ValueError, match="flying_jump"):
        dc.CloudSettings(flying_jump=-0.1)
    with pytest.raises(ValueError, match="size"):
        dc.voxel_downsample(np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match="4,4"):
        dc.transform_points(np.zeros((2, 3)), np.eye(3))
    with pytest.raises(ValueError, match="does not match"):
        dc.filter_depth(np.ones((4, 4)), K, dc.CloudSettings())
