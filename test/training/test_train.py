"""Trainer: exact resume, NaN/Inf guard, validation, checkpoints, export; the teacher
command end to end (single process and 2-process DDP over gloo)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from depth_perception_training.train import checkpoint as ckpt
from depth_perception_training.train.config import OptimConfig, TrainerConfig
from depth_perception_training.train.trainer import (EpochShuffleSampler, SeededDataset, StepOutput,
                                            Trainer, build_train_loader, build_val_loader,
                                            seed_everything)

REPO = Path(__file__).resolve().parents[2]


# -- tiny stand-ins for the real collaborators --------------------------------------------

class NoisyLinearData(torch.utils.data.Dataset):
    """y = x . w_true, with random augmentation drawn from the *global* RNGs (as a real
    dataset's colour jitter would), so exact resume depends on the trainer's seeding."""

    def __init__(self, n=12):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        jitter = 0.01 * torch.randn(4) + 0.01 * float(np.random.rand())
        return {"x": self.x[i] + jitter, "y": self.y[i],
                "gt_depth": torch.full((1, 2, 2), 2.0 + float(i % 3)), "condition": "day-clear"}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.2)          # consumes the torch RNG in training
        self.decoder = nn.Linear(8, 1)

    def forward(self, x):
        return self.decoder(self.drop(torch.tanh(self.encoder(x)))).squeeze(-1)


def mse_loss(models, batch):
    pred = models["net"](batch["x"])
    noise = 1e-3 * torch.randn_like(pred)   # like monodepth2's tie-break noise
    loss = ((pred + noise - batch["y"]) ** 2).mean()
    return StepOutput(loss, {"mse": loss.detach()})


def predict_const(models, batch):
    # depth 2.0 everywhere: abs_rel vs gt (2, 3, 4) is known
    return torch.full_like(batch["gt_depth"], 2.0)


def make_trainer(out, max_steps, loss_fn=mse_loss, resume=None, val=False, export_fn=None,
                 **cfg):
    seed_everything(7)
    net = Net()
    ds = NoisyLinearData()
    loader = build_train_loader(ds, batch_size=4, seed=7)
    settings = dict(max_steps=max_steps, log_every=1, image_every=0, val_every=-1,
                    checkpoint_every=0, keep_checkpoints=2, resume=resume, progress=False)
    tcfg = TrainerConfig(**{**settings, **cfg})
    ocfg = OptimConfig(name="adamw", lr_encoder=1e-2, lr_decoder=5e-2, step_size=1, gamma=0.5,
                       interval="epoch", grad_clip=10.0)
    groups = [{"name": "encoder", "params": list(net.encoder.parameters()), "lr": ocfg.lr_encoder},
              {"name": "decoder", "params": list(net.decoder.parameters()), "lr": ocfg.lr_decoder}]
    val_loader = build_val_loader(NoisyLinearData(6), batch_size=3) if val else None
    return Trainer(tcfg, ocfg, {"net": net}, groups, loader, loss_fn, out,
                   val_loader=val_loader, predict_fn=predict_const if val else None,
                   export_fn=export_fn, config_yaml="seed: 7\n")


def weights(trainer):
    m = trainer.accelerator.unwrap_model(trainer.models["net"])
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


# -- tests ----------------------------------------------------------------------------------

def test_sampler_and_seeded_dataset_are_functions_of_seed_epoch_index():
    s = EpochShuffleSampler(10, seed=3)
    e0 = list(s)
    assert sorted(e0) == list(range(10)) and list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0
    ds = SeededDataset(NoisyLinearData(), seed=3)
    a = ds[5]["x"]
    torch.randn(100)                              # global RNG moves on ...
    assert torch.equal(ds[5]["x"], a)             # ... the sample does not
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["x"], a)         # a new epoch draws new augmentation
    state = torch.get_rng_state()
    ds[2]
    assert torch.equal(torch.get_rng_state(), state)   # the trainer's RNG is untouched


def test_resume_continues_exactly(tmp_path):
    # 12 samples / batch 4 = 3 steps per epoch; StepLR halves the lr every epoch
    full = make_trainer(tmp_path / "full", 8).fit()
    assert full.step == 8 and full.epoch == 2 and full.nan_skips == 0
    first = make_trainer(tmp_path / "split", 4).fit()          # stops mid-epoch 1
    assert first.last_checkpoint.name == "step_00000004"
    state = ckpt.TrainerState.load(first.last_checkpoint / ckpt.STATE_FILE)
    assert (state.step, state.epoch, state.batch_in_epoch) == (4, 1, 1)
    resumed_trainer = make_trainer(tmp_path / "split", 8, resume="auto")
    resumed = resumed_trainer.fit()
    losses_full = [r["loss"] for r in full.history]
    losses_split = [r["loss"] for r in first.history] + [r["loss"] for r in resumed.history]
    assert [r["step"] for r in resumed.history] == [5, 6, 7, 8]
    np.testing.assert_allclose(losses_split, losses_full, rtol=1e-6, atol=1e-8)
    # learning rates after resume follow the same schedule (epoch 2: 1e-2 * 0.25)
    assert resumed.history[-1]["lr"] == full.history[-1]["lr"]
    assert resumed.history[-1]["lr"]["encoder"] == pytest.approx(1e-2 * 0.25)
    # the losses actually depend on the restored state: a fresh run from step 0 differs
    assert not np.allclose(losses_full[4:], losses_full[:4])


def test_resume_without_restored_state_would_differ(tmp_path):
    """Guards the test above: not restoring the RNG/data position changes the losses."""
    full = make_trainer(tmp_path / "full", 6).fit()
    make_trainer(tmp_path / "split", 3).fit()
    t = make_trainer(tmp_path / "split", 6, resume="auto")
    torch.manual_seed(999)                       # perturb after construction, before fit
    resumed = t.fit()                             # fit restores the RNG from the checkpoint
    np.testing.assert_allclose([r["loss"] for r in resumed.history],
                               [r["loss"] for r in full.history[3:]], rtol=1e-6)
    # whereas continuing the weights alone with another RNG stream gives other losses
    t2 = make_trainer(tmp_path / "other", 3)
    t2.fit()
    torch.manual_seed(999)
    t2.state.step = 3
    out = [t2.train_step(b)["loss"] for b, _ in zip(t2.train_loader, range(3))]
    assert not np.allclose(out, [r["loss"] for r in full.history[3:]], rtol=1e-6)


def test_nan_loss_skips_update_and_is_counted(tmp_path):
    calls = {"n": 0}

    def loss_with_nan(models, batch):
        calls["n"] += 1
        out = mse_loss(models, batch)
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    t = make_trainer(tmp_path / "nan", 3, loss_fn=loss_with_nan)
    t.resume(None)
    it = iter(t.train_loader)
    t.train_step(next(it))
    w1 = weights(t)
    rec = t.train_step(next(it))
    assert rec["skipped"] and t.state.nan_skips == 1
    for k, v in weights(t).items():
        assert torch.equal(v, w1[k]), k                     # no update at all
    rec = t.train_step(next(it))
    assert not rec["skipped"] and t.state.nan_skips == 1
    assert any(not torch.equal(v, w1[k]) for k, v in weights(t).items())


def test_non_finite_gradient_with_finite_loss_is_skipped(tmp_path):
    def sqrt_at_zero(models, batch):
        pred = models["net"](batch["x"])
        loss = torch.sqrt(pred.sum() * 0.0)      # loss 0, gradient 0 * inf = NaN
        return StepOutput(loss, {})

    t = make_trainer(tmp_path / "inf", 1, loss_fn=sqrt_at_zero)
    w0 = weights(t)
    result = t.fit()
    assert result.nan_skips == 1 and result.history[0]["skipped"]
    assert all(torch.equal(v, w0[k]) for k, v in weights(t).items())
    lines = (tmp_path / "inf" / "train_log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["nan_skips"] == 1


def test_validation_export_and_checkpoint_pruning(tmp_path):
    exported = []

    def export(models, folder):
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(models["net"].state_dict(), folder / "net.pt")
        exported.append(folder)

    t = make_trainer(tmp_path / "run", 7, val=True, export_fn=export, checkpoint_every=2)
    t.config.val_every = 3
    state = torch.get_rng_state()
    assert t.validate()["all"]["n_images"] == 6
    assert torch.equal(torch.get_rng_state(), state)    # validation leaves the RNG alone
    result = t.fit()
    # gt 2, 3, 4 (by index % 3) vs prediction 2: abs_rel per image 0, 1/3, 1/2
    val = result.validation["all"]
    assert val["n_images"] == 6
    assert val["abs_rel"] == pytest.approx((0 + 1 / 3 + 1 / 2) * 2 / 6)
    assert result.validation["day-clear"]["abs_rel"] == pytest.approx(val["abs_rel"])
    # checkpoints every 2 steps + the final one, newest 2 kept
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["step_00000006", "step_00000007"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp_*"))
    assert (tmp_path / "run" / "checkpoints" / "step_00000007" / "config.yaml").read_text() == "seed: 7\n"
    assert exported == [tmp_path / "run" / "model"]
    assert (tmp_path / "run" / "tensorboard").is_dir()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_ema_update_is_the_warmed_up_average_worked_by_hand():
    from torch.optim.swa_utils import AveragedModel

    from depth_perception_training.train.ema import ema_update

    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    avg = AveragedModel(net, use_buffers=True, multi_avg_fn=ema_update(0.9))
    w = net[0].weight
    expected = []
    for value in (1.0, 3.0, 0.0):
        with torch.no_grad():
            w.fill_(value)
        net(torch.randn(4, 1))                     # BatchNorm counts a batch
        avg.update_parameters(net)
        expected.append(avg.module[0].weight.item())
    # n=0 copies; n=1: decay min(0.9, 2/11); n=2: decay min(0.9, 3/12)
    assert expected == pytest.approx([1.0, 2 / 11 * 1 + 9 / 11 * 3, 0.25 * 29 / 11])
    assert int(avg.module[1].num_batches_tracked) == 3       # integer buffers are copied
    for _ in range(200):                            # after warm-up the decay is 0.9
        avg.update_parameters(net)
    before = avg.module[0].weight.item()
    with torch.no_grad():
        w.fill_(10.0)
    avg.update_parameters(net)
    assert avg.module[0].weight.item() == pytest.approx(0.9 * before + 0.1 * 10.0)


def test_ema_is_what_validation_and_export_use_and_resumes_exactly(tmp_path):
    from safetensors import safe_open

    exported, validated = {}, []

    def export(models, folder):
        exported.update({k: v.clone() for k, v in models["net"].state_dict().items()})

    def predict(models, batch):
        validated.append(models["net"])
        return torch.full_like(batch["gt_depth"], 2.0)

    full = make_trainer(tmp_path / "full", 8, export_fn=export, ema_decay=0.5, val=True,
                        val_every=0)
    full.predict_fn = predict
    result = full.fit()
    average = {k: v.clone() for k, v in full.ema["net"].module.state_dict().items()}
    raw = weights(full)
    assert validated and all(m is full.ema["net"].module for m in validated)  # on the average
    for k in average:                                          # export wrote the average ...
        torch.testing.assert_close(exported[k], average[k])
    assert not torch.allclose(average["decoder.weight"], raw["decoder.weight"])  # ... not the last
    with safe_open(str(result.last_checkpoint / "ema_net.safetensors"), "pt") as f:
        assert f.metadata()["n_averaged"] == "8"
    # stop at 4, resume to 8: the average equals the uninterrupted run's
    make_trainer(tmp_path / "split", 4, ema_decay=0.5).fit()
    resumed = make_trainer(tmp_path / "split", 8, ema_decay=0.5, resume="auto")
    resumed.fit()
    for k, v in resumed.ema["net"].module.state_dict().items():
        torch.testing.assert_close(v, average[k])
    with pytest.raises(ValueError, match="ema_decay"):
        make_trainer(tmp_path / "bad", 2, ema_decay=1.0)


# -- the teacher task ------------------------------------------------------------------------

def test_teacher_poses_follow_the_time_ordering_and_inversion_rule():
    from depth_perception_training.train.teacher import TeacherObjective

    class FixedPose(nn.Module):
        """Says 'the later camera sits 1 m behind along z': T_later_earlier = [I | (0,0,-1)]."""

        def forward(self, earlier, later, pairs=1):
            self.seen = (earlier, later)
            self.pairs = pairs
            B = earlier.shape[0]
            return torch.zeros(B, 1, 3), torch.tensor([0.0, 0.0, -1.0]).expand(B, 1, 3).clone()

    obj = TeacherObjective(loss=None, offsets=[-1, 1])
    target = torch.zeros(2, 3, 4, 4)
    context = torch.stack([torch.full((2, 3, 4, 4), -1.0), torch.full((2, 3, 4, 4), 1.0)], 1)
    net = FixedPose()
    T, t = obj.poses(net, target, context)
    assert net.pairs == 2                     # each frame pair runs through the net on its own
    assert T.shape == (2, 2, 4, 4) and t.shape == (2, 2, 3)
    earlier, later = net.seen
    # offset -1: pair (source, target); offset +1: pair (target, source)
    assert torch.all(earlier[:2] == -1) and torch.all(later[:2] == 0)
    assert torch.all(earlier[2:] == 0) and torch.all(later[2:] == 1)
    # offset +1: T_src_tgt = T_later_earlier as is; offset -1: inverted
    np.testing.assert_allclose(T[:, 1, :3, 3].numpy(), [[0, 0, -1]] * 2, atol=1e-6)
    np.testing.assert_allclose(T[:, 0, :3, 3].numpy(), [[0, 0, 1]] * 2, atol=1e-6)
    np.testing.assert_allclose(torch.linalg.vector_norm(t, dim=-1).numpy(), 1.0)
    with pytest.raises(ValueError, match="offsets"):
        TeacherObjective(loss=None, offsets=[0, 1])


def test_freeze_unused_parameters_only_freezes_what_gets_no_gradient():
    from depth_perception_training.train.teacher import freeze_unused_parameters

    class PartlyUsed(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return {"out": [self.drop(self.used(x))]}

    m = PartlyUsed().train()
    state = torch.get_rng_state()
    names = freeze_unused_parameters(m, torch.ones(4, 3))
    assert sorted(names) == ["unused.bias", "unused.weight"]
    assert all(p.requires_grad for p in m.used.parameters())
    assert m.training and all(p.grad is None for p in m.parameters())
    assert torch.equal(torch.get_rng_state(), state)     # probed in eval mode: no RNG used


def test_reset_random_layers_gives_a_tiny_dpt_a_usable_output_range():
    from depth_perception.models import build_depth_model, depth_config

    torch.manual_seed(0)
    arch, cfg = depth_config({"arch": "dpt", "size": "tiny"})
    net = build_depth_model(cfg)
    x = torch.randn(1, 3, 28, 56)
    with torch.no_grad():
        before = net(x)["disp"][0]
        assert float(before.std()) < 1e-4            # transformers init: flat sigmoid output
        assert net.reset_random_layers() > 10
        after = net(x)["disp"][0]
    assert float(after.std()) > 1e-3


def test_set_initial_depth_makes_an_untrained_head_predict_that_depth():
    from depth_perception.models import build_depth_model, depth_config
    from depth_perception_training.train.teacher import set_initial_depth

    arch, cfg = depth_config({"arch": "dpt", "size": "tiny", "min_depth": 0.1, "max_depth": 80.0})
    net = build_depth_model(cfg)
    bias = set_initial_depth(net, cfg, 10.0)
    # sigmoid value s with 1 / (1/80 + (1/0.1 - 1/80) s) = 10  ->  s = 0.0875 / 9.9875
    assert bias == pytest.approx(math.log(0.0875 / (9.9875 - 0.0875)), rel=1e-9)
    with torch.no_grad():
        net.net.head.conv3.weight.zero_()           # output = sigmoid(bias) everywhere
        depth = net(torch.randn(1, 3, 28, 56))["depth"][0]
    np.testing.assert_allclose(depth.numpy(), 10.0, rtol=1e-4)
    with pytest.raises(ValueError, match="inside"):
        set_initial_depth(net, cfg, 100.0)


def test_set_initial_motion_points_an_untrained_pose_net_along_the_drive():
    """Started at forward motion, the untrained pose net's T_src_tgt for frames t-1 and
    t+1 points the way the synthetic vehicle really moved (a sign slip would flip it)."""
    from depth_perception.synth import SynthConfig, SyntheticStreet
    from depth_perception.models import build_pose_model
    from depth_perception_training.train.teacher import TeacherObjective, set_initial_motion

    torch.manual_seed(0)
    pose = build_pose_model({"backbone": "tiny"})
    assert set_initial_motion(pose, 0.5) == pytest.approx(-50.0)
    with torch.no_grad():
        pose.decoder.out.weight.zero_()             # output = bias for any input
        objective = TeacherObjective(loss=None, offsets=[-1, 1])
        T, t = objective.poses(pose, torch.rand(1, 3, 64, 64), torch.rand(1, 2, 3, 64, 64))
    street = SyntheticStreet(SynthConfig(size=(64, 32), seed=0), frames=4)
    for i, offset in enumerate((-1, 1)):
        truth = street.T_src_tgt(1 + offset, 1)[:3, 3]
        predicted = T[0, i, :3, 3].numpy()
        np.testing.assert_allclose(predicted, [0.0, 0.0, -0.5 * offset], atol=1e-6)
        cos = predicted @ truth / (np.linalg.norm(predicted) * np.linalg.norm(truth))
        assert cos > 0.95, (offset, predicted, truth)
    np.testing.assert_allclose(T[0, :, :3, :3].numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)),
                               atol=1e-6)
    with pytest.raises(ValueError, match="> 0"):
        set_initial_motion(pose, 0.0)


def test_pose_net_runs_each_pair_group_on_its_own():
    """In training mode BatchNorm normalises with batch statistics: a stacked forward with
    ``pairs=2`` equals two separate forwards, and differs from one shared forward."""
    from depth_perception.models import build_pose_model

    torch.manual_seed(0)
    net = build_pose_model({"backbone": "tiny"}).train()
    a, b = torch.rand(4, 3, 64, 96), torch.rand(4, 3, 64, 96)
    a[2:] *= 0.3                                # the second pair group looks different
    aa, tt = net(a, b, pairs=2)
    aa0, tt0 = net(a[:2], b[:2])
    aa1, tt1 = net(a[2:], b[2:])
    torch.testing.assert_close(aa, torch.cat([aa0, aa1]))
    torch.testing.assert_close(tt, torch.cat([tt0, tt1]))
    shared_a, _ = net(a, b)
    assert not torch.allclose(shared_a, aa)
    with pytest.raises(ValueError, match="equal groups"):
        net(a[:3], b[:3], pairs=2)


@pytest.fixture(scope="module")
def synth_bags(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("synth")
    train = make_synthetic_bags(root / "train", frames=8, size=(160, 64),
                                conditions=("day-clear",), seed=0)
    val = make_synthetic_bags(root / "val", frames=4, size=(160, 64),
                              conditions=("day-clear",), seed=5)
    return train, val


def _teacher_cmd(out, bags, val, *extra):
    return ["train", "teacher", "--config", str(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"),
            *[e for e in extra if e.startswith("--")],
            f"output_dir={out}", f"data.bags=[{','.join(map(str, bags))}]",
            f"data.val_bags=[{','.join(map(str, val))}]", "trainer.checkpoint_every=0",
            "trainer.val_every=0", "data.width=160", "data.height=64", "data.batch_size=2",
            "model.depth.encoder=tiny", *[e for e in extra if not e.startswith("--")]]


@pytest.mark.slow
def test_teacher_command_trains_resumes_and_exports(tmp_path, synth_bags):
    from depth_perception.cli import main
    from depth_perception.models import load_depth_model

    train, val = synth_bags
    out = tmp_path / "run"
    assert main(_teacher_cmd(out, train, val, "trainer.max_steps=2")) == 0
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) and {"photometric", "smoothness", "velocity"} <= set(r["terms"])
               for r in log)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002"]
    assert "max_steps: 2" in (out / "config.yaml").read_text()
    # the exported model is what node / evaluate / export load
    model, meta = load_depth_model(out / "model")
    assert meta.output_kind == "metric_depth" and meta.provenance["step"] == 2
    with torch.no_grad():
        depth = model(torch.zeros(1, 3, 64, 160))
    assert depth.shape == (1, 1, 64, 160)
    assert float(depth.min()) >= meta.min_depth and float(depth.max()) <= meta.max_depth
    # --resume continues at step 3 from the checkpoint
    assert main(_teacher_cmd(out, train, val, "--resume", "trainer.max_steps=3")) == 0
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002", "step_00000003"]


def test_teacher_without_bags_names_the_key_and_makes_no_data(tmp_path, capsys):
    from depth_perception.cli import main

    out = tmp_path / "nobags"
    rc = main(["train", "teacher", "--config", str(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"),
               f"output_dir={out}", "trainer.max_steps=1"])
    assert rc == 2
    assert "data.bags" in capsys.readouterr().err
    assert not list(out.rglob("metadata.yaml"))          # training never generates bags


@pytest.mark.slow
def test_validation_scores_the_prior_of_the_training_bags(tmp_path, synth_bags):
    """In-training validation adds the image-blind prior (per-pixel median ground truth
    of the training bags) and structure-pixel abs_rel, capped at 80 m."""
    from depth_perception.cli import main

    train, val = synth_bags
    out = tmp_path / "prior"
    assert main(_teacher_cmd(out, train, val, "trainer.max_steps=1")) == 0
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    cfg = load_config(out / "config.yaml", ["trainer.resume=null", f"output_dir={tmp_path / 'v'}"])
    trainer = build_teacher_trainer(cfg)
    assert trainer.max_depth == 80.0 and trainer.median_scaling is False
    summary = trainer.validate()
    prior = summary["prior"]
    assert 0.0 < prior["abs_rel"] < 1.0
    # by definition the prior's error exceeds 20 % on its structure pixels
    assert prior["abs_rel_structure"] > 0.2
    assert np.isfinite(summary["all"]["abs_rel_structure"])


def test_teacher_bad_input_is_a_clear_error(tmp_path, capsys):
    from depth_perception.cli import main

    rc = main(["train", "teacher", "--config", str(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"),
               f"output_dir={tmp_path}", f"data.bags=[{tmp_path / 'missing_bag'}]"])
    assert rc == 2
    assert "missing_bag" in capsys.readouterr().err
    rc = main(["train", "teacher", "--config", str(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"),
               f"output_dir={tmp_path}", f"data.bags=[{tmp_path}]", "data.width=100"])
    assert rc == 2
    assert "multiples of 32" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_write_one_checkpoint(tmp_path, synth_bags):
    train, val = synth_bags
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    # accelerate's --cpu launcher needs mpirun for several processes; its torchrun launcher
    # with trainer.cpu=true gives DDP over gloo (training/depth_perception_training/config/accelerate/cpu_ddp.yaml)
    cmd = [str(accelerate), "launch", "--config_file",
           str(REPO / "training/depth_perception_training/config/accelerate/cpu_ddp.yaml"), "--num_processes", "2",
           "--main_process_port", str(_free_port()), "-m", "depth_perception.cli",
           *_teacher_cmd(out, train, val, "trainer.max_steps=2", "data.batch_size=2",
                         "trainer.cpu=true")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ck = ckpt.list_checkpoints(out)
    assert [p.name for p in ck] == ["step_00000002"]
    # one RNG state per process, one set of weights
    assert (ck[0] / "random_states_0.pkl").is_file() and (ck[0] / "random_states_1.pkl").is_file()
    assert (ck[0] / "model.safetensors").is_file()
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]           # only the main process logs
    assert "trained 2 steps" in proc.stdout
    assert "MULTI_CPU" in proc.stderr and "2 processes" in proc.stderr


# -- learning-rate schedule ------------------------------------------------------------------

def test_linear_schedule_decays_per_step_worked_by_hand(tmp_path):
    """optim.scheduler=linear over 10 updates: update n uses lr (1 - n/10): at n = 0 the
    full rate (1e-2 / 5e-2), at n = 5 half (5e-3 / 2.5e-2), at the last (n = 9) a tenth
    (1e-3 / 5e-3); after the run the rate is 0. The epoch boundaries (3 batches an epoch)
    do not step it."""
    seed_everything(7)
    net = Net()
    loader = build_train_loader(NoisyLinearData(), batch_size=4, seed=7)
    ocfg = OptimConfig(name="adamw", lr_encoder=1e-2, lr_decoder=5e-2, scheduler="linear",
                       interval="step")
    groups = [{"name": "encoder", "params": list(net.encoder.parameters()), "lr": 1e-2},
              {"name": "decoder", "params": list(net.decoder.parameters()), "lr": 5e-2}]
    used = []

    def loss_fn(models, batch):
        used.append([g["lr"] for g in trainer.optimizer.param_groups])
        return mse_loss(models, batch)

    trainer = Trainer(TrainerConfig(max_steps=10, log_every=0, image_every=0, val_every=-1,
                                    checkpoint_every=0, progress=False),
                      ocfg, {"net": net}, groups, loader, loss_fn, tmp_path)
    trainer.fit()
    assert len(used) == 10
    assert used[0] == pytest.approx([1e-2, 5e-2])
    assert used[5] == pytest.approx([5e-3, 2.5e-2])
    assert used[9] == pytest.approx([1e-3, 5e-3])
    assert trainer.history[-1]["lr"] == pytest.approx({"encoder": 0.0, "decoder": 0.0})
    with pytest.raises(ValueError, match="interval=step"):
        Trainer(TrainerConfig(max_steps=2, progress=False),
                OptimConfig(scheduler="linear", interval="epoch"), {"net": Net()},
                [{"name": "all", "params": list(Net().parameters()), "lr": 1e-3}],
                build_train_loader(NoisyLinearData(), batch_size=4), mse_loss, tmp_path / "b")

