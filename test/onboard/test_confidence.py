"""Per-pixel confidence: the model's log-variance output (confidence.py, the estimator)
and the cloud filter on it (cloud.py)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.cloud import CloudSettings, costmap_cloud, filter_depth
from depth_perception.confidence import from_log_variance, uncertainty_output
from depth_perception.metadata import ModelMetadata

META = ModelMetadata(output_kind="metric_depth", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     min_depth=0.05, max_depth=500.0)
K = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)


def test_confidence_from_log_variance_by_hand():
    # sigma = 0.1 (10 % in log-depth): 1 - exp(-sqrt(2) ln(1.1) / 0.1) = 1 - exp(-1.34789)
    s = np.array([np.log(0.1 ** 2), np.log(1.0), -60.0, 60.0, np.nan], np.float32)
    c = from_log_variance(s)
    assert c.dtype == np.float32
    assert c[0] == pytest.approx(1 - math.exp(-math.sqrt(2) * math.log(1.1) / 0.1), abs=1e-6)
    assert c[0] == pytest.approx(0.74021, abs=1e-5)
    assert c[1] == pytest.approx(0.12610, abs=1e-5)             # sigma = 1
    assert c[2] == 1.0 and c[3] == pytest.approx(0.0, abs=1e-6) and np.isnan(c[4])
    assert np.all(np.diff(from_log_variance(np.linspace(-8, 4, 50))) < 0)   # monotonic


def test_uncertainty_output_is_found_by_name():
    assert uncertainty_output({"depth": 0, "log_variance": 0}, "depth") == "log_variance"
    assert uncertainty_output({"depth": 0, "pred_logvar": 0}, "depth") == "pred_logvar"
    assert uncertainty_output({"depth": 0, "features": 0}, "depth") is None
    with pytest.raises(ValueError, match="several uncertainty outputs"):
        uncertainty_output({"depth": 0, "log_variance": 0, "uncertainty": 0}, "depth")


def test_estimator_reads_the_second_output_as_confidence():
    from support.models_fixtures import FunctionBackend

    from depth_perception.runtime.estimator import DepthEstimator

    def depth(x):
        return np.full((1, 1, *x.shape[2:]), 12.0, np.float32)

    def log_variance(x):                  # sigma 0.1 on the left half, 1.0 on the right
        s = np.zeros((1, 1, *x.shape[2:]), np.float32)
        s[..., : x.shape[3] // 2] = np.log(0.01)
        return s

    rgb = np.zeros((48, 64, 3), np.uint8)
    plain = DepthEstimator(FunctionBackend(depth, META), META).estimate(rgb, K)
    assert plain.confidence is None and not plain.has_confidence
    est = DepthEstimator(FunctionBackend(depth, META, extra_outputs={"log_variance":
                                                                     log_variance}), META)
    assert est.uncertainty_output == "log_variance"
    result = est.estimate(rgb, K)
    # nothing is computed until the confidence is asked for (the node: a subscriber)
    assert result.has_confidence and not isinstance(result._confidence, np.ndarray)
    assert result.confidence.shape == (48, 64) and result.confidence.dtype == np.float32
    assert result.confidence is result.confidence                  # computed once
    assert result.confidence[:, :28] == pytest.approx(0.74020, abs=1e-4)
    assert result.confidence[:, 36:] == pytest.approx(0.12610, abs=1e-4)
    np.testing.assert_array_equal(result.depth, plain.depth)


def test_cloud_drops_points_under_the_confidence_threshold():
    depth = np.full((48, 64), 10.0, np.float32)
    conf = np.full((48, 64), 0.9, np.float32)
    conf[:, :16] = 0.2
    conf[0, 40] = np.nan
    z = filter_depth(depth, K, CloudSettings(min_confidence=0.5), conf)
    assert np.isnan(z[:, :16]).all() and np.isnan(z[0, 40]) and np.isfinite(z[:, 16:40]).all()
    assert np.isfinite(z).sum() == 48 * 48 - 1
    off = filter_depth(depth, K, CloudSettings(), conf)          # 0: no filter
    assert np.isfinite(off).all()
    assert np.isfinite(filter_depth(depth, K, CloudSettings(min_confidence=0.5))).all()
    header = SimpleNamespace(frame_id="cam", stamp=SimpleNamespace(sec=0, nanosec=0))
    cloud = costmap_cloud(depth, K, header,
                          CloudSettings(min_confidence=0.5, organized=False), confidence=conf)
    assert cloud.width * cloud.height == 48 * 48 - 1
    with pytest.raises(ValueError, match="min_confidence"):
        CloudSettings(min_confidence=1.5)
    with pytest.raises(ValueError, match="confidence of shape"):
        filter_depth(depth, K, CloudSettings(min_confidence=0.5), conf[:10])
