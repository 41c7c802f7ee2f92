"""Precomputed pixel rays (cached per camera geometry) and the reused cloud buffers."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception import buffers
from depth_perception import conversions as conv
from depth_perception.camera import Intrinsics, pixel_rays

# non-square pixels, off-centre principal point, W != H: a transposed or swapped-axis
# cache cannot pass
K_A = Intrinsics(fx=50.0, fy=80.0, cx=3.5, cy=1.25, width=7, height=5)


def test_rays_are_per_column_x_and_per_row_y_in_original_pixels():
    for stride in (1, 2, 3):
        rays = pixel_rays(K_A, stride)
        h, w = -(-5 // stride), -(-7 // stride)
        assert rays.x_per_z.shape == rays.y_per_z.shape == rays.zeros.shape == (h, w)
        for i in range(h):
            for j in range(w):
                u, v = j * stride, i * stride
                assert rays.x_per_z[i, j] == pytest.approx((u - 3.5) / 50.0, abs=1e-7)
                assert rays.y_per_z[i, j] == pytest.approx((v - 1.25) / 80.0, abs=1e-7)
        assert not rays.zeros.any()
    # worked by hand: pixel (u=6, v=4) at stride 2 is element [2, 3]
    rays = pixel_rays(K_A, 2)
    assert rays.x_per_z[2, 3] == pytest.approx(0.05) and rays.y_per_z[2, 3] == pytest.approx(
        0.034375)


def test_rays_cache_hits_and_invalidates_on_k_size_and_stride():
    rays = pixel_rays(K_A, 1)
    assert pixel_rays(Intrinsics(50.0, 80.0, 3.5, 1.25, 7, 5), 1) is rays   # equal geometry
    for other, stride in ((Intrinsics(51.0, 80.0, 3.5, 1.25, 7, 5), 1),    # fx
                          (Intrinsics(50.0, 80.0, 3.5, 2.25, 7, 5), 1),    # cy
                          (Intrinsics(50.0, 80.0, 3.5, 1.25, 9, 5), 1),    # size
                          (K_A, 2)):                                        # stride
        changed = pixel_rays(other, stride)
        assert changed is not rays
        assert (changed.x_per_z.shape != rays.x_per_z.shape
                or not (np.array_equal(changed.x_per_z, rays.x_per_z)
                        and np.array_equal(changed.y_per_z, rays.y_per_z)))
    assert not rays.x_per_z.flags.writeable and not rays.y_per_z.flags.writeable
    with pytest.raises(ValueError, match="stride"):
        pixel_rays(K_A, 0)


def _depth(shape, seed):
    d = np.random.default_rng(seed).uniform(1.0, 40.0, shape).astype(np.float32)
    d[0, :2] = np.inf
    d[-1, -1] = np.nan
    d[1, 0] = -np.inf
    return d


def test_cloud_follows_a_change_of_k_and_size_between_frames():
    """Clouds in a row with different K (same size) and a different size each equal the
    back-projection through their own K: the ray cache never serves stale geometry."""
    geometries = [K_A, Intrinsics(30.0, 20.0, 5.0, 0.5, 7, 5), K_A,
                  Intrinsics(40.0, 40.0, 4.0, 2.0, 9, 6)]
    for n, K in enumerate(geometries):
        depth = _depth((K.height, K.width), n)
        pts = conv.cloud_to_numpy(conv.depth_to_cloud(depth, K, None)).reshape(
            K.height, K.width, 3)
        expected = K.backproject(depth)
        finite = np.isfinite(depth)
        np.testing.assert_allclose(pts[finite], expected[finite], rtol=1e-6)
        assert np.isnan(pts[~finite]).all()


def _address(msg) -> int:
    return msg.data.buffer_info()[0]


def test_held_cloud_is_never_overwritten_and_dropped_buffers_are_reused():
    buffers.clear()
    K = Intrinsics(200.0, 210.0, 63.5, 47.0, 128, 96)
    d1, d2 = _depth((96, 128), 1), _depth((96, 128), 2)
    rgb = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    first = conv.depth_to_cloud(d1, K, None, rgb=rgb)         # rgb in the 4th slot
    snapshot = bytes(first.data)
    second = conv.depth_to_cloud(d2, K, None)
    assert _address(second) != _address(first)                 # first still held
    assert bytes(first.data) == snapshot
    address = _address(first)
    del first                                                  # published and dropped
    third = conv.depth_to_cloud(d2, K, None)
    assert _address(third) == address                          # its buffer is reused
    raw = np.frombuffer(third.data, dtype="<f4").reshape(96, 128, 4)
    assert not raw[..., 3].any()                               # stale rgb overwritten
    np.testing.assert_array_equal(raw[..., :3], np.frombuffer(second.data, "<f4")
                                  .reshape(96, 128, 4)[..., :3])
    pts = conv.cloud_to_numpy(third).reshape(96, 128, 3)
    finite = np.isfinite(d2)
    np.testing.assert_allclose(pts[finite], K.backproject(d2)[finite], rtol=1e-6)
