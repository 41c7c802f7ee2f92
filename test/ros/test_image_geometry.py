"""Where image_geometry imports (a ROS 2 installation: it is not on PyPI, so this is
skipped on pip-only machines), its Python PinholeCameraModel agrees with
depth_perception.rectify, which stays the one implementation (node and ``evaluate``
must run the same code for equal scores; image_geometry's Python model also leaves
Tx unbinned, rectifies at the full, unbinned size with CV_32FC1 maps and has no
fisheye model, where the C++ one and this package follow binning and ROI): on a
stereo right camera without binning or ROI, the same fx, fy, cx, cy, Tx, Ty, the same
rectified image (within interpolation), and the node's cloud rays on its
``projectPixelTo3dRay``."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

image_geometry = pytest.importorskip("image_geometry")
pytest.importorskip("sensor_msgs")

from depth_perception import conversions  # noqa: E402
from depth_perception.rectify import Calibration, rectifier  # noqa: E402
from support.rostools import header  # noqa: E402

pytestmark = pytest.mark.ros

W, H = 320, 96
A = 0.01                                     # a small rectifying rotation about y
RIGHT = Calibration(
    W, H, "plumb_bob", (-0.3, 0.08, 0.001, -0.002, 0.0),
    (200.0, 0.0, 159.5, 0.0, 200.0, 47.5, 0.0, 0.0, 1.0),
    R=(math.cos(A), 0.0, math.sin(A), 0.0, 1.0, 0.0, -math.sin(A), 0.0, math.cos(A)),
    P=(180.0, 0.0, 150.0, -180.0 * 0.12, 0.0, 180.0, 45.0, 0.0, 0.0, 0.0, 1.0, 0.0))


def test_pinhole_camera_model_agrees_with_the_rectifier():
    model = image_geometry.PinholeCameraModel()
    model.fromCameraInfo(conversions.calibration_to_camera_info(RIGHT, header(1)))
    rect = rectifier(RIGHT)
    cam = rect.intrinsics
    assert (model.fx(), model.fy(), model.cx(), model.cy()) == pytest.approx(
        (cam.fx, cam.fy, cam.cx, cam.cy))
    assert (model.Tx(), model.Ty()) == pytest.approx(rect.tx_ty) == (-21.6, 0.0)
    # the same rectified image: its CV_32FC1 maps and INTER_CUBIC against our
    # CV_16SC2 maps (1/32 px) with the same interpolation, on slow waves
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    raw = np.clip(np.dstack([128 + 100 * np.sin(u / 13.0) * np.cos(v / 9.0),
                             128 + 90 * np.cos((u + 2 * v) / 17.0), 60 + 0.5 * u + v]),
                  0, 255).round().astype(np.uint8)
    theirs = np.zeros_like(raw)
    model.rectifyImage(raw, theirs)
    ours = rect.apply(raw, cv2.INTER_CUBIC)
    diff = np.abs(theirs[12:-12, 40:-40].astype(int) - ours[12:-12, 40:-40])
    assert diff.mean() < 0.5 and diff.max() <= 3
    # the cloud's point of pixel (u, v) lies on projectPixelTo3dRay((u, v)) (Tx unused)
    xyz = cam.backproject(np.full((H, W), 7.0, np.float32))
    for uv in ((0, 0), (W - 1, H // 2), (150, 45)):
        ray = np.asarray(model.projectPixelTo3dRay(uv))
        point = xyz[uv[1], uv[0]].astype(np.float64)
        np.testing.assert_allclose(point / np.linalg.norm(point), ray, atol=1e-6)
