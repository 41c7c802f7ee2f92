"""SSD Sec. 4.1's teacher recipe at a scaled-down size with tiny random models: the
depth net's input size apart from the loss and pose size, the paper's optimisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def day_bag(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("ssd_recipe")
    return make_synthetic_bags(root, frames=8, size=(160, 64), conditions=("day-clear",),
                               seed=0)[0]


def test_ssd_teacher_depth_net_and_losses_run_at_their_own_sizes(tmp_path, day_bag):
    """ssd_teacher.yaml at a scaled-down equivalent with tiny random models: SSD's DINOv2
    input 784x518 and loss / pose size 576x320 become 112x70 (8 x 5 patches of 14) and
    144x80. The depth net sees 112x70; the pose net, the losses and the depths they get
    are at 144x80; the exported model records the depth net's size."""
    from depth_perception_training.train.config import load_config, to_dataclass
    from depth_perception_training.train.teacher import build_teacher_trainer, make_metadata

    cfg = load_config("ssd_teacher", [
        f"output_dir={tmp_path / 'run'}", f"data.bags=[{day_bag}]", "data.width=144",
        "data.height=80", "data.depth_width=112", "data.depth_height=70", "data.batch_size=2",
        "data.num_workers=0", "model.depth.size=tiny", "model.depth.pretrained=null",
        "model.init_depth=10.0", "model.pose.backbone=tiny", "model.pose.pretrained=null",
        "trainer.max_steps=2", "trainer.val_every=-1", "trainer.checkpoint_every=0",
        "trainer.progress=false"])
    trainer = build_teacher_trainer(cfg)
    objective = trainer.loss_fn
    seen = {"depth": [], "pose": [], "loss": []}
    trainer.models["depth"].register_forward_pre_hook(
        lambda m, args: seen["depth"].append(tuple(args[0].shape)))
    trainer.models["pose"].register_forward_pre_hook(
        lambda m, args: seen["pose"].append(tuple(args[0].shape)))
    real_loss = objective.loss

    def loss(preds, batch, **kw):
        seen["loss"].append((tuple(batch["image"].shape),
                             [tuple(d.shape) for d in preds["depth"]]))
        return real_loss(preds, batch, **kw)

    objective.loss = loss
    record = trainer.train_step(next(iter(trainer.train_loader)))
    assert np.isfinite(record["loss"]) and not record["skipped"]
    assert seen["depth"] == [(2, 3, 70, 112)]
    assert seen["pose"][0][-2:] == (80, 144)
    assert seen["loss"] == [((2, 3, 80, 144), [(2, 1, 80, 144)])]
    # SSD Sec. 4.1's optimisation: AdamW, depth model 5e-6, pose 5e-5, linear per step
    # (after 1 of 2 updates: half the rate)
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert dict(zip(names, trainer.scheduler.base_lrs)) == pytest.approx(
        {"encoder": 5e-6, "decoder": 5e-6, "pose": 5e-5})
    assert dict(zip(names, (g["lr"] for g in trainer.optimizer.param_groups))) == \
        pytest.approx({"encoder": 2.5e-6, "decoder": 2.5e-6, "pose": 2.5e-5})
    assert isinstance(trainer.optimizer.optimizer, torch.optim.AdamW)
    c = to_dataclass(cfg)
    meta = make_metadata(c, "teacher", "dpt", trainer.models["depth"].config, 2, 100.0, {})
    assert (meta.train_width, meta.train_height) == (112, 70)
    assert meta.train_focal_px == pytest.approx(100.0 * 70 / 80)     # per short side
    with pytest.raises(ValueError, match="depth_width and data.depth_height go together"):
        build_teacher_trainer(load_config("ssd_teacher", ["data.depth_height=null",
                                                          f"data.bags=[{day_bag}]"]))
