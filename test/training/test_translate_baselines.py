"""The ``paired`` and ``photometric`` translators through the command line, the
manifest and the pairing API; rejected translations are recorded and excluded."""
from __future__ import annotations

import json

import numpy as np
import pytest

from depth_perception.cli import main
from depth_perception.data.bag import BagReader
from depth_perception_training.translate.config import load_translate_config
from depth_perception_training.translate.pairs import TranslationPairs
from depth_perception_training.translate.run import run_translate


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("paired")
    day, night, rain = make_synthetic_bags(root / "synth", frames=4, size=(96, 48),
                                           conditions=("day-clear", "night", "rain"), seed=3)
    return {"root": root, "day": day, "night": night, "rain": rain}


def test_paired_returns_the_night_and_rain_renderings_of_the_same_frames(bags, capsys):
    out = bags["root"] / "paired"
    assert main(["translate", "--config", "config/translate/paired.yaml",
                 f"source.bags=[{bags['day']}]", f"output_dir={out}"]) == 0
    assert "translated 8, skipped 0" in capsys.readouterr().out
    pairs = TranslationPairs(out)
    day = BagReader(bags["day"])
    assert [f.stamp_ns for f in pairs] == [int(s) for s in day.stamps("image")]
    for condition in ("night", "rain"):
        other = BagReader(bags[condition])
        np.testing.assert_array_equal(other.stamps("image"), day.stamps("image"))
        for k, frame in enumerate(pairs):
            t = frame.translations[condition]
            assert t.record["translator"] == "paired" and t.record["consistency"] is None
            np.testing.assert_array_equal(t.image(), other.image(k))    # exactly that frame
            assert not np.array_equal(t.image(), pairs.day_image(k))
    # a rerun finds everything done
    assert main(["translate", "--config", "paired", f"source.bags=[{bags['day']}]",
                 f"output_dir={out}"]) == 0
    assert "translated 0, skipped 8" in capsys.readouterr().out
    # other settings into the same folder would mix two recipes in one manifest
    assert main(["translate", "--config", "paired", f"source.bags=[{bags['day']}]",
                 f"output_dir={out}", "paired.max_stamp_diff_ms=5"]) == 2
    assert "paired.max_stamp_diff_ms: 0.0 -> 5.0" in capsys.readouterr().err


def test_paired_without_a_partner_bag_is_a_clear_error(bags, tmp_path, capsys):
    assert main(["translate", "--config", "paired", f"source.bags=[{bags['day']}]",
                 f"output_dir={tmp_path}", "conditions=[snow]"]) == 2
    err = capsys.readouterr().err
    assert "no snow bag for" in err and "paired.bags.snow" in err


def test_photometric_keeps_size_and_intrinsics_and_feeds_the_pairing_api(bags, tmp_path):
    out = bags["root"] / "photometric"
    cfg = load_translate_config("photometric", [f"source.bags=[{bags['day']}]",
                                                f"output_dir={out}", "write_bags=true",
                                                "conditions=[night,rain,snow]"])
    result = run_translate(cfg)
    assert result.translated == 12 and result.timings["synthesis"] > 0
    pairs = TranslationPairs(out, conditions=["night", "rain"])
    assert len(pairs) == 4 and pairs.conditions == ["night", "rain"]
    day = BagReader(bags["day"])
    for k, frame in enumerate(pairs):
        day_rgb = pairs.day_image(k)
        for c, t in frame.translations.items():
            assert t.image().shape == day_rgb.shape == (48, 96, 3)
            assert t.record["seed"] > 0 and t.record["models"] == {}
    for c in ("night", "rain", "snow"):
        bag = BagReader(out / "bags" / c / "day-clear")
        assert bag.condition == c and bag.count("image") == 4
        np.testing.assert_array_equal(bag.camera_info(0).K, day.camera_info(0).K)
        assert bag.image(0).shape == (48, 96, 3)

    # a translated bag reads like a recorded one: training samples with the source's
    # neighbours, poses and LiDAR (the teacher's offsets), and `evaluate` scores it
    from support.models_fixtures import tiny_depth_anything_onnx

    from depth_perception.data.samples import BagSequence, SampleConfig

    night = out / "bags" / "night" / "day-clear"
    seq = BagSequence(night, SampleConfig(offsets=(-1, 1)))
    src = BagSequence(bags["day"], SampleConfig(offsets=(-1, 1)))
    assert len(seq) == len(src) == 2
    for k in range(2):
        s, d = seq[k], src[k]
        assert (s.condition, s.stamp_ns, s.index) == ("night", d.stamp_ns, d.index)
        np.testing.assert_array_equal(s.image, pairs[s.index].translations["night"].image())
        for o in (-1, 1):
            np.testing.assert_array_equal(
                s.context[o], pairs[s.index + o].translations["night"].image())
            np.testing.assert_array_equal(s.T_src_tgt[o], d.T_src_tgt[o])
        np.testing.assert_array_equal(s.lidar_depth, d.lidar_depth)
        assert np.isfinite(s.lidar_depth).sum() > 50
    model = tiny_depth_anything_onnx(tmp_path / "tiny.onnx", 56, 112)
    report = tmp_path / "eval"
    assert main(["evaluate", "--bag", str(night), "--bag", str(bags["day"]), "--model",
                 str(model), "--backend", "onnxruntime", "--out", str(report),
                 "--no-plots"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())["per_condition"]
    assert set(metrics) == {"night", "day-clear"}
    for c in metrics.values():
        assert c["frames"] == 4
        assert all(np.isfinite(c[k]) for k in ("abs_rel", "rmse", "a1"))
    assert metrics["night"]["abs_rel"] != metrics["day-clear"]["abs_rel"]   # its own images


def test_style_prompts_come_from_a_folder_and_bags(bags, tmp_path):
    import cv2

    from depth_perception_training.translate.config import StyleSource
    from depth_perception_training.translate.sources import StylePool

    folder = tmp_path / "rain_frames"
    folder.mkdir()
    red, blue = np.zeros((20, 30, 3), np.uint8), np.zeros((24, 32, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 150                                   # RGB
    cv2.imwrite(str(folder / "b.png"), cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(blue, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    pool = StylePool("rain", StyleSource(folder=str(folder)))
    assert pool.names == ["a.png", "b.png"]                  # sorted, other files ignored
    np.testing.assert_array_equal(pool.images[0], blue)      # read as RGB, not BGR
    np.testing.assert_array_equal(pool.images[1], red)
    picks = [pool.pick(seed) for seed in range(20)]
    assert {name for _, name in picks} == {"a.png", "b.png"}
    for image, name in picks:
        assert image is pool.images[pool.names.index(name)]
    again = StylePool("rain", StyleSource(folder=str(folder)))     # the seed decides
    assert [again.pick(seed)[1] for seed in range(20)] == [name for _, name in picks]
    assert StylePool("rain", StyleSource(folder=str(folder), max_images=1)).names == ["a.png"]
    both = StylePool("rain", StyleSource(bags=[str(bags["rain"])], folder=str(folder),
                                         max_images=2))
    stamps = BagReader(bags["rain"]).stamps("image")
    assert both.names == [f"rain#{stamps[0]}", f"rain#{stamps[-1]}", "a.png", "b.png"]
    (folder / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="c.png cannot be read as an image"):
        StylePool("rain", StyleSource(folder=str(folder)))
    with pytest.raises(FileNotFoundError, match="style folder .* does not exist"):
        StylePool("rain", StyleSource(folder=str(tmp_path / "missing")))


def test_rejected_translations_are_recorded_and_excluded(bags, tmp_path):
    import torch

    from depth_perception_training.tiny import save_tiny_dpt

    dpt = save_tiny_dpt(tmp_path / "dpt")
    out = tmp_path / "checked"
    cfg = load_translate_config("photometric", [
        f"source.bags=[{bags['day']}]", f"output_dir={out}", "conditions=[night]",
        "source.max_frames=2", "consistency.enabled=true", "consistency.threshold=1e-6",
        f"models.depth={dpt}", "control_depth.grid=[2,2]", "consistency.tiled=false"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_translate(cfg)
    finally:
        torch.set_num_threads(threads)
    assert (result.translated, result.rejected) == (2, 2)
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(not r["accepted"] and r["consistency"] > 1e-6 for r in records)
    assert records[0]["models"] == {"depth": str(dpt)}
    assert len(TranslationPairs(out)) == 0                   # excluded from training
    assert result.summary["conditions"] == {
        "night": {"samples": 2, "checked": 2, "rejected": 2, "rejection_rate": 1.0}}
    assert len(TranslationPairs(out, accepted_only=False)) == 2


def test_bad_sources_name_what_was_expected(tmp_path, bags):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_translate(load_translate_config("photometric", [
            f"source.bags=[{tmp_path / 'missing'}]", f"output_dir={tmp_path / 'o'}"]))
    with pytest.raises(ValueError, match="source.bags is empty"):
        run_translate(load_translate_config("photometric", [f"output_dir={tmp_path / 'o'}"]))
    with pytest.raises(FileNotFoundError, match="manifest.jsonl not found"):
        TranslationPairs(tmp_path)
    with pytest.raises(ValueError, match="style.rain gives no image"):
        from depth_perception_training.translate.config import StyleSource
        from depth_perception_training.translate.sources import StylePool

        StylePool("rain", StyleSource())


def test_compressed_source_images_give_compressed_translated_bags(tmp_path):
    from depth_perception.synth import make_synthetic_bags

    (day,) = make_synthetic_bags(tmp_path / "synth", frames=2, size=(64, 32),
                                 conditions=("day-clear",), image_format="png")
    out = tmp_path / "out"
    run_translate(load_translate_config("photometric", [
        f"source.bags=[{day}]", f"output_dir={out}", "write_bags=true", "conditions=[rain]"]))
    pairs = TranslationPairs(out)
    assert pairs[0].topic == "/camera/image_raw/compressed"
    np.testing.assert_array_equal(pairs.day_image(1), BagReader(day).image(1))
    rain = BagReader(out / "bags" / "rain" / "day-clear")
    assert rain.topic_name("image") == "/camera/image_raw/compressed"
    assert rain.message("image", 0).format == BagReader(day).message("image", 0).format
    np.testing.assert_array_equal(rain.image(1), pairs[1].translations["rain"].image())


def test_every_nth_frame_and_frame_limit(bags, tmp_path):
    cfg = load_translate_config("photometric", [
        f"source.bags=[{bags['day']}]", f"output_dir={tmp_path}", "conditions=[night]",
        "source.every=2"])
    result = run_translate(cfg)
    assert result.frames == 2
    assert [f.index for f in TranslationPairs(tmp_path)] == [0, 2]
    cfg = load_translate_config("photometric", [
        f"source.bags=[{bags['day'].parent}]", f"output_dir={tmp_path / 'all'}",
        "conditions=[snow]", "source.max_frames=1"])
    result = run_translate(cfg)               # a folder of bags: each bag in it is a source
    assert result.frames == 3                 # one frame of each
    assert sorted(f.bag_id for f in TranslationPairs(tmp_path / "all")) == [
        "day-clear", "night", "rain"]
