"""The SSD student on pseudo labels (``student.pseudo_labels``): Re-Depth Anything and
Marigold label folders made by the ``refine`` verb replace the live teacher's forward
pass in the real student trainer; without the key the teacher path is unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from depth_perception_training.refine.labels import PseudoLabels, PseudoLabelWriter
from support.student_setup import SIZE, make_ssd_setup, student_overrides

# every test here uses the `world` fixture: two tiny refine runs and a teacher (~1 min)
pytestmark = pytest.mark.slow


class Recorder(nn.Module):
    """Counts the calls of a frozen network (the teacher's depth net)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.net(*args, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The student's test world plus a Re-Depth label folder of the first 6 of the 10
    day-clear frames (tiny DPT + tiny SD, 1 step) and a Marigold one of all of them
    (tiny Marigold, aligned to the bag's LiDAR, stored as MetricGold log depth)."""
    from depth_perception import cli
    from depth_perception.models import build_depth_model, save_depth_model
    from depth_perception_training.tiny import tiny_marigold, tiny_stable_diffusion

    setup = make_ssd_setup(tmp_path_factory.mktemp("ssd_labels"))
    root, day = setup["root"], setup["bags"]["day-clear"]
    tiny_stable_diffusion(image_size=32).save_pretrained(root / "sd")
    tiny_marigold(image_size=32).save_pretrained(root / "marigold")
    torch.manual_seed(0)
    save_depth_model(root / "dpt", build_depth_model({"arch": "dpt", "size": "tiny"}))
    assert cli.main(["refine", "--bag", str(day), "--model", str(root / "dpt"), "--out",
                     str(root / "redepth"), "redepth.steps=1", "redepth.ensemble=1",
                     "redepth.short_side=28", f"guidance.model={root / 'sd'}",
                     "caption.prompt=a street", "data.max_frames=6"]) == 0
    assert cli.main(["refine", "--config", "marigold", "--bag", str(day), "--out",
                     str(root / "marigold_labels"), f"marigold.model={root / 'marigold'}",
                     "marigold.ensemble=1", "marigold.steps=1",
                     "marigold.processing_resolution=32", "labels.encoding=log_depth"]) == 0
    setup["labels"] = {"redepth": root / "redepth", "marigold": root / "marigold_labels"}
    return setup


def _trainer(world, out, *extra):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    trainer, objective = build_student_trainer(load_config("student_tiny", student_overrides(
        world, out, "student.semantic.weight=0", *extra)))
    objective.teacher.depth = Recorder(objective.teacher.depth)
    return trainer, objective


def _stamp(trainer, index):
    seq, k = trainer.train_loader.dataset.base.day.locate(int(index))
    return seq, int(seq.stamps[seq.targets[k]])


@pytest.mark.parametrize("source", ["redepth", "marigold"])
def test_student_trains_on_refine_labels_instead_of_a_live_teacher(world, tmp_path, source):
    folder = world["labels"][source]
    labels = PseudoLabels(folder)
    assert labels.source == source and labels.kind == "metric_depth"
    assert labels.encoding == ("log_depth" if source == "marigold" else "depth")
    trainer, objective = _trainer(world, tmp_path / "run", f"student.pseudo_labels={folder}")
    data = trainer.train_loader.dataset
    # Re-Depth labelled frames 0-5 only: the other training frames are left out, counted
    assert len(data) + data.skipped == len(data.base)
    assert (data.skipped > 0) == (source == "redepth") and len(data) > 0
    batch = next(iter(trainer.train_loader))
    for b, index in enumerate(batch["index"]):
        seq, stamp = _stamp(trainer, index)
        expected = labels.get(seq.path.name, stamp)
        assert expected.shape == (SIZE[1], SIZE[0])              # camera size = training size
        torch.testing.assert_close(batch["label_depth"][b, 0], torch.from_numpy(expected))
    out = objective(trainer.models, batch)
    # the target the loss saw is the label (teacher_depth: what the objective distilled)
    torch.testing.assert_close(out.images["teacher_depth"], batch["label_depth"])
    assert float(out.terms["label_fraction"]) == 1.0 and "mask_fraction" in out.terms
    assert objective.teacher.depth.calls == 0
    # the real trainer: 2 steps, the student learns, the teacher's depth net never runs
    before = [p.detach().clone() for p in trainer.models["depth"].parameters()]
    result = trainer.fit()
    assert result.step == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(trainer.models["depth"].parameters(), before))
    assert objective.teacher.depth.calls == 0 and objective.teacher.pose is not None


def test_constant_labels_are_the_distillation_target_and_unlabelled_pixels_carry_no_loss(
        world, tmp_path):
    """Labels of 5 m everywhere (left half NaN in one frame): the loss is
    mean over scales of mean(valid * |d_s - 1/5| / d_s), worked from the student's own
    output, and the step pulls the student's disparity toward 1/5."""
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception_training.train.student import unflip, upsample_to

    day = world["bags"]["day-clear"]
    seq = BagSequence(day, SampleConfig(offsets=(), skip_static=False))
    label = np.full((SIZE[1], SIZE[0]), 5.0, np.float32)
    holed = label.copy()
    holed[:, : SIZE[0] // 2] = np.nan
    with PseudoLabelWriter(tmp_path / "const", "redepth") as w:
        for i, stamp in enumerate(seq.stamps):
            w.add(day.name, "/camera/image_raw", int(stamp), holed if i % 2 else label)
    trainer, objective = _trainer(world, tmp_path / "run",
                                  f"student.pseudo_labels={tmp_path / 'const'}",
                                  "student.loss=distillation", "optim.lr_encoder=1e-3",
                                  "optim.lr_decoder=1e-3", "data.augment=false")
    batch = next(iter(trainer.train_loader))
    valid = torch.isfinite(batch["label_depth"]).float()
    assert 0 < float(valid.mean()) < 1                        # one holed frame in the batch
    net = trainer.models["depth"]

    def by_hand():
        with torch.no_grad():
            res = net(objective.normalize(batch["student_image"]))
        H, W = batch["image"].shape[-2:]
        per_scale = [(valid * (unflip(upsample_to(d, (H, W)), batch["flip"]) - 0.2).abs()
                      / unflip(upsample_to(d, (H, W)), batch["flip"])).mean()
                     for d in res["scaled_disp"]]
        return float(torch.stack(per_scale).mean()), res["scaled_disp"][0]

    expected, disp = by_hand()
    record = trainer.train_step(batch)
    assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert record["terms"]["label_fraction"] == pytest.approx(float(valid.mean()))
    for _ in range(2):
        trainer.train_step(batch)
    after, disp_after = by_hand()
    assert after < expected                                   # pulled toward 1/5 m
    assert float((disp_after - 0.2).abs().mean()) < float((disp - 0.2).abs().mean())
    assert objective.teacher.depth.calls == 0


def test_without_pseudo_labels_the_teacher_runs_as_before(world, tmp_path):
    trainer, objective = _trainer(world, tmp_path / "run")
    assert not hasattr(trainer.train_loader.dataset, "labels")
    batch = next(iter(trainer.train_loader))
    assert "label_depth" not in batch
    record = trainer.train_step(batch)
    assert objective.teacher.depth.calls == 1 and "label_fraction" not in record["terms"]


def test_pseudo_label_settings_that_cannot_work_are_refused(world, tmp_path):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    def build(folder, *extra):
        return build_student_trainer(load_config("student_tiny", student_overrides(
            world, tmp_path / "run", f"student.pseudo_labels={folder}", *extra)))

    marigold = world["labels"]["marigold"]
    # student_tiny's semantic loss compares with the teacher's own encoder tokens
    with pytest.raises(ValueError, match="student.pseudo_labels.*student.semantic.encoder"):
        build(marigold)
    with pytest.raises(FileNotFoundError, match="student.pseudo_labels: .*manifest"):
        build(tmp_path / "nothing", "student.semantic.weight=0")
    relative = tmp_path / "relative"
    with PseudoLabelWriter(relative, "marigold", "relative_depth") as w:
        w.add(world["bags"]["day-clear"].name, "/camera/image_raw", 1, np.ones((2, 2)))
    with pytest.raises(ValueError, match="relative_depth labels.*metric depth"):
        build(relative, "student.semantic.weight=0")
    other = tmp_path / "other"
    with PseudoLabelWriter(other, "marigold") as w:
        w.add("another-bag", "/camera/image_raw", 1, np.ones((2, 2)))
    with pytest.raises(ValueError, match="no training frame.*another-bag"):
        build(other, "student.semantic.weight=0")


def test_train_student_verb_accepts_pseudo_labels(world, tmp_path):
    import json

    from depth_perception import cli

    out = tmp_path / "run"
    folder = world["labels"]["marigold"]
    assert cli.main(["train", "student", "--config", "student_tiny", *student_overrides(
        world, out, f"student.pseudo_labels={folder}", "student.semantic.weight=0")]) == 0
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["provenance"]["pseudo_labels"] == str(folder)
