"""What the SSD student is shown: the mixing probabilities (worked by hand) and
translations merged over several translated datasets (night and rain in two folders)."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from depth_perception_training.student_data import (DAY, StudentDataset, choose_condition,
                                                    condition_probabilities,
                                                    default_keep_probability)
from support.student_setup import SIZE

C2 = ["night", "rain"]


# -- probabilities, worked by hand -----------------------------------------------------------

@pytest.mark.parametrize("available, conditions, keep, expected", [
    # P = 2/3 (SSD as printed), both translations: 2/3, 1/6, 1/6
    (C2, C2, Fraction(2, 3), {DAY: Fraction(2, 3), "night": Fraction(1, 6),
                              "rain": Fraction(1, 6)}),
    # night missing: day 2/3 and rain 1/6 renormalised by 5/6 -> 4/5, 1/5 (not rain 1/3)
    (["rain"], C2, Fraction(2, 3), {DAY: Fraction(4, 5), "rain": Fraction(1, 5)}),
    # the other reading, P = 1/3: a third each; night alone -> 1/2, 1/2
    (C2, C2, Fraction(1, 3), {DAY: Fraction(1, 3), "night": Fraction(1, 3),
                              "rain": Fraction(1, 3)}),
    (["night"], C2, Fraction(1, 3), {DAY: Fraction(1, 2), "night": Fraction(1, 2)}),
    # three conditions, P = 3/4: 1/12 each; night alone -> (9/12, 1/12) / (10/12)
    (["night"], ["night", "rain", "snow"], Fraction(3, 4),
     {DAY: Fraction(9, 10), "night": Fraction(1, 10)}),
    # always translated (P = 0): the one translation a frame has; none -> the day frame
    (["rain"], C2, Fraction(0), {DAY: Fraction(0), "rain": Fraction(1)}),
    ([], C2, Fraction(0), {DAY: Fraction(1)}),
    ([], C2, Fraction(2, 3), {DAY: Fraction(1)}),
])
def test_condition_probabilities_worked_by_hand(available, conditions, keep, expected):
    probs = condition_probabilities(available, conditions, float(keep))
    assert set(probs) == set(expected)
    for c, p in expected.items():
        assert probs[c] == pytest.approx(float(p), abs=1e-12), c


def test_draws_follow_the_probabilities():
    assert default_keep_probability(2) == pytest.approx(2 / 3)          # P as printed
    rng = np.random.default_rng(0)
    n = 12000
    for available, expected in ((C2, {DAY: 2 / 3, "night": 1 / 6, "rain": 1 / 6}),
                                (["rain"], {DAY: 4 / 5, "night": 0.0, "rain": 1 / 5})):
        draws = [choose_condition(rng, available, C2, 2 / 3) for _ in range(n)]
        for c, p in expected.items():
            # 4 standard deviations of a binomial share at n = 12000: at most 0.0145
            assert draws.count(c) / n == pytest.approx(p, abs=0.015), (available, c)


# -- two folders ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """A day-clear drive, its night translations in one folder and its rain translations
    in another, the last 3 rain records marked rejected (as a consistency check would)."""
    from depth_perception.synth import make_synthetic_bags
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    root = tmp_path_factory.mktemp("two_folders")
    bags = dict(zip((DAY, "night", "rain"), make_synthetic_bags(
        root / "data", frames=10, size=SIZE, conditions=(DAY, "night", "rain"), seed=3)))
    folders = {}
    for c in ("night", "rain"):
        folders[c] = root / f"paired_{c}"
        run_translate(load_translate_config("paired", [
            f"output_dir={folders[c]}", f"source.bags=[{bags[DAY]}]", f"conditions=[{c}]"]))
    manifest = folders["rain"] / "manifest.jsonl"
    records = [json.loads(x) for x in manifest.read_text().splitlines()]
    for r in records[-3:]:
        r["accepted"] = False
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    rejected = {int(r["stamp_ns"]) for r in records[-3:]}
    return {"root": root, "bags": bags, "folders": folders, "rejected_rain": rejected}


def _dataset(world, keep=None, order=("night", "rain")):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_datasets

    folders = ",".join(str(world["folders"][c]) for c in order)
    overrides = [f"data.bags=[{world['bags'][DAY]}]", f"student.translations=[{folders}]",
                 f"data.width={SIZE[0]}", f"data.height={SIZE[1]}", "data.augment=false",
                 "student.translator=paired"]
    if keep is not None:
        overrides.append(f"student.keep_probability={keep}")
    train, _ = build_student_datasets(load_config("student_tiny", overrides))
    return train


def _stamp(ds: StudentDataset, i: int) -> int:
    seq, k = ds.day.locate(i)
    return int(seq.stamps[seq.targets[k]])


def test_translations_are_merged_over_folders(two_folders):
    for order in (("night", "rain"), ("rain", "night")):
        ds = _dataset(two_folders, order=order)
        n = len(ds)
        assert n >= 4
        rainless = [i for i in range(n) if _stamp(ds, i) in two_folders["rejected_rain"]]
        assert rainless, "the rejected rain records must fall on training frames"
        for i in range(n):
            have = set(ds.translations_of(i))
            assert have == ({"night"} if i in rainless else {"night", "rain"}), (order, i)
        # each translation comes from its own folder
        t = ds.translations_of(next(i for i in range(n) if i not in rainless))
        assert t["night"].path.is_relative_to(two_folders["folders"]["night"])
        assert t["rain"].path.is_relative_to(two_folders["folders"]["rain"])
        # expected shares over the epoch, by hand: frames with both give 2/3, 1/6, 1/6;
        # frames without rain (night 1/6 and day 2/3 renormalised by 5/6) give 4/5, 1/5, 0
        k, m = len(rainless), n - len(rainless)
        expected = {DAY: (m * 2 / 3 + k * 4 / 5) / n, "night": (m / 6 + k / 5) / n,
                    "rain": (m / 6) / n}
        mix = ds.expected_mix()
        assert set(mix) == {DAY, "night", "rain"}
        for c, p in expected.items():
            assert mix[c] == pytest.approx(p, abs=1e-12), c


def test_the_student_sees_both_folders_translations(two_folders):
    ds = _dataset(two_folders, keep=0.0)            # always translated
    seen = {}
    for i in range(len(ds)):
        item = ds[i]
        c = item["student_condition"]
        assert c in ds.translations_of(i)
        expected = ds.translated_frame(i, c)         # [H,W,3] in [0,1]
        np.testing.assert_allclose(item["student_image"].numpy().transpose(1, 2, 0), expected)
        seen[c] = seen.get(c, 0) + 1
    assert set(seen) == {"night", "rain"}, seen
