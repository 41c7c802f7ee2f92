"""Pseudo-label format, the ``refine`` verb on synthetic bags (alignment to LiDAR and to
a metric teacher, BLIP-2 captions as the SDS prompt) and the label dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from depth_perception_training.refine.labels import (PseudoLabelDataset, PseudoLabels,
                                                     PseudoLabelWriter)


def test_label_folder_round_trips_in_both_encodings(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 70.0, (6, 9)).astype(np.float32)
    depth[0, 0] = np.nan
    for encoding in ("depth", "log_depth"):
        out = tmp_path / encoding
        with PseudoLabelWriter(out, "marigold", "metric_depth", encoding, (0.1, 80.0)) as w:
            w.add("day-clear", "/camera/image_raw", 17, depth, condition="day-clear")
            w.add("day-clear", "/camera/image_raw", 18, depth * 0.5)
        labels = PseudoLabels(out)
        assert len(labels) == 2 and labels.kind == "metric_depth" and labels.encoding == encoding
        assert labels.keys() == [("day-clear", "/camera/image_raw", 17),
                                 ("day-clear", "/camera/image_raw", 18)]
        got = labels.get("day-clear", 17)
        np.testing.assert_allclose(got, depth, rtol=1e-5)          # NaN stays NaN
        np.testing.assert_allclose(labels.get("day-clear", 18, "/camera/image_raw"), depth * 0.5,
                                   rtol=1e-5)
        stored = np.load(out / labels.entry("day-clear", 17)["file"])
        if encoding == "log_depth":
            assert np.nanmin(stored) >= -1 and np.nanmax(stored) <= 1
        with pytest.raises(KeyError, match="no pseudo label"):
            labels.get("day-clear", 19)
    with pytest.raises(ValueError, match="already holds"):
        PseudoLabelWriter(tmp_path / "depth", "marigold")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        PseudoLabels(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="manifest"):
        PseudoLabels(tmp_path / "nothing")


def test_image_folder_frames_are_keyed_by_folder_and_index(tmp_path):
    import cv2

    from depth_perception_training.refine.run import iter_frames
    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0] = 200                                            # red in RGB
    for name in ("b.png", "a.png"):
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    frames = list(iter_frames(images=folder))
    assert [(f.bag, f.topic, f.stamp_ns) for f in frames] == [("photos", "images", 0),
                                                              ("photos", "images", 1)]
    assert frames[0].image_path.endswith("a.png") and frames[0].K is None
    np.testing.assert_array_equal(frames[1].rgb, rgb)
    assert len(list(iter_frames(images=folder, first=1, every=5))) == 1
    with pytest.raises(FileNotFoundError, match="no images"):
        list(iter_frames(images=tmp_path / "empty"))
    with pytest.raises(ValueError, match="exactly one"):
        list(iter_frames())


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags
    return make_synthetic_bags(tmp_path_factory.mktemp("bags"), frames=3, size=(56, 28),
                               conditions=["day-clear"], seed=0)[0]


def test_refine_verb_on_a_synthetic_frame_with_tiny_models(tmp_path, bag):
    from depth_perception import cli
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.models import build_depth_model, save_depth_model
    from depth_perception_training.tiny import tiny_stable_diffusion

    tiny_stable_diffusion(image_size=32).save_pretrained(tmp_path / "sd")
    torch.manual_seed(0)
    save_depth_model(tmp_path / "model", build_depth_model({"arch": "dpt", "size": "tiny"}))
    out = tmp_path / "labels"
    rc = cli.main(["refine", "--bag", str(bag), "--model", str(tmp_path / "model"), "--out",
                   str(out), "redepth.steps=1", "redepth.ensemble=1", "redepth.short_side=28",
                   f"guidance.model={tmp_path / 'sd'}", "caption.prompt=a street",
                   "data.max_frames=1"])
    assert rc == 0
    labels = PseudoLabels(out)
    assert len(labels) == 1 and labels.kind == "metric_depth" and labels.source == "redepth"
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False))
    label = labels.get(bag.name, int(seq.stamps[0]))
    assert label.shape == (28, 56) and np.isfinite(label).all()
    assert (label >= 0.1).all() and (label <= 80.0).all()
    sample = seq[0]
    np.testing.assert_array_equal(labels.for_sample(sample), label)
    entry = labels.frames[0]
    assert entry["fit"]["prompt"] == "a street" and entry["condition"] == "day-clear"
    assert (out / "config.yaml").is_file()
    # align_to=teacher: the refined depth fitted (least squares, in depth) to the metric
    # model's own unrefined depth of the frame, not to the bag's LiDAR. (A tiny metric
    # Depth Anything: the random tiny DPT above predicts one depth everywhere.)
    from depth_perception_training.refine.config import load_refine_config
    from depth_perception_training.refine.run import RefineRun, iter_frames
    from depth_perception_training.tiny import save_tiny_depth_anything
    metric = save_tiny_depth_anything(tmp_path / "depth_anything", metric=True)
    out = tmp_path / "to_teacher"
    assert cli.main(["refine", "--bag", str(bag), "--model", str(metric), "--out", str(out),
                     "redepth.steps=1", "redepth.ensemble=1", "redepth.short_side=28",
                     f"guidance.model={tmp_path / 'sd'}", "caption.prompt=a street",
                     "data.max_frames=1", "labels.align_to=teacher"]) == 0
    fit = PseudoLabels(out).frames[0]["fit"]
    assert fit["aligned_to"] == "teacher" and fit["space"] == "depth"
    runner = RefineRun(load_refine_config(None, ["redepth.sds_weight=0", "redepth.short_side=28"]),
                       str(metric))
    frame = next(iter_frames(bag))
    teacher = runner.teacher_depth(frame)
    aligned = PseudoLabels(out).get(bag.name, int(seq.stamps[0]))
    assert aligned.mean() == pytest.approx(teacher.mean(), rel=1e-4)
    np.testing.assert_allclose(aligned, teacher, rtol=0.02)      # one step from the teacher
    lidar = np.isfinite(frame.lidar)
    assert abs(aligned[lidar].mean() - frame.lidar[lidar].mean()) > 1.0    # not the LiDAR's


def test_marigold_on_a_bag_without_lidar_is_aligned_to_the_metric_teacher(tmp_path):
    """labels.align_to=auto, a bag without LiDAR and a metric --model: the Marigold output
    is fitted to the model's depth of the frame (means equal, labels an affine map of
    Marigold's raw output)."""
    from depth_perception import cli
    from depth_perception_training.refine.config import load_refine_config
    from depth_perception_training.refine.run import RefineRun, iter_frames
    from depth_perception_training.tiny import tiny_marigold
    from depth_perception_training.tiny import save_tiny_depth_anything
    from support.bagtools import make_drive_bag

    bag = make_drive_bag(tmp_path / "nolidar", n=2, lidar_points=None)
    tiny_marigold(image_size=32).save_pretrained(tmp_path / "marigold")
    save_tiny_depth_anything(tmp_path / "model", metric=True)
    args = [f"marigold.model={tmp_path / 'marigold'}", "marigold.ensemble=1", "marigold.steps=1",
            "marigold.processing_resolution=32", "redepth.short_side=28"]
    out = tmp_path / "labels"
    assert cli.main(["refine", "--config", "marigold", "--bag", str(bag), "--model",
                     str(tmp_path / "model"), "--out", str(out), *args]) == 0
    labels = PseudoLabels(out)
    assert len(labels) == 2 and labels.kind == "metric_depth" and labels.source == "marigold"
    runner = RefineRun(load_refine_config("marigold", args), str(tmp_path / "model"))
    for entry, frame in zip(labels.frames, iter_frames(bag)):
        assert frame.lidar is None
        fit = entry["fit"]
        assert fit["aligned_to"] == "teacher" and fit["space"] == "depth"
        label, raw = labels.load(entry), runner.marigold.predict(frame.rgb)
        np.testing.assert_allclose(label, fit["scale"] * raw + fit["shift"], rtol=1e-4, atol=1e-5)
        assert label.mean() == pytest.approx(runner.teacher_depth(frame).mean(), rel=1e-4)
    # no LiDAR and no metric model: nothing to align to, the labels stay relative
    out = tmp_path / "relative"
    assert cli.main(["refine", "--config", "marigold", "--bag", str(bag), "--out", str(out),
                     *args]) == 0
    assert PseudoLabels(out).kind == "relative_depth"
    assert "aligned_to" not in PseudoLabels(out).frames[0]["fit"]


def test_blip2_caption_is_the_sds_prompt_when_none_is_configured(tmp_path, bag):
    from depth_perception import cli
    from depth_perception.models import build_depth_model, save_depth_model
    from depth_perception_training.translate.caption import Captioner
    from depth_perception_training.refine.run import iter_frames
    from depth_perception_training.tiny import tiny_blip2, tiny_stable_diffusion

    processor, model = tiny_blip2()
    processor.save_pretrained(tmp_path / "blip2")
    model.save_pretrained(tmp_path / "blip2")
    tiny_stable_diffusion(image_size=32).save_pretrained(tmp_path / "sd")
    torch.manual_seed(0)
    save_depth_model(tmp_path / "model", build_depth_model({"arch": "dpt", "size": "tiny"}))
    out = tmp_path / "labels"
    assert cli.main(["refine", "--bag", str(bag), "--model", str(tmp_path / "model"), "--out",
                     str(out), "redepth.steps=1", "redepth.ensemble=1", "redepth.short_side=28",
                     f"guidance.model={tmp_path / 'sd'}", f"caption.model={tmp_path / 'blip2'}",
                     "caption.max_new_tokens=6", "data.max_frames=1"]) == 0
    prompt = PseudoLabels(out).frames[0]["fit"]["prompt"]
    expected = Captioner.from_pretrained(str(tmp_path / "blip2"), max_new_tokens=6).caption(
        next(iter_frames(bag)).rgb)
    assert isinstance(prompt, str) and prompt.strip() and prompt == expected


def test_marigold_label_folder_serves_images_and_decoded_labels(tmp_path, bag):
    """Marigold (tiny) -> labels aligned to LiDAR, log-depth encoded -> (image, metres)
    pairs of PseudoLabelDataset. (The student trainer's use of label folders:
    test_student_labels.py.)"""
    from depth_perception import cli
    from depth_perception_training.tiny import tiny_marigold

    tiny_marigold(image_size=32).save_pretrained(tmp_path / "marigold")
    out = tmp_path / "labels"
    assert cli.main(["refine", "--config", "marigold", "--bag", str(bag), "--out", str(out),
                     f"marigold.model={tmp_path / 'marigold'}", "marigold.ensemble=2",
                     "marigold.steps=1", "marigold.processing_resolution=32",
                     "labels.encoding=log_depth"]) == 0
    labels = PseudoLabels(out)
    assert len(labels) == 3 and labels.kind == "metric_depth" and labels.encoding == "log_depth"
    assert all(f["fit"]["aligned_to"] == "lidar" for f in labels.frames)

    loader = torch.utils.data.DataLoader(PseudoLabelDataset(labels, size=(56, 28)), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 28, 56) and batch["depth"].shape == (3, 1, 28, 56)
    assert batch["valid"].float().mean() > 0.9
    first = labels.get(bag.name, labels.frames[0]["stamp_ns"])          # decoded metres
    valid = batch["valid"][0, 0].numpy()
    np.testing.assert_allclose(batch["depth"][0, 0].numpy()[valid], first[valid], rtol=1e-5)
