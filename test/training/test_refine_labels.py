"""Pseudo-label format, the ``refine`` verb on synthetic bags, and a student that trains on
the labels instead of a live teacher."""
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
    from depth_perception_training.refine.tiny import tiny_stable_diffusion

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
    # a relative prediction cannot be written as metric without a reference
    assert cli.main(["refine", "--bag", str(bag), "--model", str(tmp_path / "model"), "--out",
                     str(out), "labels.align_to=teacher", "caption.prompt=x"]) == 2


@pytest.mark.slow
def test_student_trains_on_marigold_labels_instead_of_a_live_teacher(tmp_path, bag):
    """Marigold (tiny) -> labels aligned to LiDAR, log-depth encoded -> a few distillation
    steps of the package's depth network with the md4all abs-rel loss."""
    from depth_perception import cli
    from depth_perception.models import build_depth_model, normalize_image
    from depth_perception_training.losses import abs_rel_distillation
    from depth_perception_training.refine.tiny import tiny_marigold

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
    torch.manual_seed(0)
    student = build_depth_model({"arch": "dpt", "size": "tiny", "min_depth": 0.1, "max_depth": 80.0})
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    x = normalize_image(batch["image"], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    target = torch.where(batch["valid"], 1.0 / batch["depth"].clamp_min(1e-3), torch.zeros(()))
    losses = []
    for _ in range(6):
        disp = student(x)["scaled_disp"][0]
        teacher = torch.where(batch["valid"], target, disp.detach())   # no loss where no label
        loss = abs_rel_distillation(disp, teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
