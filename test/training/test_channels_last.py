"""trainer.channels_last: the trained networks and the batch's images in channels-last
memory order (same arithmetic), checkpoints and resume."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from depth_perception_training.train import checkpoint as ckpt
from depth_perception_training.train.config import OptimConfig, TrainerConfig
from depth_perception_training.train.trainer import (StepOutput, Trainer, build_train_loader,
                                                     seed_everything)


class ConvImages(torch.utils.data.Dataset):
    """[3,8,8] images and a [1,8,8] target: a conv net's batch."""

    def __init__(self, n=8):
        g = torch.Generator().manual_seed(5)
        self.x = torch.rand(n, 3, 8, 8, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "target": self.x[i].mean(0, keepdim=True) * 2.0}


def test_channels_last_trains_the_same_and_checkpoints_resume(tmp_path):
    """trainer.channels_last: the same arithmetic in another memory order (losses equal
    to float rounding), images reach the loss channels-last, and checkpoints of the
    channels-last weights are written and resumed from."""
    seen = []

    def conv_loss(models, batch):
        seen.append(batch["image"].is_contiguous(memory_format=torch.channels_last))
        loss = ((models["net"](batch["image"]) - batch["target"]) ** 2).mean()
        return StepOutput(loss, {"mse": loss.detach()})

    def run(out, steps, channels_last, resume=None):
        seed_everything(3)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        loader = build_train_loader(ConvImages(), batch_size=4, seed=3)
        tcfg = TrainerConfig(max_steps=steps, log_every=1, image_every=0, val_every=-1,
                             checkpoint_every=2, keep_checkpoints=3, progress=False,
                             resume=resume, channels_last=channels_last)
        ocfg = OptimConfig(name="adam", lr_encoder=1e-2, lr_decoder=1e-2, scheduler="none")
        groups = [{"name": "encoder", "params": list(net.parameters()), "lr": 1e-2}]
        trainer = Trainer(tcfg, ocfg, {"net": net}, groups, loader, conv_loss, out)
        return trainer, trainer.fit()

    _, plain = run(tmp_path / "plain", 6, False)
    assert not any(seen)
    seen.clear()
    trainer, fast = run(tmp_path / "fast", 6, True)
    assert seen and all(seen)
    np.testing.assert_allclose([r["loss"] for r in fast.history],
                               [r["loss"] for r in plain.history], rtol=1e-4)
    assert fast.last_checkpoint.name == "step_00000006"
    # the trained net is still channels-last after writing checkpoints
    conv = trainer.accelerator.unwrap_model(trainer.models["net"])[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    # resume from step 4 continues the channels-last run
    _, again = run(tmp_path / "fast", 8, True, resume=str(ckpt.checkpoints_dir(tmp_path / "fast")
                                                           / "step_00000004"))
    assert [r["step"] for r in again.history] == [5, 6, 7, 8]
    np.testing.assert_allclose([r["loss"] for r in again.history][:2],
                               [r["loss"] for r in fast.history][4:], rtol=1e-6)
