"""AUSE / AURG sparsification of a per-pixel confidence (evaluation/sparsification.py)
and `evaluate` reporting them for models with a confidence."""
from __future__ import annotations

import json

import numpy as np
import pytest

from depth_perception.evaluation.sparsification import curve, sparsification


def test_four_pixels_two_steps_by_hand():
    """abs_rel errors 0.4 0.3 0.2 0.1; two steps: all four (mean 0.25), then the two most
    confident, then 0 at x = 1. A perfect confidence keeps 0.2 and 0.1 (0.15): area
    0.5 (0.25 + 0.15) / 2 + 0.5 (0.15 + 0) / 2 = 0.1375 = the oracle's, AUSE 0, AURG
    0.25 - 0.1375 = 0.1125. The reversed one keeps 0.4 and 0.3 (0.35): area 0.2375,
    AUSE 0.1, AURG 0.0125."""
    g = np.full(4, 10.0)
    p = np.array([14.0, 13.0, 12.0, 11.0])
    good = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(curve(good, np.abs(g - p) / g, "abs_rel", 2), [0.25, 0.15, 0])
    v, curves = sparsification(g, p, good, intervals=2)
    assert v["ause_abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert v["aurg_abs_rel"] == pytest.approx(0.1125)
    np.testing.assert_allclose(curves["abs_rel"][1], [0.25, 0.15, 0.0])        # oracle
    v, _ = sparsification(g, p, good[::-1], intervals=2)
    assert v["ause_abs_rel"] == pytest.approx(0.1)
    assert v["aurg_abs_rel"] == pytest.approx(0.0125)
    # RMSE: sqrt of the mean squared error of what remains
    np.testing.assert_allclose(curve(good, (g - p) ** 2, "rmse", 2),
                               [np.sqrt(7.5), np.sqrt(2.5), 0.0])
    # outliers beyond 10 % (0.1 is not): three of four; of the 80 % most confident
    # (errors 0.3 0.2 0.1) two of three
    assert v["outliers_10"] == 0.75
    assert sparsification(g, p, good)[0]["outliers_10_kept80"] == pytest.approx(2 / 3)


def test_perfect_random_and_wrong_confidence():
    rng = np.random.default_rng(0)
    g = rng.uniform(2.0, 60.0, 20_000)
    p = g * np.exp(rng.normal(0.0, 0.2, g.size))
    abs_rel = np.abs(g - p) / g
    full = abs_rel.mean()
    # ordered as the errors: AUSE 0 for the metric it orders (abs_rel by relative
    # error, RMSE by absolute error)
    v, _ = sparsification(g, p, -abs_rel)
    assert v["ause_abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert v["aurg_abs_rel"] > 0.3 * full
    assert sparsification(g, p, -np.abs(g - p))[0]["ause_rmse"] == pytest.approx(0, abs=1e-9)
    # random: no better than chance; the curve's final 0 leaves 1/(2 x 50) of the metric
    v, _ = sparsification(g, p, rng.random(g.size))
    assert v["aurg_abs_rel"] == pytest.approx(0.01 * full, abs=0.02 * full)
    assert v["ause_abs_rel"] > 0.3 * full
    assert v["outliers_10_kept80"] == pytest.approx(v["outliers_10"], abs=0.02)
    # the wrong way round: worse than chance
    v, _ = sparsification(g, p, abs_rel)
    assert v["aurg_abs_rel"] < -0.3 * full
    assert v["outliers_10_kept80"] > v["outliers_10"]
    # no confidence (NaN): removed first; a constant confidence is random
    c = -abs_rel.copy()
    c[:100] = np.nan
    assert sparsification(g, p, c)[0]["aurg_abs_rel"] > 0.3 * full
    with pytest.raises(ValueError, match=r"three \[N\] arrays"):
        sparsification(g, p[:10], c)


def test_evaluate_reports_sparsification_for_models_with_confidence(tmp_path):
    """A stand-in model whose confidence knows where it added noise: the report has
    AUSE / AURG for it and for its fused stream (temporal agreement), the plot too."""
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.evaluation.offline import EvaluateConfig, evaluate, fused_name
    from depth_perception.evaluation.report import write_report
    from depth_perception.synth import make_synthetic_bags

    bag, = make_synthetic_bags(tmp_path / "bags", frames=4, size=(160, 48),
                               conditions=("day-clear",), seed=0)
    truth = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))
    rng = np.random.default_rng(0)
    frames = iter(range(len(truth)))

    class Result:
        def __init__(self, depth, confidence):
            self.depth, self.confidence = depth, confidence

    class NoisyWhereUnsure:
        def estimate(self, rgb, intrinsics, rectifier=None):
            gt = truth[next(frames)].gt_depth
            # 30 % of the pixels off by u ~ U(0, 0.5), with confidence 1 - u; the rest exact
            u = np.where(rng.random(gt.shape) < 0.3, rng.uniform(0, 0.5, gt.shape), 0.0)
            depth = (1 + u) * np.where(np.isfinite(gt), gt, np.inf)
            return Result(depth.astype(np.float32), (1 - u).astype(np.float32))

    config = EvaluateConfig(reference="/ground_truth/depth", temporal_fusion=True,
                            max_depth=1000.0)                   # no clamp of the errors
    res = evaluate([bag], config, estimators={"m": NoisyWhereUnsure()})
    write_report(res, tmp_path / "out")
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["models"]
    single = m["m"]["per_condition"]["day-clear"]
    assert single["ause_abs_rel"] == pytest.approx(0.0, abs=1e-6)   # it knows exactly
    assert single["aurg_abs_rel"] > 0.05 and single["aurg_rmse"] > 0
    assert single["outliers_10_kept80"] < 0.2 < single["outliers_10"]
    assert "ause_abs_rel" in m[fused_name("m")]["per_condition"]["day-clear"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Confidence: sparsification (AUSE / AURG)" in md and "| m | day-clear |" in md
    assert (tmp_path / "out" / "plots" / "sparsification.png").is_file()
    # the sample figure shows the confidence beside the depth: a fifth panel per row
    sample = res.models["m"].samples["day-clear"]
    assert sample.confidence.shape == sample.depth.shape
    widths = {name: _png_size(tmp_path / "out" / "plots" / f"samples_{name}.png")[0]
              for name in ("m", "m_fusion")}
    assert widths["m"] == widths["m_fusion"] == 5 * 350


def _png_size(path):
    """(width, height) of a PNG from its IHDR chunk."""
    import struct

    data = path.read_bytes()[16:24]
    return struct.unpack(">II", data)


def _poggi_aucs(gt, pred, uncert, intervals=50):
    """AUSE / AURG as the authors' evaluation computes them (mattpoggi/mono-uncertainty
    evaluate.py compute_aucs, written out here as the test's oracle): uncertainty
    percentiles in steps of 100/intervals, subsets with the most uncertain removed, the
    metric over what is left (0 once everything is removed), trapezoid areas over
    x = 0 .. 1; the oracle removes by the pixel's own error, random keeps the full-set
    value at every step. Returns {metric: (AUSE, AURG)} for abs_rel and rmse."""
    import numpy as np

    def metric(name, g, p):
        if name == "abs_rel":
            return float(np.mean(np.abs(g - p) / g))
        return float(np.sqrt(np.mean((g - p) ** 2)))

    per_pixel = {"abs_rel": np.abs(gt - pred) / gt, "rmse": (gt - pred) ** 2}
    quants = [100.0 / intervals * t for t in range(intervals)]
    x = [t / intervals for t in range(intervals + 1)]
    out = {}
    for name in ("abs_rel", "rmse"):
        def curve(score):                 # higher score = kept longer (more certain)
            ths = [np.percentile(score, q) for q in quants]
            return [metric(name, gt[score >= t], pred[score >= t]) for t in ths] + [0.0]
        sparse = curve(-uncert)
        oracle = curve(-per_pixel[name])
        full = metric(name, gt, pred)
        out[name] = (np.trapezoid(sparse, x=x) - np.trapezoid(oracle, x=x), full - np.trapezoid(sparse, x=x))
    return out


@pytest.mark.parametrize("case", ["noisy", "reversed", "ties"])
def test_matches_the_authors_protocol_step_by_step(case):
    """The cumulative-sum curves against the authors' percentile-and-mask procedure on
    5000 pixels: an informative confidence, a misleading one, and one with ties."""
    rng = np.random.default_rng(0)
    g = rng.uniform(1.0, 80.0, 5000)
    p = np.abs(g * (1 + rng.normal(0.0, 0.2, g.size))) + 0.1
    err = np.abs(g - p) / g
    c = {"noisy": -err + rng.normal(0.0, 0.1, g.size), "reversed": err,
         "ties": np.round(rng.uniform(0.0, 1.0, g.size), 1)}[case]
    reference = _poggi_aucs(g, p, -c)
    ours, _ = sparsification(g, p, c)
    for m in ("abs_rel", "rmse"):
        assert ours[f"ause_{m}"] == pytest.approx(reference[m][0], abs=1e-9)
        assert ours[f"aurg_{m}"] == pytest.approx(reference[m][1], abs=1e-9)
