"""Camera intrinsics (depth_perception.camera): projection, resize, crop, refusals."""
import numpy as np
import pytest

from depth_perception.camera import Intrinsics


def test_intrinsics_project_backproject_round_trip():
    cam = Intrinsics(500.0, 400.0, 319.5, 239.5, 640, 480)
    depth = np.full((480, 640), 7.0, np.float32)
    pts = cam.backproject(depth)
    uv, z = cam.project(pts.reshape(-1, 3))
    u, v = np.meshgrid(np.arange(640), np.arange(480))
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-3)
    np.testing.assert_allclose(z, 7.0)
    # a point 1 m right, 0.5 m down at 10 m: u = 500*0.1 + 319.5, v = 400*0.05 + 239.5
    uv, _ = cam.project(np.array([[1.0, 0.5, 10.0]]))
    np.testing.assert_allclose(uv[0], [369.5, 259.5])


def test_resize_keeps_scene_points_on_same_pixels():
    cam = Intrinsics(500.0, 500.0, 300.0, 200.0, 640, 480)
    half = cam.resized(320, 240)
    point = np.array([[2.0, -1.0, 8.0]])
    (u, v), = cam.project(point)[0]
    (u2, v2), = half.project(point)[0]
    # pixel centres: u' = 0.5 * (u + 0.5) - 0.5
    assert u2 == pytest.approx(0.5 * (u + 0.5) - 0.5)
    assert v2 == pytest.approx(0.5 * (v + 0.5) - 0.5)
    crop = cam.cropped(100, 50, 400, 300)
    (u3, v3), = crop.project(point)[0]
    assert (u3, v3) == pytest.approx((u - 100, v - 50))
    with pytest.raises(ValueError, match="outside image"):
        cam.cropped(400, 0, 400, 300)


def test_zero_K_is_rejected_with_reason():
    with pytest.raises(ValueError, match="CameraInfo K all zero"):
        Intrinsics.from_matrix(np.zeros(9), 640, 480)
