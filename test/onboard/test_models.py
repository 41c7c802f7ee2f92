"""Depth (DPT, SQL) and pose networks from tiny configs; checkpoint folders."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from depth_perception_training import geometry
from depth_perception.metadata import ModelMetadata
from depth_perception.models import (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, DepthInference,
                                     build_depth_model, build_pose_model, load_depth_model,
                                     normalize_image, save_depth_model)
from depth_perception.models.dpt_depth import DPTDepthConfig, DPTDepthNet
from depth_perception.models.pose import PoseNet, PoseNetConfig, conv_backbone_config
from depth_perception.models.sql_depth import SQLDepthConfig, SQLDepthNet

TINY_SQL = dict(arch="sql", encoder="tiny", patch_size=4, num_queries=16, num_bins=32,
                transformer_ffn=64, min_depth=0.5, max_depth=40.0)


def _reset(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise conv/linear layers: random init of the DPT head gives ~constant output."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return model


def _image(B=2, H=70, W=112, seed=0):
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


# --- DPT ---------------------------------------------------------------------------------
def test_dpt_tiny_forward_shapes_and_range():
    net = _reset(build_depth_model({"arch": "dpt", "size": "tiny", "min_depth": 0.5, "max_depth": 50.0}))
    assert isinstance(net, DPTDepthNet)
    out = net(_image() * 5, return_features=True)
    disp, depth = out["disp"][0], out["depth"][0]
    assert disp.shape == depth.shape == (2, 1, 70, 112)
    assert disp.min() >= 0 and disp.max() <= 1
    assert depth.min() >= 0.5 - 1e-5 and depth.max() <= 50.0 + 1e-3
    assert depth.std() > 0  # not a constant map
    assert torch.allclose(out["scaled_disp"][0] * depth, torch.ones_like(depth), atol=1e-5)
    assert out["features"].shape == (2, (70 // 14) * (112 // 14), 32)
    assert torch.allclose(net.encode(_image()), net(_image(), return_features=True)["features"])


def test_dpt_input_must_be_multiple_of_14():
    net = build_depth_model({"arch": "dpt", "size": "tiny"})
    with pytest.raises(ValueError, match="multiple of 14"):
        net(torch.zeros(1, 3, 64, 112))


def test_dpt_param_groups_cover_all_parameters_once():
    net = build_depth_model({"arch": "dpt", "size": "tiny"})
    groups = net.param_groups(5e-6, 5e-5)
    assert [g["lr"] for g in groups] == [5e-6, 5e-5]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert all(id(p) in {id(q) for q in net.net.backbone.parameters()} for p in groups[0]["params"])


def test_dpt_size_presets_match_depth_anything_v2():
    from depth_perception.models.dpt_depth import depth_anything_config
    small = depth_anything_config("small")
    assert small.backbone_config.hidden_size == 384 and small.backbone_config.num_attention_heads == 6
    assert small.neck_hidden_sizes == [48, 96, 192, 384] and small.fusion_hidden_size == 64
    large = depth_anything_config("large")
    assert large.backbone_config.num_hidden_layers == 24 and large.backbone_config.hidden_size == 1024
    assert large.neck_hidden_sizes == [256, 512, 1024, 1024]
    assert small.depth_estimation_type == "metric" and small.max_depth == 1  # sigmoid head
    with pytest.raises(ValueError, match="size"):
        DPTDepthConfig(size="huge")


def test_dpt_save_load_round_trip(tmp_path):
    net = _reset(build_depth_model({"arch": "dpt", "size": "tiny", "min_depth": 0.1, "max_depth": 80.0}), 1)
    net.eval()
    folder = save_depth_model(tmp_path / "model", net, net.config)
    assert {p.name for p in folder.iterdir()} >= {CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE}
    model, meta = load_depth_model(folder)
    assert isinstance(model, DepthInference) and not model.training
    assert meta.output_kind == "metric_depth" and (meta.min_depth, meta.max_depth) == (0.1, 80.0)
    assert meta.size_multiple == 14
    x = _image(1, 42, 56, seed=3)
    with torch.no_grad():
        assert torch.equal(model(x), net(x)["depth"][0])
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    assert cfg["arch"] == "dpt" and cfg["size"] == "tiny" and "hf_config" in cfg


def test_checkpoint_whose_weights_do_not_fit_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    net = build_depth_model({"arch": "dpt", "size": "tiny"})
    folder = save_depth_model(tmp_path / "m", net)
    # (a) the config names a wider DPT fusion than the weights were trained with
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg["hf_config"]["fusion_hidden_size"] = 24
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"shape mismatches.*net.neck.convs.0.weight: file \(16, 8, 3, 3\) vs model \(24, 8, 3, 3\)"):
        load_depth_model(folder)
    # (b) a key missing and an unexpected key
    folder = save_depth_model(tmp_path / "m2", net)
    state = load_file(str(folder / WEIGHTS_FILE))
    state.pop("net.head.conv3.weight")
    state["net.extra.weight"] = torch.zeros(3)
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(ValueError) as err:
        load_depth_model(folder)
    assert "net.head.conv3.weight" in str(err.value) and "net.extra.weight" in str(err.value)
    assert WEIGHTS_FILE in str(err.value)


def test_missing_files_and_bad_metadata(tmp_path):
    net = build_depth_model({"arch": "dpt", "size": "tiny"})
    folder = save_depth_model(tmp_path / "m", net)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_depth_model(folder)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_depth_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="metric depth"):
        save_depth_model(tmp_path / "x", net, metadata=ModelMetadata(output_kind="disparity"))
    with pytest.raises(ValueError, match="unknown keys"):
        build_depth_model({"arch": "dpt", "size": "tiny", "mn_depth": 1.0})
    with pytest.raises(ValueError, match="arch"):
        build_depth_model({"arch": "unet"})


def test_dpt_from_local_pretrained_folders(tmp_path):
    from transformers import DepthAnythingForDepthEstimation, Dinov2Config, Dinov2Model
    from depth_perception.models.dpt_depth import depth_anything_config
    # (a) a relative Depth Anything checkpoint: weights load, the ReLU head becomes a sigmoid
    da_cfg = depth_anything_config("tiny")
    da_cfg.depth_estimation_type = "relative"
    ref = _reset(DepthAnythingForDepthEstimation(da_cfg), 2)
    ref.save_pretrained(tmp_path / "da")
    net = DPTDepthNet(DPTDepthConfig(size="tiny", pretrained=str(tmp_path / "da")))
    assert isinstance(net.net.head.activation2, nn.Sigmoid)
    for k, v in ref.state_dict().items():
        assert torch.equal(net.net.state_dict()[k], v), k
    # (b) a bare DINOv2 backbone: encoder weights loaded, head fresh
    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                    mlp_ratio=2, image_size=224, patch_size=14))
    dino.save_pretrained(tmp_path / "dino")
    net = DPTDepthNet(DPTDepthConfig(size="tiny", pretrained=str(tmp_path / "dino")))
    w = net.net.backbone.embeddings.patch_embeddings.projection.weight
    assert torch.equal(w, dino.embeddings.patch_embeddings.projection.weight)
    # (c) a missing folder offline: a clear error
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        DPTDepthNet(DPTDepthConfig(size="tiny", pretrained=str(tmp_path / "absent")))


# --- SQL ---------------------------------------------------------------------------------
def test_sql_decoder_shapes_bins_and_range():
    net = build_depth_model(TINY_SQL)
    assert isinstance(net, SQLDepthNet)
    out = net(_image(2, 64, 96) * 3)
    depth, centers = out["depth"][0], out["bin_centers"]
    assert depth.shape == (2, 1, 64, 96) and centers.shape == (2, 32)
    assert out["disp"][0].shape == (2, 1, 64, 96)
    assert torch.all(centers[:, 1:] > centers[:, :-1])                 # strictly increasing
    assert centers.min() > 0.5 and centers.max() < 40.0
    assert depth.min() >= 0.5 and depth.max() <= 40.0
    assert torch.allclose(out["disp"][0] * depth, torch.ones_like(depth), atol=1e-5)
    # gradients reach the encoder through the bins and the probabilities
    depth.mean().backward()
    assert net.encoder.embedder.embedder.convolution.weight.grad.abs().sum() > 0


def test_sql_decoder_is_spidepths_decoderbn():
    """SPIdepth's DecoderBN on ResNet-50 features at 192x640 (resnet_192x640: F = 256,
    E = 32): 1x1 to 256, blocks 128/64/32/16 with LeakyReLU, a linear 3x3 to E."""
    from depth_perception.models.sql_depth import DecoderBN

    enc = [64, 256, 512, 1024, 2048]                        # ResNet-50, 1/2 .. 1/32
    dec = DecoderBN(enc, out_channels=32, features=256)
    assert (dec.bottleneck.in_channels, dec.bottleneck.out_channels) == (2048, 256)
    assert dec.bottleneck.kernel_size == (1, 1)
    assert [(u.net[0].in_channels, u.net[0].out_channels) for u in dec.ups] == [
        (256 + 1024, 128), (128 + 512, 64), (64 + 256, 32), (32 + 64, 16)]
    for u in dec.ups:
        assert [type(m) for m in u.net] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU] * 2
    assert (dec.out.in_channels, dec.out.out_channels, dec.out.kernel_size) == (16, 32, (3, 3))
    H, W = 192, 640
    feats = [torch.randn(1, c, H // 2 ** (k + 1), W // 2 ** (k + 1)) for k, c in enumerate(enc)]
    with torch.no_grad():
        S = dec(feats)
    assert S.shape == (1, 32, H // 2, W // 2)
    assert S.min() < 0                       # linear output: no ReLU / BN-ReLU before the queries
    # the whole net on a tiny encoder: S at half the input, depth at the input size
    net = build_depth_model({**TINY_SQL, "decoder_features": 64})
    assert [u.net[0].out_channels for u in net.decoder.ups] == [32, 16, 8, 4]
    assert net(_image(1, 64, 96))["depth"][0].shape == (1, 1, 64, 96)


def test_sql_layer_exact_formulas():
    """Bins and depth from the layer's own intermediate tensors, recomputed by hand."""
    net = build_depth_model(TINY_SQL).eval()  # no transformer dropout
    sql = net.sql
    S = torch.randn(1, 32, 16, 24)
    depth, centers = sql(S)
    tokens = sql.transformer(sql.patch_embed(S).flatten(2).transpose(1, 2) + sql.pos_enc[:24][None])
    feats = sql.conv3x3(S).flatten(2)
    volume = tokens[:, :16] @ feats
    summary = volume.softmax(-1) @ feats.transpose(1, 2)
    widths = torch.relu(sql.bins_mlp(summary.flatten(1))) + 0.1
    widths = widths / widths.sum() * (40.0 - 0.5)
    edges = 0.5 + torch.cat([torch.zeros(1, 1), widths.cumsum(1)], 1)
    assert edges[0, -1].item() == pytest.approx(40.0, rel=1e-5)
    assert torch.allclose(centers, (edges[:, 1:] + edges[:, :-1]) / 2, atol=1e-4)
    prob = sql.to_logits(volume.view(1, 16, 16, 24)).softmax(1)
    assert torch.allclose(depth, (prob * centers[..., None, None]).sum(1, keepdim=True), atol=1e-4)


def test_sql_too_small_input_is_explained():
    net = build_depth_model({**TINY_SQL, "patch_size": 8}).eval()
    with pytest.raises(ValueError, match="8 patch tokens.*num_queries=16"):
        net(torch.zeros(1, 3, 32, 64))  # decoder map 16x32, patch 8 -> 8 tokens < 16 queries
    with pytest.raises(ValueError, match="stride 32"):
        net(torch.zeros(1, 3, 16, 64))


def test_sql_save_load_round_trip(tmp_path):
    net = build_depth_model(TINY_SQL).eval()
    model, meta = load_depth_model(save_depth_model(tmp_path / "sql", net))
    assert meta.size_multiple == 32 and meta.max_depth == 40.0
    x = _image(1, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), net(x)["depth"][0])


# --- Pose --------------------------------------------------------------------------------
def test_pose_tiny_shapes_and_relative_pose():
    net = build_pose_model({"backbone": "tiny"})
    a, b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    axisangle, translation = net(a, b)
    assert axisangle.shape == translation.shape == (2, 1, 3)
    T, t = net.relative_pose(b, a, -1)  # source a before target b: pair (a, b), inverted
    assert torch.allclose(T, geometry.pose_vec_to_matrix(axisangle, translation, invert=True), atol=1e-6)
    assert torch.allclose(t, translation[:, 0])
    T2, _ = net.relative_pose(a, b, +1)  # source b after target a: pair (a, b), as is
    assert torch.allclose(T2, geometry.pose_vec_to_matrix(axisangle, translation), atol=1e-6)
    with pytest.raises(ValueError):
        net(a, b[:, :, :32])


def test_pose_translation_scaled_by_0_01():
    net = _reset(build_pose_model({"backbone": "tiny"}), 4)
    raw = {}
    net.decoder.out.register_forward_hook(lambda m, i, o: raw.setdefault("x", o))
    axisangle, translation = net(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96))
    pooled = raw["x"].mean(dim=(2, 3))                                  # [1,6]
    assert torch.allclose(axisangle[:, 0], 0.01 * pooled[:, :3])
    assert torch.allclose(translation[:, 0], 0.01 * pooled[:, 3:])
    assert pooled.abs().max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("kind", ["resnet", "convnext"])
def test_strengthened_pose_loads_local_pretrained_backbone(tmp_path, kind):
    from transformers import ConvNextConfig, ConvNextModel, ResNetModel
    if kind == "resnet":
        pre = ResNetModel(conv_backbone_config("tiny"))
        key = "embedder.embedder.convolution.weight"
    else:
        pre = ConvNextModel(ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32]))
        key = "embeddings.patch_embeddings.weight"
    pre.eval()
    pre.save_pretrained(tmp_path / "backbone")
    net = PoseNet(PoseNetConfig(backbone="tiny", pretrained=str(tmp_path / "backbone"), strengthened=True))
    net.eval()
    w3 = pre.state_dict()[key]
    w6 = net.encoder.state_dict()[key]
    assert w3.shape[1] == 3 and w6.shape[1] == 6
    assert torch.equal(w6, torch.cat([w3, w3], 1) / 2)
    for k, v in pre.state_dict().items():
        if k != key:
            assert torch.equal(net.encoder.state_dict()[k], v), k
    # a pair of identical frames reproduces the pretrained response
    x = torch.rand(1, 3, 64, 96)
    xn = (x - net.mean) / net.std
    with torch.no_grad():
        f6 = net.encoder(torch.cat([xn, xn], 1)).last_hidden_state
        f3 = pre(xn).last_hidden_state
    assert torch.allclose(f6, f3, atol=1e-5)


def test_strengthened_pose_requires_pretrained():
    with pytest.raises(ValueError, match="pretrained"):
        PoseNetConfig(backbone="resnet18", strengthened=True)
    with pytest.raises(ValueError, match="backbone"):
        PoseNetConfig(backbone="vgg")
    with pytest.raises(ValueError, match="unknown keys"):
        build_pose_model({"backbone": "tiny", "strenghtened": True})


def test_normalize_image():
    img = torch.full((1, 3, 2, 2), 0.5)
    out = normalize_image(img, (0.5, 0.25, 0.0), (0.5, 0.25, 0.25))
    assert out[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_every_depth_architecture_declares_the_network_protocol():
    """What training and export ask of a depth network is declared by its class, and a
    class that leaves a member out is refused on lookup, not when a run gets to it."""
    from depth_perception.models import DEPTH_ARCHS, depth_network_class
    from depth_perception.models.network import DepthNetwork, check_depth_network

    declared = {a: (depth_network_class(a).size_multiple, depth_network_class(a).returns_features)
                for a in DEPTH_ARCHS}
    assert declared == {"dpt": (14, True), "sql": (32, False), "mono": (32, True)}
    net = build_depth_model({"arch": "dpt", "size": "tiny"})
    assert isinstance(net, DepthNetwork) and len(net.disparity_heads()) == 1
    assert not SQLDepthNet.disparity_heads(None)          # depth through bins

    class Incomplete(nn.Module):
        size_multiple = 8

    with pytest.raises(ValueError, match="'new'.*Incomplete.*returns_features"):
        check_depth_network(Incomplete, "new")
