"""Evaluation results and reports: numbers worked by hand, files written and non-trivial."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from depth_perception.evaluation.report import EvaluationResults, markdown_table, write_report


def _gt(h=8, w=12):
    """Left half 3 m, right half 12 m, top row NaN (no reference)."""
    gt = np.full((h, w), 3.0, np.float32)
    gt[:, w // 2:] = 12.0
    gt[0] = np.nan
    return gt


def _two_model_results(**kw):
    res = EvaluationResults(min_depth=0.1, max_depth=80.0, **kw)
    gt = _gt()
    rgb = np.full(gt.shape + (3,), 90, np.uint8)
    for i in range(2):
        # model "good": 10 % too far everywhere -> abs_rel 0.1, a1 = 1
        res.add_frame("good", gt, gt * 1.1, "day-clear", "bag_day", i, 1000 + i, rgb)
        res.add_frame("good", gt, gt * 1.1, "night", "bag_night", i, 2000 + i, rgb)
        # model "bad": exact on day, twice too far at night -> abs_rel 1, a1 = 0
        res.add_frame("bad", gt, gt, "day-clear", "bag_day", i, 1000 + i, rgb)
        res.add_frame("bad", gt, gt * 2.0, "night", "bag_night", i, 2000 + i, rgb)
    return res


def test_summary_numbers_by_hand():
    d = _two_model_results().to_dict()
    good = d["models"]["good"]
    assert good["per_condition"]["day-clear"]["abs_rel"] == pytest.approx(0.1, abs=1e-6)
    assert good["per_condition"]["day-clear"]["a1"] == 1.0
    # rmse: half the valid pixels off by 0.3 m, half by 1.2 m -> sqrt((0.09 + 1.44) / 2)
    assert good["per_condition"]["night"]["rmse"] == pytest.approx(np.sqrt(1.53 / 2), rel=1e-5)
    assert good["per_condition"]["night"]["frames"] == 2
    assert good["all"]["frames"] == 4
    bad = d["models"]["bad"]
    assert bad["per_condition"]["day-clear"]["abs_rel"] == 0.0
    assert bad["per_condition"]["night"]["abs_rel"] == pytest.approx(1.0)
    assert bad["per_condition"]["night"]["a1"] == 0.0
    assert bad["all"]["abs_rel"] == pytest.approx(0.5)
    # the top level is the first model added
    assert d["primary_model"] == "good"
    assert d["per_condition"] == good["per_condition"]
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog", "log10"):
        assert key in d["per_condition"]["night"]


def test_error_vs_distance_bins_pixels_by_depth():
    res = EvaluationResults(bin_edges=(0, 5, 10, 20))
    gt = _gt()
    pred = gt.copy()
    pred[:, :6] *= 1.2       # near half (3 m): 20 % error; far half (12 m): exact
    res.add_frame("m", gt, pred, "rain")
    curve = res.to_dict()["models"]["m"]["error_vs_distance"]["rain"]
    assert curve["abs_rel"][0] == pytest.approx(0.2, rel=1e-5)
    assert curve["abs_rel"][1] is None                     # nothing between 5 and 10 m
    assert curve["abs_rel"][2] == pytest.approx(0.0, abs=1e-7)
    assert curve["pixels"] == [7 * 6, 0, 7 * 6]


def test_median_scaling_applies_to_bins_and_metrics():
    res = EvaluationResults(median_scaling=True)
    gt = _gt()
    res.add_frame("rel", gt, gt * 0.25, "night")
    d = res.to_dict()["models"]["rel"]
    assert d["per_condition"]["night"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert d["per_condition"]["night"]["scale_ratio"] == pytest.approx(4.0)
    assert max(v for v in d["error_vs_distance"]["night"]["abs_rel"] if v is not None) < 1e-6


def test_markdown_is_laid_out_like_ssd_table1():
    table = markdown_table(_two_model_results())
    header, rule, row_good, row_bad = table.splitlines()
    cells = [c.strip() for c in header.strip("|").split("|")]
    # groups: day-clear, night, all; each absRel sqRel RMSE RMSElog d1 d2 d3 frames
    assert cells[:3] == ["Method", "sup.", "day-clear absRel"]
    assert "night absRel" in cells and "all absRel" in cells
    assert cells.index("night absRel") - cells.index("day-clear absRel") == 8
    assert cells[3:10] == ["sqRel", "RMSE", "RMSElog", "δ1", "δ2", "δ3", "frames"]
    good = [c.strip() for c in row_good.strip("|").split("|")]
    bad = [c.strip() for c in row_bad.strip("|").split("|")]
    assert good[0] == "good" and bad[0] == "bad"
    # day-clear: bad is exact -> bold; night: good wins -> bold; d1 in percent
    assert bad[2] == "**0.0000**" and good[2] == "0.1000"
    night = cells.index("night absRel")
    assert good[night] == "**0.1000**" and bad[night] == "1.0000"
    assert good[night + 4] == "**100.00**" and bad[night + 4] == "0.00"
    scaled = EvaluationResults(median_scaling=True)
    scaled.add_frame("rel", _gt(), _gt(), "night")
    assert markdown_table(scaled).splitlines()[2].startswith("| rel | * |")


def test_write_report_files(tmp_path):
    paths = write_report(_two_model_results(), tmp_path / "rep", title="unit")
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(metrics["per_condition"]) == {"day-clear", "night"}
    assert metrics["per_condition"]["night"]["frames"] == 2
    assert set(metrics["models"]) == {"good", "bad"}
    with open(tmp_path / "rep" / "per_frame.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    assert {r["model"] for r in rows} == {"good", "bad"}
    night_bad = [r for r in rows if r["model"] == "bad" and r["condition"] == "night"]
    assert float(night_bad[0]["abs_rel"]) == pytest.approx(1.0)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "day-clear absRel" in md and "night absRel" in md
    assert "plots/abs_rel_per_condition.png" in md
    names = {p.name for p in paths["plots"]}
    assert names == {"abs_rel_per_condition.png", "error_vs_distance.png",
                     "samples_good.png", "samples_bad.png"}
    for p in paths["plots"]:
        assert p.stat().st_size > 5000, p
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparse_reference_sample_plot(tmp_path):
    res = EvaluationResults()
    gt = np.full((40, 60), np.nan, np.float32)
    gt[20:, ::7] = 9.0                                       # LiDAR-like sparse rows
    res.add_frame("m", gt, np.full((40, 60), 10.0, np.float32), "night",
                  image=np.zeros((40, 60, 3), np.uint8))
    paths = write_report(res, tmp_path)
    assert all(p.stat().st_size > 3000 for p in paths["plots"])


def test_bad_input_is_refused():
    res = EvaluationResults()
    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        res.add_frame("m", np.full((4, 4), np.nan), np.ones((4, 4)), "night")
    with pytest.raises(ValueError, match="nothing to report"):
        res.to_dict()
    with pytest.raises(ValueError, match="min_depth"):
        EvaluationResults(min_depth=5, max_depth=1)


def test_absorb_merges_models_and_refuses_other_protocol():
    a = _two_model_results()
    b = EvaluationResults()
    b.add_frame("good", _gt(), _gt(), "night")
    a.absorb(b, rename=lambda n: f"{n} (online)")
    assert list(a.models) == ["good", "bad", "good (online)"]
    assert a.models["good (online)"].frames[0].model == "good (online)"
    with pytest.raises(ValueError, match="different protocols"):
        a.absorb(EvaluationResults(max_depth=50))


def test_rep117_infinities_count_as_range_limits():
    res = EvaluationResults(min_depth=0.1, max_depth=20.0)
    gt = np.array([[20.0 - 1e-3, 0.5]], np.float32)
    pred = np.array([[np.inf, -np.inf]], np.float32)
    m = res.add_frame("m", gt, pred, "night")
    # +inf -> 20 m against 19.999 m; -inf -> 0.1 m against 0.5 m (abs rel 0.8)
    assert m["abs_rel"] == pytest.approx((1e-3 / 19.999 + 0.8) / 2, rel=1e-4)
    # a NaN prediction is not scored: it lowers the coverage
    m = res.add_frame("m", gt, np.array([[np.nan, 0.5]], np.float32), "night")
    assert m["n_valid"] == 1 and m["coverage"] == 0.5 and m["abs_rel"] == 0.0
    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        res.add_frame("m", gt, np.full((1, 2), np.nan, np.float32), "night")


def test_absorb_append_adds_frames_of_the_same_model():
    a = EvaluationResults()
    a.add_frame("m", _gt(), _gt() * 1.1, "day-clear")
    b = EvaluationResults()
    b.add_frame("m", _gt(), _gt() * 2.0, "night")
    b.add_frame("m", _gt(), _gt() * 2.0, "night")
    a.absorb(b, append=True)
    d = a.to_dict()["models"]["m"]
    assert d["all"]["frames"] == 3
    assert d["all"]["abs_rel"] == pytest.approx((0.1 + 1.0 + 1.0) / 3, rel=1e-5)
    assert set(d["error_vs_distance"]) == {"day-clear", "night"}
