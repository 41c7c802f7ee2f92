"""`train pose` (pose backbone supervised by odometry/TF) and the networks it feeds: the
saved folder loads by path into a strengthened pose net; monodepth2 and SPIdepth
decoders have the structure of their references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training/depth_perception_training/config/train"


@pytest.fixture(scope="module")
def pose_bags(tmp_path_factory):
    from depth_perception.synth import make_varied_drives

    root = tmp_path_factory.mktemp("pose_bags")
    return (make_varied_drives(root, (201,), frames=8, size=(160, 64)),
            make_varied_drives(root, (202,), frames=5, size=(160, 64)))


def test_pose_errors_by_hand():
    from depth_perception_training.train.pose import PoseObjective

    T_gt = torch.eye(4).repeat(1, 1, 1, 1)                       # [1,1,4,4]
    T_pred = T_gt.clone()
    T_pred[..., :3, 3] = torch.tensor([0.3, 0.0, 0.4])           # 0.5 m off
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    T_pred[..., :3, :3] = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float32)
    t_err, r_err = PoseObjective.errors(T_pred, T_gt)
    assert float(t_err) == pytest.approx(0.5, rel=1e-5)
    assert float(r_err) == pytest.approx(10.0, abs=1e-3)


def test_train_pose_writes_a_folder_the_strengthened_pose_net_loads(tmp_path, pose_bags, capsys):
    from safetensors.torch import load_file

    from depth_perception.cli import main
    from depth_perception.models import build_pose_model

    train, val = pose_bags
    out = tmp_path / "pose"
    rc = main(["train", "pose", "--config", str(CONFIGS / "pose_tiny.yaml"),
               f"output_dir={out}", f"data.bags=[{','.join(map(str, train))}]",
               f"data.val_bags=[{','.join(map(str, val))}]", "data.width=160",
               "data.height=64", "data.batch_size=2", "model.pose.backbone=tiny",
               "trainer.max_steps=3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "translation error" in printed and "pose backbone:" in printed
    folder = out / "pose_backbone"
    assert (folder / "config.json").is_file()
    saved = load_file(str(next(folder.glob("*.safetensors"))))
    net = build_pose_model({"backbone": "tiny", "pretrained": str(folder), "strengthened": True,
                            "local_files_only": True})
    assert net.encoder.config.num_channels == 6
    state = net.encoder.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value)
    # it runs on frame pairs as in teacher training
    aa, t = net(torch.rand(2, 3, 64, 160), torch.rand(2, 3, 64, 160))
    assert aa.shape == t.shape == (2, 1, 3)


def test_train_pose_without_bags_names_the_key(tmp_path, capsys):
    from depth_perception.cli import main

    rc = main(["train", "pose", "--config", str(CONFIGS / "pose_tiny.yaml"),
               f"output_dir={tmp_path}"])
    assert rc == 2 and "data.bags" in capsys.readouterr().err


def test_monodepth2_net_gives_four_disparity_scales_inside_the_range():
    from depth_perception.models import build_depth_model

    net = build_depth_model({"arch": "mono", "encoder": "tiny", "min_depth": 0.1,
                             "max_depth": 80.0})
    out = net(torch.rand(2, 3, 64, 160))
    assert [tuple(d.shape[-2:]) for d in out["depth"]] == [(64, 160), (32, 80), (16, 40), (8, 20)]
    for disp, scaled, depth in zip(out["disp"], out["scaled_disp"], out["depth"]):
        assert 0 <= float(disp.min()) and float(disp.max()) <= 1
        torch.testing.assert_close(depth, 1.0 / scaled)
        assert 0.1 <= float(depth.min()) and float(depth.max()) <= 80.0
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 70, 160))


def test_loss_upsamples_disparity_like_monodepth2():
    """A coarse scale: the warped depth is 1 / upsample(1/depth) (monodepth2), not
    upsample(depth); the two differ where depth changes, and the loss sees the former."""
    from depth_perception_training.losses import upsample_to

    depth = torch.tensor([[[[2.0, 20.0]]]])                       # [1,1,1,2]
    via_disp = 1.0 / upsample_to(1.0 / depth, (1, 4))
    via_depth = upsample_to(depth, (1, 4))
    assert not torch.allclose(via_disp, via_depth)
    # the middle samples: bilinear in disparity gives the harmonic-like blend
    assert float(via_disp[0, 0, 0, 1]) < float(via_depth[0, 0, 0, 1])


def test_spidepth_decoder_takes_the_stem_skip_with_batchnorm():
    from depth_perception.models import build_depth_model

    net = build_depth_model({"arch": "sql", "encoder": "tiny", "num_bins": 16, "num_queries": 8,
                             "patch_size": 8, "transformer_layers": 1})
    feats = net.features(torch.rand(1, 3, 64, 160))
    assert feats[0].shape[-2:] == (32, 80)                       # the stem's own 1/2 output
    assert feats[0].shape[1] == net.encoder.config.embedding_size
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.decoder.modules())
    out = net(torch.rand(2, 3, 64, 160))
    assert 0.1 <= float(out["depth"][0].min()) and float(out["depth"][0].max()) <= 80.0
