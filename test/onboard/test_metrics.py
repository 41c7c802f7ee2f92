"""Depth metrics against numbers worked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from depth_perception.metrics import (MetricAccumulator, compute_depth_metrics, fit_affine,
                                      format_metrics)

GT = np.array([[1.0, 2.0], [4.0, np.nan]])
PRED = np.array([[2.0, 2.0], [2.0, 5.0]])


def test_hand_worked_numbers():
    # valid gt = 1, 2, 4 (NaN dropped); pred there = 2, 2, 2
    m = compute_depth_metrics(GT, PRED)
    ln2 = math.log(2.0)
    assert m["n_valid"] == 3
    assert m["abs_rel"] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)          # 0.5
    assert m["sq_rel"] == pytest.approx((1 / 1 + 0 + 4 / 4) / 3)           # 2/3
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert m["rmse_log"] == pytest.approx(ln2 * math.sqrt(2 / 3))
    # ratios max(g/p, p/g) = 2, 1, 2: only the middle pixel passes every threshold
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # d = ln p - ln g = ln2, 0, -ln2: mean 0, so silog = 100 * rms(d)
    assert m["silog"] == pytest.approx(100 * ln2 * math.sqrt(2 / 3))
    assert m["log10"] == pytest.approx(2 / 3 * math.log10(2))
    assert m["scale_ratio"] == pytest.approx(1.0)                           # medians 2 / 2


def test_errors_are_relative_to_gt_not_pred():
    # a swap of gt and pred must change abs_rel: catches a g/p slip
    gt = np.full((2, 2), 2.0)
    pred = np.full((2, 2), 4.0)
    assert compute_depth_metrics(gt, pred)["abs_rel"] == pytest.approx(1.0)
    assert compute_depth_metrics(pred, gt)["abs_rel"] == pytest.approx(0.5)


def test_range_cap_and_prediction_clamp():
    gt = np.array([[0.05, 10.0], [50.0, 90.0]])     # 0.05 < min 0.1, 90 > cap 80
    pred = np.array([[1.0, 10.0], [100.0, 1.0]])    # 100 is clamped to 80
    m = compute_depth_metrics(gt, pred, min_depth=0.1, max_depth=80.0)
    assert m["n_valid"] == 2
    assert m["abs_rel"] == pytest.approx((0 + 30 / 50) / 2)


def test_median_scaling_makes_twice_gt_perfect():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 35, size=(24, 32))   # 2x stays under the 80 m clamp
    gt[0, :5] = np.nan
    pred = 2.0 * gt
    raw = compute_depth_metrics(gt, pred)
    assert raw["abs_rel"] == pytest.approx(1.0)
    assert raw["scale_ratio"] == pytest.approx(0.5)
    m = compute_depth_metrics(gt, pred, median_scaling=True)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert m["a1"] == 1.0
    assert m["scale_ratio"] == pytest.approx(0.5)   # ratio reported is the one applied


def test_affine_alignment_recovers_distorted_disparity():
    rng = np.random.default_rng(1)
    gt = rng.uniform(2, 70, size=(20, 30))
    relative_disp = 3.0 * (1.0 / gt) + 0.25           # affine-invariant disparity
    m = compute_depth_metrics(gt, relative_disp, align="affine_disparity")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert m["a1"] == 1.0
    # read as depth it is badly wrong
    assert compute_depth_metrics(gt, 1.0 / relative_disp)["abs_rel"] > 0.5


def test_affine_alignment_in_depth():
    rng = np.random.default_rng(2)
    gt = rng.uniform(1, 50, size=(10, 10))
    pred = 0.5 * gt - 0.3 + 1.0     # depth up to an affine map
    m = compute_depth_metrics(gt, pred, align="affine")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    s, t = fit_affine(pred.ravel(), gt.ravel())
    assert (s, t) == pytest.approx((2.0, -1.4))


def test_no_valid_pixel_is_a_clear_error():
    gt = np.full((4, 4), np.nan)
    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        compute_depth_metrics(gt, np.ones((4, 4)))
    with pytest.raises(ValueError, match="no valid"):
        compute_depth_metrics(np.full((4, 4), 100.0), np.ones((4, 4)), max_depth=80)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="same"):
        compute_depth_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="align"):
        compute_depth_metrics(np.ones((4, 4)), np.ones((4, 4)), align="scale")
    pred = np.ones((4, 4))
    pred[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        compute_depth_metrics(np.ones((4, 4)) * 2, pred)
    with pytest.raises(ValueError, match="constant"):
        compute_depth_metrics(np.arange(1, 17.0).reshape(4, 4), np.ones((4, 4)), align="affine")


def test_accumulator_averages_per_image_and_per_condition():
    acc = MetricAccumulator(max_depth=80)
    # image 1 (day): one pixel, abs_rel 1.0; image 2 (night): 3 pixels, abs_rel 0
    acc.update(np.array([[2.0]]), np.array([[4.0]]), condition="day-clear")
    acc.update(np.full((1, 3), 5.0), np.full((1, 3), 5.0), condition="night")
    s = acc.summary()
    # per-image mean (1 + 0) / 2, not the pixel-pooled (1 + 0 + 0 + 0) / 4
    assert s["all"]["abs_rel"] == pytest.approx(0.5)
    assert s["all"]["n_images"] == 2 and s["all"]["n_valid"] == 4
    assert s["day-clear"]["abs_rel"] == pytest.approx(1.0)
    assert s["night"]["abs_rel"] == pytest.approx(0.0)
    assert acc.count == 2
    assert "night" in format_metrics(s)
    acc.reset()
    assert acc.count == 0 and acc.summary() == {}


def test_range_breakdown_worked_by_hand():
    from depth_perception.metrics import range_breakdown

    gt1, p1 = np.array([[2.0, 4.0], [12.0, 50.0]]), np.array([[4.0, 4.0], [6.0, np.nan]])
    gt2, p2 = np.array([[np.nan, 90.0, 5.0]]), np.array([[1.0, 1.0, 5.5]])
    bins = range_breakdown([(gt1, p1), (gt2, p2)])
    assert [(b["lo"], b["hi"]) for b in bins] == [(0, 5), (5, 10), (10, 20), (20, 40), (40, 80)]
    # valid: (2, 4) ratio 2, (4, 4) 1, (5, 5.5) 1.1 (5 m opens the second bin), (12, 6) 0.5;
    # 50 m has no prediction, 90 m is past the last edge, NaN has no reference
    assert [b["share"] for b in bins[:3]] == pytest.approx([0.5, 0.25, 0.25])
    assert [b["median_ratio"] for b in bins[:3]] == pytest.approx([1.5, 1.1, 0.5])
    assert [b["abs_rel"] for b in bins[:3]] == pytest.approx([0.5, 0.1, 0.5])
    assert all(math.isnan(b["median_ratio"]) and b["share"] == 0 for b in bins[3:])
    with pytest.raises(ValueError, match="increase"):
        range_breakdown([], edges=(0, 10, 5))
    with pytest.raises(ValueError, match="differ"):
        range_breakdown([(gt1, p2)])
