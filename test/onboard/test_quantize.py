"""CPU INT8: static QDQ quantisation with onnxruntime, calibrated through the node's
preprocessing, checked against FP32 and run by the runtime like any ONNX model."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.onnx_metadata import read_onnx_metadata, write_onnx_metadata

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

H, W = 48, 96


def _conv_net():
    """Conv encoder-decoder with a skip, sigmoid disparity out; weights from a seed."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.dec = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Conv2d(8, 1, 3, padding=1)

        def forward(self, x):                                            # [1,3,H,W]
            a = self.enc1(x)
            b = nn.functional.interpolate(self.enc2(a), scale_factor=2.0, mode="nearest")
            return torch.sigmoid(self.head(self.dec(torch.cat([a, b], 1))))   # [1,1,H,W]

    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "conv.onnx"
    with torch.no_grad():
        torch.onnx.export(_conv_net(), (torch.rand(1, 3, H, W),), str(path),
                          input_names=["image"], output_names=["depth"], opset_version=17,
                          dynamo=False)
    write_onnx_metadata(path, ModelMetadata(output_kind="disparity", input_height=H,
                                            input_width=W, min_depth=0.5, max_depth=80.0,
                                            provenance={"source": "test conv net"}))
    return path


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    return make_synthetic_bags(tmp_path_factory.mktemp("bags"), frames=4, size=(192, 96),
                               conditions=("day-clear", "night"), seed=3)


@pytest.fixture(scope="module")
def calib_frames(fp32_model, bags):
    from depth_perception.runtime.calibration import frames_from_bags

    return frames_from_bags(bags, read_onnx_metadata(fp32_model), 6)


@pytest.fixture(scope="module")
def int8_model(fp32_model, calib_frames, tmp_path_factory):
    from depth_perception.runtime.quantize import quantize_onnx

    out = tmp_path_factory.mktemp("int8_out") / "conv.int8.onnx"
    return quantize_onnx(fp32_model, out, calib_frames,
                         calibration_source={"bags": ["day-clear", "night"]})


def test_calibration_reader_yields_the_node_preprocessing(fp32_model, bags, calib_frames):
    from depth_perception.data.bag import BagReader
    from depth_perception.runtime.calibration import spread_indices
    from depth_perception.runtime.processing import Preprocessor
    from depth_perception.runtime.quantize import calibration_reader

    # the frames, taken by hand: spread over both bags, each through the node's Preprocessor
    pre = Preprocessor(read_onnx_metadata(fp32_model))
    readers = [BagReader(b) for b in bags]
    expected = []
    for b, i in spread_indices([r.count("image") for r in readers], 6):
        r = readers[b]
        stamp = int(r.stamps("image")[i])
        intr = r.camera_info(r.nearest("camera_info", stamp)[0])
        expected.append(pre.prepare(r.image(i), intr).tensor)
    for r in readers:
        r.close()
    reader = calibration_reader(calib_frames, "image")
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    assert len(feeds) == 6 and all(list(f) == ["image"] for f in feeds)
    for feed, want in zip(feeds, expected):
        assert feed["image"].shape == (1, 3, H, W) and feed["image"].dtype == np.float32
        np.testing.assert_array_equal(feed["image"], want)       # bit-exact
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], expected[0])
    with pytest.raises(ValueError, match=r"\[N,3,H,W\]"):
        calibration_reader(np.zeros((0, 3, H, W), np.float32), "image")


def test_int8_model_is_qdq_with_metadata_and_parity(fp32_model, int8_model, calib_frames):
    result = int8_model
    graph = onnx.load(str(result.path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    convs = [n.name for n in onnx.load(str(fp32_model)).graph.node if n.op_type == "Conv"]
    n_conv = len(convs)
    # every Conv but the head (the last one, feeding Sigmoid -> output), nothing else
    assert result.quantized_ops == {"Conv": n_conv - 1}
    head = [n for n in graph.node if n.name == convs[-1]][0]
    assert head.op_type == "Conv" and not any(
        p.op_type == "DequantizeLinear" and p.output[0] in head.input for p in graph.node)
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= n_conv - 1                    # weights stored as int8
    q = read_onnx_metadata(result.path).provenance["quantization"]
    assert q["precision"] == "int8" and q["format"] == "QDQ"
    assert q["calibration"]["frames"] == len(calib_frames) == 6
    assert q["calibration"]["bags"] == ["day-clear", "night"]
    assert q["op_types"] == ["Conv", "ConvTranspose", "Gemm"]
    assert q["quantized_ops"] == {"Conv": n_conv - 1} and q["kept_fp32"] == [convs[-1]]
    assert q["parity"]["frames"] == 6 and q["parity"]["abs_rel"] == result.abs_rel
    assert 0 < result.abs_rel < 0.05                          # int8 is not bit-exact
    assert read_onnx_metadata(result.path).provenance["source"] == "test conv net"


def test_runtime_runs_int8_like_any_onnx(fp32_model, int8_model, bags):
    from depth_perception.data.bag import BagReader
    from depth_perception.runtime.estimator import DepthEstimator

    reader = BagReader(bags[1])
    rgb, intr = reader.image(2), reader.camera_info(0)
    reader.close()
    fp32 = DepthEstimator.load(str(fp32_model), backend="onnxruntime")
    int8 = DepthEstimator.load(str(int8_model.path), backend="onnxruntime")
    assert int8.backend.precision == "int8" and fp32.backend.precision == "fp32"
    d32, d8 = fp32.estimate(rgb, intr).depth, int8.estimate(rgb, intr).depth
    assert d8.shape == d32.shape == (96, 192)
    ok = np.isfinite(d32) & np.isfinite(d8)
    assert ok.mean() > 0.99
    rel = np.abs(d8[ok] - d32[ok]) / d32[ok]
    assert 0 < rel.mean() < 0.05
    fp32.close()
    int8.close()


def test_refusals(fp32_model, calib_frames, tmp_path):
    from depth_perception.runtime.quantize import QuantizeConfig, quantize_onnx

    out = tmp_path / "x.int8.onnx"
    with pytest.raises(ValueError, match=r"abs_rel 0\.\d+ on 6 frames \(tolerance 1e-09\)"):
        quantize_onnx(fp32_model, out, calib_frames, QuantizeConfig(tolerance=1e-9))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="cannot quantise op types \\['Conv2d'\\]"):
        quantize_onnx(fp32_model, out, calib_frames, QuantizeConfig(op_types=("Conv2d",)))
    with pytest.raises(ValueError, match="nothing .* was quantised"):
        quantize_onnx(fp32_model, out, calib_frames, QuantizeConfig(op_types=("MatMul",)))
    with pytest.raises(ValueError, match=r"takes \[N,3,48,96\]"):
        quantize_onnx(fp32_model, out, calib_frames[:, :, :32], QuantizeConfig())
    with pytest.raises(ValueError, match="overwrite its FP32 source"):
        quantize_onnx(fp32_model, fp32_model, calib_frames)


def test_quantize_verb(fp32_model, bags, tmp_path, capsys):
    from depth_perception.cli import main

    out = tmp_path / "verb.int8.onnx"
    rc = main(["quantize", "--onnx", str(fp32_model), "--out", str(out), "--calib-bag",
               *map(str, bags), "--calib-frames", "4"])
    assert rc == 0, capsys.readouterr().err
    assert "abs_rel" in capsys.readouterr().out
    q = read_onnx_metadata(out).provenance["quantization"]
    assert q["calibration"]["frames"] == 4
    assert q["calibration"]["bags"] == [str(b.resolve()) for b in bags]
