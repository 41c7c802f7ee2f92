"""ONNX export: parity with torch, metadata round trip, refusals, the CLI verb."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.cli import main as cli_main
from depth_perception_training.export import onnx_export
from depth_perception.runtime.calibration import synthetic_frames
from depth_perception_training.export.onnx_export import (check_export_size, export_onnx,
                                                 load_export_source, max_relative_error,
                                                 run_onnxruntime, run_torch)
from depth_perception.runtime.onnx_metadata import read_onnx_metadata

H, W = 98, 126


def _save_checkpoint(folder, size: str, seed: int = 0, max_depth: float = 40.0):
    import torch

    from depth_perception.models import build_depth_model, save_depth_model

    torch.manual_seed(seed)
    net = build_depth_model({"arch": "dpt", "size": size, "min_depth": 0.5,
                             "max_depth": max_depth})
    # default init gives a constant output (head ~1e-6 -> sigmoid 0.5); standard
    # conv/linear init gives depths that vary over the image, so errors show
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    save_depth_model(folder, net.eval())
    return folder


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return _save_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"), "tiny")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    result = export_onnx(load_export_source(tiny_ckpt), out, H, W)
    return out, result


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# -- plain functions ---------------------------------------------------------------------

def test_max_relative_error_hand_worked():
    ref = np.array([[1.0, -4.0], [2.0, 0.0]])
    assert max_relative_error(ref, ref) == 0.0
    # biggest deviation 0.2 against the largest magnitude 4.0
    assert max_relative_error(ref, ref + np.array([[0.2, 0.0], [-0.1, 0.0]])) == pytest.approx(0.05)
    assert max_relative_error(ref, np.where(ref == 0, np.nan, ref)) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        max_relative_error(ref, ref.T[:1])


def test_export_size_must_be_multiple_of_14():
    assert check_export_size(98, 126) == (98, 126)
    with pytest.raises(ValueError, match=r"height 100 .*multiple of 14.*nearest valid size 98x126"):
        check_export_size(100, 126)
    with pytest.raises(ValueError, match="width 130"):
        check_export_size(98, 130)
    with pytest.raises(ValueError, match="height 0"):
        check_export_size(0, 126)


# -- package checkpoints ---------------------------------------------------------------------

def test_tiny_checkpoint_export_matches_torch_and_carries_metadata(tiny_ckpt, tiny_onnx):
    import onnx

    out, result = tiny_onnx
    assert result.max_rel_error <= 1e-4
    # an independent check on other frames than the exporter used
    source = load_export_source(tiny_ckpt)
    meta = read_onnx_metadata(out)
    frames = synthetic_frames(meta, 3, seed=11)
    ref, got = run_torch(source.module, frames), run_onnxruntime(out, frames)
    for r, g in zip(ref, got):
        assert r.shape == (1, 1, H, W)
        assert float(r.max() - r.min()) > 0.01          # depth varies: errors show
        assert max_relative_error(r, g) <= 1e-4

    # static graph with the metadata's names, valid per onnx.checker
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == ["image"]
    assert dims(model.graph.input[0]) == [1, 3, H, W]
    assert [o.name for o in model.graph.output] == ["depth"]
    assert dims(model.graph.output[0]) == [1, 1, H, W]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17

    # metadata round trip: fixed size now, everything else from the checkpoint
    ckpt_meta = json.loads((tiny_ckpt / "metadata.json").read_text())
    assert (meta.input_height, meta.input_width) == (H, W)
    assert meta.output_kind == "metric_depth"
    assert (meta.min_depth, meta.max_depth) == (0.5, 40.0)
    assert list(meta.mean) == ckpt_meta["mean"] and list(meta.std) == ckpt_meta["std"]
    weights = (tiny_ckpt / "depth_model.safetensors").read_bytes()
    assert meta.provenance["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert meta.provenance["source_checkpoint"] == str(tiny_ckpt.resolve())
    assert meta.provenance["export"]["opset"] == 17
    assert meta.provenance["export"]["parity"]["max_rel_error"] == result.max_rel_error
    assert meta.package_version
    assert result.metadata == meta
    # nothing but the file itself is left in the folder
    assert _files(out.parent) == ["tiny.onnx"]


@pytest.mark.slow
def test_vit_s_sized_model_exports_and_matches(tmp_path):
    """DINOv2 ViT-S (hidden 384, 12 layers, 6 heads) with a DPT head, random weights."""
    ckpt = _save_checkpoint(tmp_path / "vits", "small", seed=1)
    hf = json.loads((ckpt / "model_config.json").read_text())["hf_config"]
    backbone = hf["backbone_config"]
    assert (backbone["hidden_size"], backbone["num_hidden_layers"],
            backbone["num_attention_heads"]) == (384, 12, 6)
    source = load_export_source(ckpt)
    n_params = sum(p.numel() for p in source.module.parameters())
    assert 20e6 < n_params < 30e6
    result = export_onnx(source, tmp_path / "vits.onnx", 70, 126,
                         parity_frames=synthetic_frames(
                             dataclasses.replace(source.metadata, input_height=70,
                                                 input_width=126), 2))
    assert result.max_rel_error <= 1e-4
    meta = read_onnx_metadata(tmp_path / "vits.onnx")
    assert (meta.input_height, meta.input_width) == (70, 126)
    assert (tmp_path / "vits.onnx").stat().st_size > 4 * 20e6   # fp32 weights inside


def test_estimator_runs_exported_onnx_from_metadata_alone(tiny_ckpt, tiny_onnx):
    from depth_perception.runtime.backends.torch_backend import TorchBackend
    from depth_perception.runtime.estimator import DepthEstimator

    out, _ = tiny_onnx
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    k = Intrinsics(150.0, 150.0, 79.5, 59.5, 160, 120)
    # no metadata given: the estimator configures itself from the ONNX file
    est = DepthEstimator.load(out, backend="onnxruntime")
    assert est.metadata.fixed_size == (H, W)
    result = est.estimate(rgb, k)
    assert result.depth.shape == (120, 160)
    finite = result.depth[np.isfinite(result.depth)]
    assert finite.size > 0.9 * result.depth.size
    assert ((finite >= 0.5) & (finite <= 40.0)).all()

    # the same frame through torch (same preprocessing) gives the same depth
    source = load_export_source(tiny_ckpt)
    fixed = dataclasses.replace(source.metadata, input_height=H, input_width=W)
    torch_est = DepthEstimator(TorchBackend(source.module, fixed, device="cpu"), fixed)
    ref = torch_est.estimate(rgb, k).depth
    both = np.isfinite(ref) & np.isfinite(result.depth)
    assert both.mean() > 0.9
    assert max_relative_error(ref[both], result.depth[both]) <= 1e-4


# -- transformers models ----------------------------------------------------------------------

@pytest.mark.parametrize("metric", [True, False])
def test_transformers_folder_export(tmp_path, metric):
    from support.models_fixtures import TINY_MAX_DEPTH, save_tiny_depth_anything

    folder = save_tiny_depth_anything(tmp_path / "da", metric=metric)
    source = load_export_source(folder)
    result = export_onnx(source, tmp_path / "da.onnx", 56, 84)
    assert result.max_rel_error <= 1e-4
    meta = read_onnx_metadata(tmp_path / "da.onnx")
    assert (meta.input_name, meta.output_name) == ("image", "depth")
    if metric:
        assert meta.output_kind == "metric_depth"
        assert meta.max_depth == TINY_MAX_DEPTH
    else:
        assert meta.output_kind == "relative_disparity"
    assert meta.provenance["source_format"] == "transformers"
    weights = (folder / "model.safetensors").read_bytes()
    assert meta.provenance["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert run_onnxruntime(tmp_path / "da.onnx", synthetic_frames(meta, 1))[0].shape == \
        (1, 1, 56, 84)


def test_unknown_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_export_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder but not a model"):
        load_export_source(tmp_path / "empty")
    # a model id not in the (offline) cache: clear error, no download attempt succeeds
    with pytest.raises(FileNotFoundError, match="not available"):
        load_export_source("nobody/no-such-depth-model")


# -- refusals ------------------------------------------------------------------------------

def test_checkpoint_whose_weights_do_not_fit_is_refused(tiny_ckpt, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    state = load_file(str(bad / "depth_model.safetensors"))
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = state[name][:, :-1].contiguous()           # wrong shape
    dropped = next(k for k in state if k != name)
    del state[dropped]                                       # missing key
    save_file(state, str(bad / "depth_model.safetensors"))
    with pytest.raises(ValueError, match="do not fit") as info:
        load_export_source(bad)
    assert name in str(info.value) or "shape mismatch" in str(info.value)
    assert "missing" in str(info.value)

    out = tmp_path / "bad.onnx"
    rc = cli_main(["export", "--checkpoint", str(bad), "--height", str(H), "--width",
                   str(W), "--onnx", str(out)])
    assert rc == 2 and not out.exists()


def test_parity_failure_fails_the_export_and_leaves_no_file(tiny_ckpt, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    original = onnx_export._torch_export

    def export_then_corrupt(module, dummy, path, metadata, opset, *args, **kwargs):
        original(module, dummy, path, metadata, opset, *args, **kwargs)
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(init).copy()
        values.flat[::7] *= -3.0                                     # corrupt the weights
        init.CopyFrom(numpy_helper.from_array(values, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(onnx_export, "_torch_export", export_then_corrupt)
    out = tmp_path / "corrupt.onnx"
    with pytest.raises(RuntimeError, match="parity check failed"):
        export_onnx(load_export_source(tiny_ckpt), out, H, W)
    assert _files(tmp_path) == []

    # through the CLI: error exit, no file
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", str(H), "--width",
                   str(W), "--onnx", str(out)])
    assert rc == 2 and _files(tmp_path) == []


def test_wrong_size_is_refused_before_any_work(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "100", "--width",
                   str(W), "--onnx", str(out)])
    assert rc == 2 and not out.exists()
    assert "multiple of 14" in capsys.readouterr().err
    with pytest.raises(ValueError, match="multiple of 14"):
        export_onnx(load_export_source(tiny_ckpt), out, H, 130)


# -- the CLI verb -----------------------------------------------------------------------------

def test_cli_exports_checkpoint(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "models" / "cli.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert out.is_file() and "max relative error" in printed
    assert read_onnx_metadata(out).fixed_size == (56, 84)


def test_cli_dynamic_batch_export_runs_cameras_in_one_call(tiny_ckpt, tmp_path, capsys):
    from depth_perception.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from depth_perception.runtime.estimator import DepthEstimator, FrameInput

    out = tmp_path / "batch.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(out), "--dynamic-batch"])
    assert rc == 0, capsys.readouterr()
    meta = read_onnx_metadata(out)
    assert meta.provenance["export"]["input_shape"] == ["batch", 3, 56, 84]
    backend = OnnxRuntimeBackend(out, providers=["CPUExecutionProvider"])
    assert backend.max_batch(meta.input_name) is None
    sizes = []
    run = backend.run
    backend.run = lambda feeds: sizes.append(len(feeds[meta.input_name])) or run(feeds)
    est = DepthEstimator(backend, meta)
    rng = np.random.default_rng(1)
    K = Intrinsics(fx=90.0, fy=90.0, cx=83.5, cy=55.5, width=168, height=112)
    frames = [FrameInput(rng.integers(0, 256, (112, 168, 3), dtype=np.uint8), K)
              for _ in range(3)]
    together = est.estimate_batch(frames)
    assert sizes == [3]
    for frame, result in zip(frames, together):
        alone = est.estimate(frame.rgb, frame.intrinsics).depth
        ok = np.isfinite(alone)
        assert ok.mean() > 0.5
        np.testing.assert_allclose(result.depth[ok], alone[ok], rtol=1e-4)
    # TensorRT and the INT8 copy are built from batch-1 ONNX: refused up front
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(tmp_path / "x.onnx"), "--dynamic-batch",
                   "--engine", str(tmp_path / "x.engine")])
    assert rc == 2 and "--dynamic-batch is for onnxruntime" in capsys.readouterr().err


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _torch2trt_importable() -> bool:
    try:
        import torch2trt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here")
def test_cli_engine_without_tensorrt_says_what_to_install(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", str(H), "--width",
                   str(W), "--onnx", str(out), "--engine", str(tmp_path / "m.engine"),
                   "--precision", "fp16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "JetPack" in err and "pip install tensorrt" in err and "onnxruntime" in err
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(_torch2trt_importable(), reason="torch2trt is installed here")
def test_cli_torch2trt_without_torch2trt_says_what_to_install(tiny_ckpt, tmp_path, capsys):
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", str(H), "--width",
                   str(W), "--onnx", str(tmp_path / "m.onnx"), "--torch2trt",
                   str(tmp_path / "m.pth")])
    err = capsys.readouterr().err
    assert rc == 2 and "torch2trt" in err and "TensorRT" in err
    assert not (tmp_path / "m.pth").exists()


def test_cli_int8_without_calibration_is_refused(tiny_ckpt, tmp_path, capsys, monkeypatch):
    import types
    import sys

    # pretend TensorRT imports so the argument check itself is what is tested
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.0.0"))
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", str(H), "--width",
                   str(W), "--onnx", str(tmp_path / "m.onnx"), "--engine",
                   str(tmp_path / "m.engine"), "--precision", "int8"])
    assert rc == 2 and "--calib-bag" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(not _torch2trt_importable(), reason="needs torch2trt and a GPU")
def test_torch2trt_export_loads_in_runtime(tiny_ckpt, tmp_path):
    from depth_perception_training.export.torch2trt_export import export_torch2trt
    from depth_perception.runtime.backends.tensorrt_backend import Torch2TRTBackend

    source = load_export_source(tiny_ckpt, device="cuda")
    meta = dataclasses.replace(source.metadata, input_height=H, input_width=W)
    frames = synthetic_frames(meta, 2)
    path = export_torch2trt(source.module, meta, tmp_path / "m.pth", precision="fp32",
                            check_frames=frames)
    backend = Torch2TRTBackend(path)
    out = backend.run({"image": frames[:1]})["depth"]
    assert max_relative_error(run_torch(source.module, frames[:1])[0], out) <= 1e-2


def test_parity_on_bag_frames_through_the_node_preprocessing(tiny_ckpt, tmp_path, capsys):
    from depth_perception.synth import make_synthetic_bags

    bag = make_synthetic_bags(tmp_path / "bags", frames=4, size=(168, 112),
                              conditions=("night",), seed=2)[0]
    out = tmp_path / "bag.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(out), "--parity-bag", str(bag), "--parity-frames", "3"])
    assert rc == 0, capsys.readouterr().err
    parity = read_onnx_metadata(out).provenance["export"]["parity"]
    assert parity["frames"] == 3 and parity["source"] == f"bag {bag}"
    assert parity["max_rel_error"] <= 1e-4
    missing = tmp_path / "no_bag"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(tmp_path / "x.onnx"), "--parity-bag", str(missing)])
    assert rc == 2 and str(missing) in capsys.readouterr().err


@pytest.mark.ros
def test_depth_node_runs_the_exported_onnx(tiny_onnx):
    """The node, given only the exported file, configures itself from its metadata."""
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter
    from support.rostools import RosHarness, camera_info_msg, image_msg, node_state, stamp_ns, wait_for
    from sensor_msgs.msg import CameraInfo, Image

    from depth_perception.conversions import image_to_depth
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.ros.depth_node import DepthNode

    out, _ = tiny_onnx
    k = Intrinsics(90.0, 90.0, 79.5, 59.5, 160, 120)
    rgb = np.random.default_rng(4).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    expected = DepthEstimator.load(out, backend="onnxruntime").estimate(rgb, k).depth
    ros = RosHarness()
    try:
        node = DepthNode(context=ros.context, parameter_overrides=[
            Parameter("model", value=str(out)), Parameter("backend", value="onnxruntime")])
        ros.add(node)
        wait_for(lambda: node_state(node) == "active", 60, "the node to become active")
        depth_out = ros.collect(Image, "/depth/image")
        image_pub = ros.publisher(Image, "/image")
        info_pub = ros.publisher(CameraInfo, "/camera_info")
        ros.wait_matched(image_pub)
        ros.wait_matched(info_pub)
        t = 1_000_000_000
        for _ in range(100):   # frames may be lost while discovery settles
            info_pub.publish(camera_info_msg(k, t))
            image_pub.publish(image_msg(rgb, t))
            try:
                depth_out.wait(lambda ms: bool(ms), timeout=0.5)
                break
            except AssertionError:
                t += 50_000_000
        msg = depth_out.wait(lambda ms: bool(ms))[0]
        depth = image_to_depth(msg)
        assert (msg.width, msg.height) == (160, 120)
        assert stamp_ns(msg) >= 1_000_000_000
        both = np.isfinite(depth) & np.isfinite(expected)
        assert both.mean() > 0.9
        np.testing.assert_allclose(depth[both], expected[both], rtol=1e-5)
    finally:
        ros.close()


def test_transformers_weights_missing_from_the_file_are_refused(tmp_path):
    from support.models_fixtures import save_tiny_depth_anything
    from safetensors.torch import load_file, save_file

    folder = save_tiny_depth_anything(tmp_path / "da")
    state = load_file(str(folder / "model.safetensors"))
    dropped = sorted(k for k in state if k.startswith("head."))[0]
    del state[dropped]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing") as info:
        load_export_source(folder)
    assert dropped in str(info.value)


def test_transformers_model_id_from_the_local_cache(tmp_path, monkeypatch):
    """A hub id resolves offline to the cached snapshot (no download)."""
    import huggingface_hub.constants as hf_constants
    from support.models_fixtures import save_tiny_depth_anything

    repo = tmp_path / "hub" / "models--acme--tiny-depth"
    revision = "0123456789abcdef0123456789abcdef01234567"
    save_tiny_depth_anything(repo / "snapshots" / revision, metric=False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = load_export_source("acme/tiny-depth")
    assert source.provenance["source_checkpoint"] == "acme/tiny-depth"
    assert source.metadata.output_kind == "relative_disparity"
    result = export_onnx(source, tmp_path / "id.onnx", 56, 56)
    assert result.max_rel_error <= 1e-4


def test_export_quantize_int8_on_bag_frames(tiny_ckpt, tmp_path, capsys):
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.synth import make_synthetic_bags

    bag = make_synthetic_bags(tmp_path / "bags", frames=4, size=(168, 112),
                              conditions=("day-clear",), seed=1)[0]
    out = tmp_path / "m.onnx"
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(out), "--quantize", "int8", "--calib-bag", str(bag),
                   "--calib-frames", "3"])
    assert rc == 0, capsys.readouterr().err
    int8 = tmp_path / "m.int8.onnx"
    assert "wrote " + str(int8) in capsys.readouterr().out
    meta = read_onnx_metadata(int8)
    q = meta.provenance["quantization"]
    assert q["precision"] == "int8" and q["calibration"]["frames"] == 3
    assert q["quantized_ops"].get("Conv", 0) > 0 and q["parity"]["frames"] == 3
    assert q["parity"]["abs_rel"] < 0.05
    # the FP32 export is untouched and the INT8 copy keeps its provenance
    assert "quantization" not in read_onnx_metadata(out).provenance
    assert meta.provenance["export"] == read_onnx_metadata(out).provenance["export"]
    est = DepthEstimator.load(str(int8), backend="onnxruntime")
    assert est.backend.precision == "int8"
    est.close()
    rc = cli_main(["export", "--checkpoint", str(tiny_ckpt), "--height", "56", "--width",
                   "84", "--onnx", str(tmp_path / "x.onnx"), "--quantize", "int8"])
    assert rc == 2 and "--calib-bag" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_bench_unet_exports_with_a_dynamic_batch_and_its_metadata(tmp_path):
    """The benches' U-Net (from ``tiny``): [B,3,H,W] -> disparity in (0, 1) [B,1,H,W];
    onnxruntime on the exported file matches torch for a batch of 2, metadata inside."""
    import torch

    from depth_perception_training.tiny import (export_depth_onnx, unet_depth_module,
                                                unet_metadata)

    module = unet_depth_module(seed=1, widths=(4, 8)).eval()
    meta = unet_metadata(32, 48)
    path = export_depth_onnx(module, tmp_path / "unet.onnx", 32, 48, meta, dynamic_batch=True)
    x = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert want.shape == (2, 1, 32, 48) and ((want > 0) & (want < 1)).all()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["depth"], {"image": x})[0]                     # one call, batch 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    back = read_onnx_metadata(path)
    assert (back.output_kind, back.fixed_size, back.max_depth) == ("disparity", (32, 48), 80.0)
