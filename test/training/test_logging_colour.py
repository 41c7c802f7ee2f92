"""TensorBoard depth images use the package's one colouring."""
from __future__ import annotations

import numpy as np

from depth_perception.colorize import colorize_depth as onboard_colorize
from depth_perception_training.train.logging import colorize_depth


def test_tensorboard_colouring_is_the_onboard_one_over_its_range():
    depth = np.random.default_rng(0).uniform(0.5, 80.0, (6, 9)).astype(np.float32)
    depth[0, 0] = np.nan
    rgb = colorize_depth(depth, vmin=1 / 80.0, vmax=1 / 0.5, cmap="turbo")   # disparity range
    np.testing.assert_array_equal(rgb, onboard_colorize(depth, 0.5, 80.0, "turbo", bgr=False))
    assert not rgb[0, 0].any()
    # default range: 2nd/98th percentiles of disparity -> the nearest pixels saturate bright
    auto = colorize_depth(depth, cmap="magma")
    nearest = np.unravel_index(np.nanargmin(depth), depth.shape)
    np.testing.assert_array_equal(auto[nearest], onboard_colorize(
        np.array([[0.5]], np.float32), 0.5, 80.0, "magma", bgr=False)[0, 0])
    assert not colorize_depth(np.full((3, 3), np.nan, np.float32)).any()
