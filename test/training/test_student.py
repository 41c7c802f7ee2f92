"""SSD student: teacher-loss mask (both readings of Eq. 5), semantic loss, mixing, the
teacher's input, flips, every Table 3 configuration for a few steps, and the exported
student running in the onboard runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from depth_perception_training import geometry
from depth_perception_training.losses import (photometric_error, semantic_cosine_loss,
                                              teacher_loss_mask)

from support.student_setup import SIZE, make_ssd_setup, student_overrides


# -- Eq. 5 on a constructed case ----------------------------------------------------------

def _textured(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


def test_teacher_loss_mask_keeps_pixels_where_the_teacher_depth_is_right():
    """The target frame is rendered from the source with a known depth; the teacher's
    depth is that depth on the left half and wrong on the right, the student the other
    way round. The text's reading distils the left half only (where the teacher is
    right); Eq. 5 as printed selects the right half (where the teacher is wrong)."""
    H, W = 48, 96
    K = torch.tensor([[[60.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]]])
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.8                                   # source camera 0.8 m to the side
    truth = torch.full((1, 1, H, W), 8.0)
    source = _textured(H, W)
    target, _ = geometry.warp(source, truth, K, T)     # I_t = I_t' <Proj(D, T, K)>
    wrong = truth * 2.5
    left = torch.zeros(1, 1, H, W, dtype=torch.bool)
    left[..., : W // 2] = True
    teacher = torch.where(left, truth, wrong)
    student = torch.where(left, wrong, truth)

    def pe(depth):
        warped, _ = geometry.warp(source, depth, K, T)
        return photometric_error(warped, target)

    text = teacher_loss_mask([pe(teacher)], [pe(student)], reading="text")
    printed = teacher_loss_mask([pe(teacher)], [pe(student)], reading="printed")
    # away from the seam and the image borders (SSIM window, out-of-view samples)
    inner_left = (slice(None), slice(None), slice(4, H - 4), slice(16, W // 2 - 4))
    inner_right = (slice(None), slice(None), slice(4, H - 4), slice(W // 2 + 4, W - 16))
    assert text[inner_left].mean() > 0.95 and text[inner_right].mean() < 0.05
    assert printed[inner_left].mean() < 0.05 and printed[inner_right].mean() > 0.95
    # the readings are complements; ties (student == teacher) are distilled in "text"
    assert torch.equal(text + printed, torch.ones_like(text))
    same = teacher_loss_mask([pe(teacher)], [pe(teacher)], reading="text")
    assert bool((same == 1).all())


def test_teacher_loss_mask_takes_the_minimum_over_adjacent_frames():
    t = [torch.tensor([[[[0.1, 0.5]]]]), torch.tensor([[[[0.9, 0.05]]]])]   # min 0.1, 0.05
    s = [torch.tensor([[[[0.2, 0.2]]]]), torch.tensor([[[[0.3, 0.1]]]])]    # min 0.2, 0.1
    assert teacher_loss_mask(t, s).flatten().tolist() == [1.0, 1.0]
    s = [torch.tensor([[[[0.05, 0.01]]]]), torch.tensor([[[[0.5, 0.5]]]])]
    assert teacher_loss_mask(t, s).flatten().tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="reading"):
        teacher_loss_mask(t, t, reading="as printed")
    with pytest.raises(ValueError, match="one teacher and one student"):
        teacher_loss_mask(t, s[:1])


# -- semantic loss ------------------------------------------------------------------------

def test_semantic_loss_values():
    a = torch.randn(2, 6, 8)
    assert float(semantic_cosine_loss(a, a.clone())) == pytest.approx(0.0, abs=1e-6)
    e = torch.eye(8)
    x, y = e[:4].expand(2, 4, 8), e[4:].expand(2, 4, 8)          # orthogonal tokens
    assert float(semantic_cosine_loss(x, y)) == pytest.approx(1.0, abs=1e-6)
    assert float(semantic_cosine_loss(x, -x)) == pytest.approx(2.0, abs=1e-6)


def test_semantic_loss_sends_no_gradient_into_the_frozen_dinov2(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from depth_perception.models import build_depth_model
    from depth_perception_training.train.student import FrozenDinov2

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             mlp_ratio=2, patch_size=14, image_size=56)).save_pretrained(
        tmp_path / "dinov2")
    frozen = FrozenDinov2(str(tmp_path / "dinov2"), local_files_only=True)   # by path, offline
    student = build_depth_model({"arch": "dpt", "size": "tiny"})
    image = torch.rand(2, 3, 42, 112)
    out = student(image, return_features=True)
    target = frozen(image)
    assert out["features"].shape == target.shape == (2, 3 * 8, 32)
    assert out["feature_grid"] == (3, 8)
    loss = semantic_cosine_loss(out["features"], target)
    loss.backward()
    assert 0 < float(loss.detach()) < 2
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    grads = [p.grad for p in student.net.backbone.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) > 0


# -- flips --------------------------------------------------------------------------------

class PixelDepth(nn.Module):
    """A 'network' whose depth is a per-pixel function of the image (1 + 9 * red):
    flip-equivariant, so undoing the student's flip must reproduce the teacher exactly."""

    def forward(self, image, return_features=False):
        red = image[:, :1] * 0.229 + 0.485                   # undo the ImageNet normalisation
        depth = 1.0 + 9.0 * red.clamp(0, 1)
        return {"depth": [depth], "scaled_disp": [1.0 / depth], "disp": [1.0 / depth]}


def _frozen(module):
    return module.eval().requires_grad_(False)


def _fake_teacher(depth_net, pose_net=None):
    from depth_perception.metadata import ModelMetadata
    from depth_perception.models.dpt_depth import DPTDepthConfig
    from depth_perception_training.train.student import Teacher

    if pose_net is None:
        from depth_perception.models import build_pose_model
        pose_net = build_pose_model({"backbone": "tiny"})
    return Teacher(_frozen(depth_net), DPTDepthConfig(size="tiny"), "dpt", _frozen(pose_net),
                   ModelMetadata(output_kind="metric_depth"), Path("."))


def _batch(day, student_image, flip, conditions):
    B, _, H, W = day.shape
    K = torch.tensor([[50.0, 0, (W - 1) / 2], [0, 50.0, (H - 1) / 2], [0, 0, 1]]).expand(B, 3, 3)
    return {"image": day, "context": torch.stack([day.roll(1, -1), day.roll(-1, -1)], 1),
            "student_image": student_image, "flip": torch.tensor(flip), "K": K,
            "student_condition": conditions}


def test_student_flip_is_undone_before_the_losses():
    from depth_perception_training.train.student import StudentObjective

    day = torch.rand(2, 3, 14, 28)
    objective = StudentObjective(_fake_teacher(PixelDepth()), [-1, 1], loss="distillation")
    flipped = _batch(day, day.flip(-1), [True, True], ["day-clear"] * 2)
    assert float(objective({"depth": PixelDepth()}, flipped).loss) == pytest.approx(0, abs=1e-7)
    ignored = _batch(day, day.flip(-1), [False, False], ["day-clear"] * 2)
    assert float(objective({"depth": PixelDepth()}, ignored).loss) > 0.05


# -- the teacher only ever sees the day-clear frame --------------------------------------

class Recorder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, *args, **kwargs):
        self.inputs.append([a.detach().clone() for a in args])
        return self.net(*args, **kwargs)


@pytest.fixture(scope="module")
def ssd_setup(tmp_path_factory):
    """Synthetic day-clear/night/rain bags of one drive, a 1-step tiny teacher trained on
    the day-clear bag, and `paired` translations of it."""
    return make_ssd_setup(tmp_path_factory.mktemp("ssd"))


def test_teacher_input_is_never_the_translated_frame(ssd_setup, tmp_path):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    cfg = load_config("student_tiny", student_overrides(
        ssd_setup, tmp_path / "run", "student.keep_probability=0.0"))   # always translated
    trainer, objective = build_student_trainer(cfg)
    objective.teacher.depth = Recorder(objective.teacher.depth)
    objective.teacher.pose = Recorder(objective.teacher.pose)
    batch = next(iter(trainer.train_loader))
    assert set(batch["student_condition"]) <= {"night", "rain"}
    # the translations really differ from the day frames the dataset pairs them with
    assert float((batch["student_image"] - batch["image"]).abs().mean()) > 0.05
    trainer.train_step(batch)
    day = objective.normalize(batch["image"])
    (seen,), = objective.teacher.depth.inputs
    assert torch.equal(seen, day)
    night_rain = objective.normalize(batch["student_image"])
    assert not torch.allclose(seen, night_rain, atol=0.05)
    # the pose net's pairs are made of the day target and the day context frames
    pose_frames = torch.cat([torch.cat(a) for a in objective.teacher.pose.inputs])
    day_frames = torch.cat([batch["image"], batch["context"].flatten(0, 1)])
    for frame in pose_frames:
        assert any(torch.equal(frame, d) for d in day_frames)


def test_a_run_counts_what_the_student_saw_per_condition(ssd_setup, tmp_path):
    """Night and rain translated into two folders: a run on both draws from both, and the
    counts per condition it logs (student_mixing.json) add up to the samples trained on."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import train_student
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    folders = []
    for c in ("night", "rain"):
        folders.append(tmp_path / f"paired_{c}")
        run_translate(load_translate_config("paired", [
            f"output_dir={folders[-1]}", f"source.bags=[{ssd_setup['bags']['day-clear']}]",
            f"conditions=[{c}]"]))
    out = tmp_path / "run"
    result = train_student(load_config("student_tiny", student_overrides(
        ssd_setup, out, "student.keep_probability=0.0", "trainer.max_steps=4",
        f"student.translations=[{folders[0]},{folders[1]}]")))
    written = json.loads((out / "student_mixing.json").read_text())
    assert written == result.mixing
    shown = written["shown"]
    assert set(shown) == {"day-clear", "night", "rain"}
    assert sum(shown.values()) == 4 * 2                          # 4 steps of batch 2
    assert shown["day-clear"] == 0 and shown["night"] > 0 and shown["rain"] > 0
    # every frame has both translations: P = 0 splits evenly
    assert written["expected"] == pytest.approx({"day-clear": 0.0, "night": 0.5, "rain": 0.5})


def test_cached_teacher_outputs_give_the_same_run(ssd_setup, tmp_path):
    """student.cache_teacher: after the first epoch the frozen teacher no longer runs (its
    outputs per sample are put together from the cache), and the run's losses and
    weights are those of a run that computes them at every step, bit for bit."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    def run(cache):
        cfg = load_config("student_tiny", student_overrides(
            ssd_setup, tmp_path / f"cache_{cache}", "trainer.max_steps=10",
            f"student.cache_teacher={cache}"))
        trainer, objective = build_student_trainer(cfg)
        objective.teacher.depth = Recorder(objective.teacher.depth)
        trainer.fit()
        weights = {k: v.clone() for k, v in trainer.models["depth"].state_dict().items()}
        return ([r["loss"] for r in trainer.history], weights,
                len(objective.teacher.depth.inputs), objective.teacher_cache)

    losses, weights, calls, cache = run(True)
    plain_losses, plain_weights, plain_calls, no_cache = run(False)
    assert no_cache is None and plain_calls == 10
    assert len(cache) == 8 and calls < 10           # 8 samples, 4 batches an epoch
    assert losses == plain_losses
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)


# -- a teacher-initialised student starts as the teacher ----------------------------------

def test_teacher_copy_with_frozen_batchnorm_computes_the_teachers_output(ssd_setup, tmp_path):
    """student_tiny (init: teacher, freeze_batchnorm): in training mode, on a batch that
    mixes day and translated frames, the student's depth of its day frames is the
    teacher's; a step changes BatchNorm scale/shift but not its running statistics.
    With batch statistics (freeze_batchnorm=false) the same day frames come out
    otherwise, which is what the option is for."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import (FrozenStatsBatchNorm2d,
                                                         build_student_trainer)

    def first_step(freeze):
        cfg = load_config("student_tiny", student_overrides(
            ssd_setup, tmp_path / f"bn_{freeze}", "data.batch_size=4",
            "student.keep_probability=0.5", f"student.freeze_batchnorm={freeze}"))
        trainer, objective = build_student_trainer(cfg)
        trainer._set_train(True)
        batch = next(iter(trainer.train_loader))
        day = objective.normalize(batch["image"])
        mixed = torch.cat([day[:2], objective.normalize(batch["student_image"][2:])])
        assert float((mixed[2:] - day[2:]).abs().mean()) > 0     # not all day frames
        net = trainer.models["depth"]
        with torch.no_grad():
            student = net(mixed)["depth"][0][:2]
            teacher = objective.teacher.depth(day[:2])["depth"][0]
        return trainer, batch, net, float(((student - teacher).abs() / teacher).max())

    trainer, batch, net, gap = first_step(True)
    assert gap < 1e-5
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenStatsBatchNorm2d) and not m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    scales = [m.weight.detach().clone() for m in bns]
    trainer.train_step(batch)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(bns, stats))
    assert any(not torch.equal(m.weight, w) for m, w in zip(bns, scales))
    assert first_step(False)[3] > 1e-3


# -- an interrupted run resumes ----------------------------------------------------------

class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_interrupted_student_run_resumes_to_the_same_steps_and_losses(ssd_setup, tmp_path):
    """A student run dies in step 3 after its step-2 checkpoint; ``--resume`` continues
    from that checkpoint and ends at step 4 with the losses of an uninterrupted run
    (weights, optimizer, RNG and the position in the epoch restored; the frozen teacher
    is rebuilt from the config)."""
    from depth_perception_training.train.checkpoint import list_checkpoints
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    def run(out, *extra):
        cfg = load_config("student_tiny", student_overrides(
            ssd_setup, out, "trainer.max_steps=4", "trainer.checkpoint_every=2", *extra))
        return build_student_trainer(cfg)[0]

    full = run(tmp_path / "full").fit()
    split = run(tmp_path / "split")
    objective = split.loss_fn

    def dies_in_step_3(models, batch):
        if split.state.step == 2:
            raise Interrupted
        return objective(models, batch)

    split.loss_fn = dies_in_step_3
    with pytest.raises(Interrupted):
        split.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step_00000002"]
    resumed = run(tmp_path / "split", "trainer.resume=auto").fit()
    assert resumed.step == full.step == 4
    log = [json.loads(line) for line in
           (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in full.history],
                               rtol=1e-5)
    assert [r["terms"]["translated_fraction"] for r in log] == \
        [float(r["terms"]["translated_fraction"]) for r in full.history]


# -- Table 3 configurations ---------------------------------------------------------------

TABLE3_CPU = {   # what makes each GPU configuration CPU-sized: tiny nets, no downloads
    # rows 4-5 (ssd_student.yaml): the student net at 112x56, the losses at 128x64 (a
    # scaled-down SSD 784x518 / 576x320); the teacher sees its own 128x64
    "dpt": ["model.depth.size=tiny", "model.depth.pretrained=null", "model.init_depth=10.0",
            "data.depth_width=112", "data.depth_height=56"],
    "mono": ["model.depth.encoder=tiny", "model.depth.pretrained=null",
             "data.width=128", "data.height=64"],
}


@pytest.mark.slow
def test_every_table3_configuration_runs_a_few_steps(ssd_setup, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    torch.manual_seed(0)
    dinov2 = tmp_path / "dinov2"    # the frozen semantic encoder: same widths as 'tiny'
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                             mlp_ratio=2, patch_size=14, image_size=224)).save_pretrained(dinov2)
    seen = {}
    for row in range(6):
        name = f"ssd_table3_row{row}"
        probe = load_config(name)
        arch = probe.model.depth.arch
        overrides = student_overrides(ssd_setup, tmp_path / name, "student.translator=null",
                                       f"student.semantic.encoder={dinov2}",
                                       "student.semantic.local_files_only=true",
                                       *TABLE3_CPU[arch])
        trainer, objective = build_student_trainer(load_config(name, overrides))
        before = [p.detach().clone() for p in trainer.models["depth"].parameters()]
        sizes = []
        trainer.models["depth"].register_forward_pre_hook(
            lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
        batches = iter(trainer.train_loader)
        records = [trainer.train_step(next(batches)) for _ in range(2)]
        assert set(sizes) == ({(56, 112)} if arch == "dpt" else {(64, 128)}), name
        terms = records[-1]["terms"]
        assert all(np.isfinite(r["loss"]) and not r["skipped"] for r in records)
        assert ("mask_fraction" in terms) == (probe.student.loss == "teacher")
        assert ("semantic" in terms) == (probe.student.semantic.weight > 0)
        after = list(trainer.models["depth"].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before))      # it learns
        seen[row] = (arch, probe.student.loss, probe.student.semantic.weight > 0,
                     probe.student.translator)
    # the rows differ as SSD Table 3 does
    assert [s[0] for s in seen.values()] == ["mono"] * 4 + ["dpt"] * 2
    assert [s[1] for s in seen.values()] == ["distillation"] * 3 + ["teacher"] * 3
    assert [s[2] for s in seen.values()] == [False] * 5 + [True]
    assert seen[0][3] == "photometric" and {s[3] for s in list(seen.values())[1:]} == {"gdt"}


def test_translator_named_in_the_config_must_match_the_manifest(ssd_setup, tmp_path):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import build_student_trainer

    cfg = load_config("student_tiny", student_overrides(ssd_setup, tmp_path / "run",
                                                        "student.translator=gdt"))
    with pytest.raises(ValueError, match="made by \\['paired'\\]"):
        build_student_trainer(cfg)


# -- a finished run deploys itself ----------------------------------------------------------

@pytest.mark.slow
def test_finished_student_exports_onnx_that_the_runtime_runs(ssd_setup, tmp_path):
    from depth_perception.metadata import ModelMetadata
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import train_student

    out = tmp_path / "run"
    result = train_student(load_config("student_tiny", student_overrides(
        ssd_setup, out, "student.export_onnx=true",
        f"data.val_bags=[{ssd_setup['bags']['night']}]", "trainer.val_every=0")))
    assert set(result.validation) >= {"all", "night"}          # per-condition validation
    written = json.loads((out / "deployable.json").read_text())
    assert Path(written["onnx"]) == out / "model.onnx" and written["onnx_max_rel_error"] < 1e-3
    assert "TensorRT" in written["engine"]                      # not here: says why
    meta = read_onnx_metadata(out / "model.onnx")
    assert meta.provenance["task"] == "student" and meta.input_width == SIZE[0]
    seq = BagSequence(ssd_setup["bags"]["night"], SampleConfig(offsets=(), skip_static=False))
    estimator = DepthEstimator.load(str(out / "model.onnx"))
    depth = estimator.estimate(seq.frame(0), seq.intrinsics).depth
    assert depth.shape == (SIZE[1], SIZE[0]) and np.isfinite(depth).mean() > 0.5
    # the checkpoint folder records the training geometry as the teacher's does, so the
    # torch backend at its defaults feeds the network what the ONNX file is fixed to
    # (without it the runtime resized the frames to a 518 px short side)
    folder = ModelMetadata.load(out / "model" / "metadata.json")
    teacher = ModelMetadata.load(Path(ssd_setup["teacher"]) / "model" / "metadata.json")
    assert (folder.train_width, folder.train_height) == SIZE
    assert folder.train_focal_px == pytest.approx(teacher.train_focal_px) and \
        folder.train_focal_px > 0
    with DepthEstimator.load(str(out / "model"), backend="torch") as from_folder:
        folder_depth = from_folder.estimate(seq.frame(0), seq.intrinsics).depth
    ok = np.isfinite(depth) & np.isfinite(folder_depth)
    assert np.abs(folder_depth[ok] / depth[ok] - 1).max() < 1e-3


@pytest.mark.slow
def test_teacher_trained_with_a_weight_average_is_loaded_averaged(ssd_setup, tmp_path):
    """A teacher run with trainer.ema_decay: its exported depth net and the pose net the
    student loads are the averaged weights, not the last step's."""
    import torch
    from safetensors.torch import load_file

    from depth_perception_training.train.checkpoint import latest_checkpoint
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import load_teacher
    from depth_perception_training.train.teacher import train_teacher

    run = tmp_path / "teacher_ema"
    train_teacher(load_config("teacher_tiny", [
        f"output_dir={run}", f"data.bags=[{ssd_setup['bags']['day-clear']}]",
        "trainer.max_steps=3", "trainer.ema_decay=0.9", f"data.width={SIZE[0]}",
        f"data.height={SIZE[1]}", "data.batch_size=2", "trainer.val_every=-1",
        "trainer.checkpoint_every=0", "trainer.progress=false"]))
    ckpt = latest_checkpoint(run)
    averaged, last = load_file(str(ckpt / "ema_pose.safetensors")), load_file(
        str(ckpt / "model_1.safetensors"))
    assert averaged.keys() == last.keys()
    moved = [k for k in last if last[k].is_floating_point()
             and not torch.equal(averaged[k], last[k])]
    assert moved, "the average equals the last step's weights"
    teacher = load_teacher(run)
    for k, v in teacher.pose.state_dict().items():
        torch.testing.assert_close(v, averaged[k])
    depth_avg = load_file(str(ckpt / "ema_depth.safetensors"))
    for k, v in teacher.depth.state_dict().items():
        torch.testing.assert_close(v, depth_avg[k])
