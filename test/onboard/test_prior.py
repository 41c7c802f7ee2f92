"""The image-blind prior and structure-pixel abs_rel: numbers worked by hand, then on bags
where the prior is known exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from depth_perception.metrics import (MetricAccumulator, compute_depth_metrics, depth_prior,
                                      structure_mask)


def test_depth_prior_is_the_per_pixel_median_with_row_fill():
    nan = np.nan
    maps = np.array([[[1.0, 10.0], [nan, 4.0]],
                     [[3.0, 30.0], [nan, 6.0]],
                     [[2.0, 90.0], [nan, 5.0]]])              # 90 m is out of range (80)
    prior = depth_prior(maps, min_depth=0.1, max_depth=80.0)
    # (0,0): median(1,2,3) = 2; (0,1): median(10,30) = 20 (90 invalid);
    # (1,0): never valid -> median of its row = the other pixel's median 5; (1,1): 5
    np.testing.assert_allclose(prior, [[2.0, 20.0], [5.0, 5.0]])
    with pytest.raises(ValueError, match="no valid reference pixel"):
        depth_prior(np.full((2, 2, 2), nan))


def test_structure_abs_rel_by_hand():
    gt = np.array([[10.0, 10.0], [20.0, 40.0]])
    prior = np.array([[10.5, 14.0], [20.0, 20.0]])             # rel. errors .05 .4 0 .5
    structure = structure_mask(prior, gt)
    np.testing.assert_array_equal(structure, [[False, True], [False, True]])
    pred = np.array([[11.0, 12.0], [20.0, 30.0]])              # rel. errors .1 .2 0 .25
    m = compute_depth_metrics(gt, pred, 0.1, 80.0, structure=structure)
    assert m["abs_rel"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.25) / 4)
    assert m["abs_rel_structure"] == pytest.approx((0.2 + 0.25) / 2)
    assert m["structure_fraction"] == pytest.approx(0.5)
    mp = compute_depth_metrics(gt, prior, 0.1, 80.0, structure=structure)
    assert mp["abs_rel_structure"] == pytest.approx((0.4 + 0.5) / 2)
    # an image with no structure pixel does not count in the structure mean
    acc = MetricAccumulator(0.1, 80.0)
    acc.update(gt, pred, structure=structure)
    acc.update(gt, pred, structure=np.zeros_like(structure))
    summary = acc.summary()["all"]
    assert summary["abs_rel_structure"] == pytest.approx(0.225)
    assert summary["abs_rel"] == pytest.approx(0.1375) and summary["n_images"] == 2


@pytest.fixture(scope="module")
def one_frame_bags(tmp_path_factory):
    """One-frame bags: the prior of the day-clear bag is its ground truth, exactly, and
    the night bag of the same seed shares that ground truth; another seed does not."""
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("prior")
    same = make_synthetic_bags(root / "a", frames=1, size=(96, 32),
                               conditions=("day-clear", "night"), seed=4)
    other = make_synthetic_bags(root / "b", frames=1, size=(96, 32),
                                conditions=("day-clear",), seed=9)
    return same, other[0]


def test_prior_from_a_bag_is_its_ground_truth(one_frame_bags):
    from depth_perception.data.bag import BagReader
    from depth_perception.evaluation.prior import prior_from_bags

    (day, _), _ = one_frame_bags
    prior = prior_from_bags([day], max_depth=80.0)
    with BagReader(day) as reader:
        gt = reader.gt_depth(0)
    valid = np.isfinite(gt) & (gt > 0.1) & (gt < 80.0)
    np.testing.assert_array_equal(prior[valid], gt[valid])
    assert np.isfinite(prior).all()                             # sky pixels filled


def test_evaluate_reports_the_prior_row_and_structure_columns(one_frame_bags, tmp_path):
    from depth_perception.evaluation.offline import EvaluateConfig, evaluate
    from depth_perception.evaluation.prior import PRIOR_NAME
    from depth_perception.evaluation.report import markdown_table, write_report

    (day, night), other = one_frame_bags
    # prior from the day bag, evaluated on the night bag of the same drive: exact
    config = EvaluateConfig(reference="/ground_truth/depth", prior="bags", prior_bags=(day,))
    results = evaluate([night, other], config, prediction_topic="/ground_truth/depth",
                       prediction_name="ground truth itself")
    frames = {f.bag: f.metrics for f in results.models[PRIOR_NAME].frames}
    exact = frames[night.parent.name] if night.parent.name in frames else None
    by_cond = {f.condition: f.metrics for f in results.models[PRIOR_NAME].frames}
    assert by_cond["night"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert by_cond["night"]["structure_fraction"] == 0.0
    assert np.isnan(by_cond["night"]["abs_rel_structure"])
    # on another scene the prior is wrong somewhere: structure pixels exist, and there
    # the prior's own error exceeds 20 % by definition; the perfect predictor scores 0
    day_other = by_cond["day-clear"]
    assert day_other["structure_fraction"] > 0.05
    assert day_other["abs_rel_structure"] > 0.2
    perfect = results.models["ground truth itself"].summary()["all"]
    assert perfect["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["abs_rel_structure"] == pytest.approx(0.0, abs=1e-6)
    table = markdown_table(results)
    assert PRIOR_NAME in table and "absRel struct." in table
    paths = write_report(results, tmp_path / "report", plots=False)
    saved = json.loads(paths["metrics"].read_text())["models"][PRIOR_NAME]["all"]
    assert saved["abs_rel_structure"] > 0.2
    assert exact is None or exact["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_leave_one_out_needs_two_bags(one_frame_bags):
    from depth_perception.evaluation.offline import EvaluateConfig, evaluate

    (day, _), _ = one_frame_bags
    with pytest.raises(ValueError, match="at least two bags"):
        evaluate([day], EvaluateConfig(reference="/ground_truth/depth", prior="loo"),
                 prediction_topic="/ground_truth/depth")
    with pytest.raises(ValueError, match="prior_bags"):
        EvaluateConfig(prior="bags")
