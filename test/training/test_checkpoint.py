"""Checkpoints: what is saved, atomic naming, pruning, resume resolution, restore."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from depth_perception_training.train import checkpoint as ckpt
from depth_perception_training.train.config import TrainerConfig
from depth_perception_training.train.trainer import make_accelerator


def fake_checkpoint(run, step, complete=True):
    d = ckpt.checkpoints_dir(run) / ckpt.checkpoint_name(step)
    d.mkdir(parents=True)
    if complete:
        (d / ckpt.STATE_FILE).write_text(ckpt.TrainerState(step=step).to_json())
    return d


def test_names_listing_and_pruning(tmp_path):
    for s in (5, 100, 20):
        fake_checkpoint(tmp_path, s)
    fake_checkpoint(tmp_path, 200, complete=False)           # killed while writing
    (ckpt.checkpoints_dir(tmp_path) / ".tmp_step_00000300").mkdir()
    assert ckpt.checkpoint_name(20) == "step_00000020"
    # numeric order, incomplete and temporary folders ignored
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == \
        ["step_00000005", "step_00000020", "step_00000100"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000100"
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step_00000005"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000020", "step_00000100"]
    assert ckpt.prune_checkpoints(tmp_path, keep=0) == []


def test_resolve_resume(tmp_path):
    assert ckpt.resolve_resume(None, tmp_path) is None
    assert ckpt.resolve_resume("none", tmp_path) is None
    assert ckpt.resolve_resume("auto", tmp_path) is None          # fresh run
    c10 = fake_checkpoint(tmp_path, 10)
    c30 = fake_checkpoint(tmp_path, 30)
    assert ckpt.resolve_resume("auto", tmp_path) == c30
    assert ckpt.resolve_resume(str(c10), tmp_path / "elsewhere") == c10
    assert ckpt.resolve_resume(str(tmp_path), tmp_path / "elsewhere") == c30
    assert ckpt.resolve_resume(str(tmp_path / "checkpoints"), tmp_path / "x") == c30
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "missing"), tmp_path)


def test_trainer_state_round_trip_and_bad_file(tmp_path):
    s = ckpt.TrainerState(step=12, epoch=3, batch_in_epoch=2, nan_skips=1)
    (tmp_path / "s.json").write_text(s.to_json())
    assert ckpt.TrainerState.load(tmp_path / "s.json") == s
    (tmp_path / "bad.json").write_text('{"step": 1, "bogus": 2}')
    with pytest.raises(ValueError, match="not a valid trainer state"):
        ckpt.TrainerState.load(tmp_path / "bad.json")


def test_save_and_load_restore_weights_optimizer_scheduler_rng(tmp_path):
    torch.manual_seed(0)
    acc = make_accelerator(TrainerConfig(cpu=True), tmp_path)
    a, b = nn.Linear(3, 2), nn.Linear(2, 1)
    opt = torch.optim.Adam(list(a.parameters()) + list(b.parameters()), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    acc.register_for_checkpointing(sched)
    a, b, opt = acc.prepare(a, b, opt)
    b(a(torch.randn(4, 3))).sum().backward()
    opt.step()
    sched.step()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    state = ckpt.TrainerState(step=7, epoch=1, batch_in_epoch=3, nan_skips=2)
    path = ckpt.save_checkpoint(acc, tmp_path, state, config_yaml="x: 1\n", keep=3)

    # what is on disk
    assert path == tmp_path / "checkpoints" / "step_00000007"
    files = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "model_1.safetensors", "optimizer.bin", "trainer_state.json",
            "config.yaml", "random_states_0.pkl"} <= files, files
    expected_next = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    saved_w = a.weight.detach().clone()
    saved_exp_avg = opt.state_dict()["state"][0]["exp_avg"].clone()

    # scramble everything, then restore
    with torch.no_grad():
        a.weight.add_(1.0)
    opt.step()
    sched.step()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    loaded = ckpt.load_checkpoint(acc, path)
    assert loaded == state
    assert torch.equal(a.weight, saved_w)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], saved_exp_avg)
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_next


def test_load_incomplete_checkpoint_is_an_error(tmp_path):
    d = fake_checkpoint(tmp_path, 3, complete=False)
    acc = make_accelerator(TrainerConfig(cpu=True), tmp_path)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ckpt.load_checkpoint(acc, d)
