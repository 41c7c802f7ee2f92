"""The one depth colouring (node's depth/colorized, TensorBoard images)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from depth_perception.colorize import colorize_depth, colour_table, depth_levels


def _ramp(colormap, level):
    """OpenCV's own colour for gray value ``level``, BGR."""
    return cv2.applyColorMap(np.array([[level]], np.uint8), getattr(cv2, colormap))[0, 0]


def test_levels_worked_by_hand():
    # 1/d linear between 1/80 and 1/0.5: t = 0.25 at 1/d = 1/80 + 0.25 * (2 - 1/80)
    d_quarter = 1.0 / (1 / 80 + 0.25 * (2 - 1 / 80))
    depth = np.array([[0.5, 80.0, d_quarter, 0.25],
                      [np.inf, np.nan, -np.inf, 200.0]], np.float32)
    levels = depth_levels(depth, 0.5, 80.0)
    # near limit 255, far limit 1, t=0.25 -> round(1 + 63.5) = 65; closer than near: 255
    np.testing.assert_array_equal(levels[0], [255, 1, 65, 255])
    # +inf (beyond range) and farther than max: far colour; NaN and -inf: 0 (black)
    np.testing.assert_array_equal(levels[1], [1, 0, 0, 1])
    linear = depth_levels(np.array([[0.5, 80.0, 60.125]], np.float32), 0.5, 80.0,
                          inverse=False)
    # linear in depth: t = (80 - 60.125) / 79.5 = 0.25 -> 65
    np.testing.assert_array_equal(linear[0], [255, 1, 65])


def test_colours_come_from_the_opencv_colormap_and_invalid_is_black():
    depth = np.array([[0.5, 80.0, np.inf, np.nan, -np.inf]], np.float32)
    bgr = colorize_depth(depth, 0.5, 80.0, "turbo")
    assert bgr.shape == (1, 5, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[0, 0], _ramp("COLORMAP_TURBO", 255))   # near
    np.testing.assert_array_equal(bgr[0, 1], _ramp("COLORMAP_TURBO", 0))     # far
    np.testing.assert_array_equal(bgr[0, 2], bgr[0, 1])                      # sky = far
    assert not bgr[0, 3:].any()
    rgb = colorize_depth(depth, 0.5, 80.0, "turbo", bgr=False)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    table = colour_table("magma")
    assert table.shape == (256, 1, 3) and not table[0].any()


def test_near_is_bright_and_monotone_levels():
    depth = np.geomspace(0.5, 80.0, 50, dtype=np.float32)[None, :]
    levels = depth_levels(depth, 0.5, 80.0)[0].astype(int)
    assert levels[0] == 255 and levels[-1] == 1 and (np.diff(levels) <= 0).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown colormap 'rainbowish'"):
        colorize_depth(np.ones((2, 2), np.float32), 0.5, 80.0, "rainbowish")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        colorize_depth(np.ones((2, 2), np.float32), 80.0, 0.5)
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        colorize_depth(np.ones((2, 2, 1), np.float32), 0.5, 80.0)
