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
    meta = make_metadata(c, "teacher", "dpt", trainer.models["depth"].config, 2, (100.0, 100.0),
                         {})
    assert (meta.train_width, meta.train_height) == (112, 70)
    # per axis: fx 100 x 112 / 144, fy 100 x 70 / 80; the runtime reads their mean
    assert meta.train_focal_px == pytest.approx(0.5 * (100.0 * 112 / 144 + 100.0 * 70 / 80))
    with pytest.raises(ValueError, match="depth_width and data.depth_height go together"):
        build_teacher_trainer(load_config("ssd_teacher", ["data.depth_height=null",
                                                          f"data.bags=[{day_bag}]"]))


def _model_input_focal(meta, cam) -> float:
    """focal_px of the camera ``cam`` at the model input the runtime's default
    (``as_trained``) feeds a model with ``meta``: one estimate through the estimator."""
    from depth_perception.runtime.backends.torch_backend import TorchBackend
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.runtime.geometry import focal_px

    class Flat(torch.nn.Module):
        def forward(self, image):                       # [B,3,H,W] -> [B,1,H,W] at 10 m
            return 10.0 + 0 * image[:, :1]

    est = DepthEstimator(TorchBackend(Flat(), meta, device="cpu"), meta)
    result = est.estimate(np.zeros((cam.height, cam.width, 3), np.uint8), cam)
    return focal_px(result.prepared.intrinsics_model)


def test_ssd_metadata_focal_is_what_the_anisotropic_depth_input_sees():
    """SSD's frames at 576x320 with fx = fy = 288 px reach DINOv2 resized to 784x518:
    fx 288 x 784 / 576 = 392.0, fy 288 x 518 / 320 = 466.2, mean 429.1 px. The runtime
    keeps the camera's aspect and puts the mean of fx, fy at the model input on the
    training value: a 921x518 camera with f = 429.1 runs at 924x518 (fx 430.5, fy 429.1,
    mean 429.8). The short-side-only record (466.2 px) would run it at 994x560, mean
    focal 463.5 px: 8.0 % over what the net was trained at, its depth 7.4 % near."""
    from depth_perception.camera import Intrinsics
    from depth_perception.metadata import ModelMetadata
    from depth_perception.models import depth_config
    from depth_perception_training.train.config import load_config, to_dataclass
    from depth_perception_training.train.teacher import make_metadata

    c = to_dataclass(load_config("ssd_teacher", []))
    assert (c.data.width, c.data.height, c.data.depth_width, c.data.depth_height) == \
        (576, 320, 784, 518)
    _, depth_cfg = depth_config(dict(c.model.depth))
    meta = make_metadata(c, "teacher", "dpt", depth_cfg, 0, (288.0, 288.0), {})
    assert (meta.train_width, meta.train_height) == (784, 518)
    assert meta.provenance["train_focal_xy_px"] == pytest.approx([392.0, 466.2])
    assert meta.train_focal_px == pytest.approx(429.1)
    assert ModelMetadata.from_dict(meta.to_dict()).train_focal_px == pytest.approx(429.1)

    cam = Intrinsics(429.1, 429.1, 460.0, 258.5, 921, 518)
    f_new = _model_input_focal(meta, cam)
    assert f_new == pytest.approx(0.5 * (429.1 * 924 / 921 + 429.1), rel=1e-6)   # 429.8
    assert abs(f_new / 429.1 - 1) < 0.005
    old = ModelMetadata.from_dict({**meta.to_dict(), "train_focal_px": 288.0 * 518 / 320})
    f_old = _model_input_focal(old, cam)
    assert f_old == pytest.approx(0.5 * (429.1 * 994 / 921 + 429.1 * 560 / 518), rel=1e-6)
    assert f_old / 429.1 - 1 == pytest.approx(0.080, abs=0.002)       # what this test catches
