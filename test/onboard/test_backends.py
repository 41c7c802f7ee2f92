"""Backends: metadata in ONNX, checks against graphs/engines, torch vs onnxruntime parity."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.backends import load_backend
from depth_perception.runtime.model_source import resolve_model
from depth_perception.runtime.backends.onnxruntime_backend import select_providers
from depth_perception.runtime.backends.tensorrt_backend import (
    EngineTensor, check_engine_metadata, engine_io, engine_metadata_path, load_engine_metadata,
    plan_bindings, resolve_input_shapes)
from depth_perception.runtime.estimator import DepthEstimator
from depth_perception.runtime.onnx_metadata import read_onnx_metadata, write_onnx_metadata
from support.models_fixtures import (save_tiny_depth_anything, tiny_depth_anything,
                             tiny_depth_anything_onnx)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
# camera 160x96 -> dynamic input with short side 56 is 98x56; the ONNX is exported at that
CAM = Intrinsics(fx=120.0, fy=118.0, cx=80.3, cy=47.6, width=160, height=96)
H, W = 56, 98


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folder = save_tiny_depth_anything(root / "tiny_da_metric")
    # export the very weights saved in the folder, loaded back by transformers
    from transformers import AutoModelForDepthEstimation
    model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    onnx_path = tiny_depth_anything_onnx(root / "tiny_da.onnx", H, W, model=model)
    return folder, onnx_path


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (CAM.height, CAM.width, 3), dtype=np.uint8)


# -- ONNX metadata ----------------------------------------------------------------
def test_onnx_metadata_round_trip(tiny_models, tmp_path):
    _, onnx_path = tiny_models
    meta = read_onnx_metadata(onnx_path)
    assert (meta.input_height, meta.input_width, meta.output_kind) == (H, W, "metric_depth")
    new = ModelMetadata(output_kind="disparity", input_height=H, input_width=W,
                        min_depth=0.5, max_depth=60.0, mean=(0.1, 0.2, 0.3),
                        provenance={"run": "abc", "precision": "fp32"})
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(onnx_path.read_bytes())
    write_onnx_metadata(copy, new)
    write_onnx_metadata(copy, new)            # rewriting replaces, never duplicates
    import onnx
    keys = [p.key for p in onnx.load(str(copy)).metadata_props]
    assert keys.count("depth_perception") == 1
    assert read_onnx_metadata(copy).to_dict() == new.to_dict()


def test_graph_name_mismatch_is_refused(tmp_path):
    from depth_perception.runtime.backends.torch_backend import transformers_depth_module
    from support.models_fixtures import export_depth_onnx
    meta = ModelMetadata(input_height=28, input_width=28, input_name="image")
    path = export_depth_onnx(transformers_depth_module(tiny_depth_anything()),
                             tmp_path / "pv.onnx", 28, 28, meta, input_name="pixel_values")
    with pytest.raises(ValueError, match="'image'.*pixel_values"):
        load_backend(path, "onnxruntime")


def test_graph_size_mismatch_is_refused(tiny_models, tmp_path):
    _, onnx_path = tiny_models
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(onnx_path.read_bytes())
    write_onnx_metadata(bad, ModelMetadata(input_height=H, input_width=W + 14))
    with pytest.raises(ValueError, match="width 98 != 112"):
        load_backend(bad)


def test_missing_metadata_is_refused_with_how_to_add(tiny_models, tmp_path):
    import onnx
    _, onnx_path = tiny_models
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="no 'depth_perception' entry.*write_onnx_metadata"):
        load_backend(bare)
    # supplying the metadata explicitly works, and is still checked against the graph
    backend, meta = load_backend(bare, metadata=read_onnx_metadata(onnx_path))
    assert meta.input_height == H and backend.name == "onnxruntime"
    with pytest.raises(ValueError, match="output"):
        load_backend(bare, metadata=ModelMetadata(input_height=H, input_width=W,
                                                  output_name="predicted_depth"))


def test_missing_files_name_the_file(tmp_path):
    for name in ("nope.onnx", "nope.engine", "missing_folder/"):
        with pytest.raises(FileNotFoundError, match="nope|missing_folder"):
            load_backend(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        read_onnx_metadata(tmp_path / "nope.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model"):
        load_backend(tmp_path / "empty")


def test_hub_id_offline_says_how_to_get_it():
    # conftest sets HF_HUB_OFFLINE=1: an id that is not cached cannot load
    assert resolve_model("depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf").kind == "hub"
    with pytest.raises(FileNotFoundError, match="fetch it in advance.*huggingface-cli download"):
        load_backend("depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf", "torch")


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_tensorrt_backend_without_tensorrt_says_what_to_install(tiny_models, tmp_path):
    _, onnx_path = tiny_models
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    for model in (engine, onnx_path):
        with pytest.raises(RuntimeError, match="pip install tensorrt.*onnxruntime"):
            load_backend(model, "tensorrt")
    # 'auto' on an engine file needs TensorRT too
    with pytest.raises(RuntimeError, match="JetPack"):
        load_backend(engine)


def test_options_and_backends_are_validated(tiny_models):
    folder, onnx_path = tiny_models
    with pytest.raises(ValueError, match="unknown option.*provider"):
        load_backend(onnx_path, "onnxruntime", provider=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="backend must be one of"):
        load_backend(onnx_path, "tflite")
    with pytest.raises(ValueError, match="needs an .onnx"):
        load_backend(folder, "onnxruntime")
    with pytest.raises(ValueError, match="not available"):
        select_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    assert select_providers(None, ["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            load_backend(folder, "torch", device="cuda")


def test_auto_picks_by_format(tiny_models, caplog):
    folder, onnx_path = tiny_models
    with caplog.at_level("INFO"):
        ort_backend, _ = load_backend(onnx_path)
        torch_backend, meta = load_backend(folder, device="cpu")
    assert ort_backend.name == "onnxruntime" and ort_backend.device == "CPUExecutionProvider"
    assert torch_backend.name == "torch" and torch_backend.device == "cpu"
    assert "backend auto -> onnxruntime" in caplog.text and "backend auto -> torch" in caplog.text
    # metadata derived from the transformers config: metric with its max_depth
    assert meta.output_kind == "metric_depth" and meta.max_depth == 20.0
    assert meta.input_name == "pixel_values" and meta.fixed_size is None


def test_relative_transformers_model_is_relative_disparity(tmp_path):
    folder = save_tiny_depth_anything(tmp_path / "rel", metric=False)
    backend, meta = load_backend(folder, "torch", device="cpu")
    assert meta.output_kind == "relative_disparity"
    with pytest.raises(ValueError, match="relative_disparity"):
        DepthEstimator(backend, meta, "model")


def test_torch_and_onnxruntime_give_the_same_depth(tiny_models):
    folder, onnx_path = tiny_models
    with DepthEstimator.load(folder, "torch", device="cpu", short_side=H) as est_torch, \
            DepthEstimator.load(onnx_path, "onnxruntime") as est_ort:
        for seed in range(2):
            rgb = _frame(seed)
            a = est_torch.estimate(rgb, CAM)
            b = est_ort.estimate(rgb, CAM)
            assert a.prepared.tensor.shape == b.prepared.tensor.shape == (1, 3, H, W)
            assert a.depth.shape == b.depth.shape == (CAM.height, CAM.width)
            assert np.isfinite(a.depth).all()
            rel = np.abs(a.depth - b.depth) / np.abs(b.depth)
            assert rel.max() < 1e-4
            assert (a.backend, b.backend) == ("torch", "onnxruntime")
            # metric output sigmoid * 20: inside (0, 20] and not constant
            assert 0 < a.depth.min() < a.depth.max() <= 20.0


# -- TensorRT binding logic with a fake engine ----------------------------------------
class _Enum:
    def __init__(self, name):
        self.name = name


class FakeEngine:
    """The TensorRT 10 engine methods engine_io uses."""

    def __init__(self, tensors):
        self._t = tensors          # list of (name, mode, shape, dtype)

    @property
    def num_io_tensors(self):
        return len(self._t)

    def _get(self, name):
        return next(t for t in self._t if t[0] == name)

    def get_tensor_name(self, i):
        return self._t[i][0]

    def get_tensor_mode(self, name):
        return _Enum(self._get(name)[1])

    def get_tensor_shape(self, name):
        return list(self._get(name)[2])

    def get_tensor_dtype(self, name):
        return _Enum(self._get(name)[3])


def _meta(**kw):
    return ModelMetadata(input_height=H, input_width=W, **kw)


def test_engine_io_and_binding_plan():
    engine = FakeEngine([("image", "INPUT", (1, 3, H, W), "FLOAT"),
                         ("depth", "OUTPUT", (1, 1, H, W), "HALF")])
    io = engine_io(engine)
    assert io["image"] == EngineTensor("image", True, (1, 3, H, W), "float32")
    assert io["depth"].dtype == "float16" and not io["depth"].is_input
    check_engine_metadata(io, _meta(), "fake.engine")
    shapes = resolve_input_shapes(io, _meta())
    assert shapes == {"image": (1, 3, H, W)}
    plan = {b.name: b for b in plan_bindings(io, {**shapes, "depth": (1, 1, H, W)})}
    assert plan["image"].nbytes == 3 * H * W * 4
    assert plan["depth"].nbytes == H * W * 2


def test_dynamic_engine_gets_the_metadata_size():
    io = engine_io(FakeEngine([("image", "INPUT", (-1, 3, -1, -1), "FLOAT"),
                               ("depth", "OUTPUT", (-1, 1, -1, -1), "FLOAT")]))
    check_engine_metadata(io, _meta(), "dyn.engine")
    shapes = resolve_input_shapes(io, _meta())
    assert shapes["image"] == (1, 3, H, W)            # H rows, W columns: not transposed
    with pytest.raises(ValueError, match="resolved shape"):
        plan_bindings(io, {**shapes, "depth": (-1, 1, H, W)})   # output not resolved
    with pytest.raises(ValueError, match="no resolved shape"):
        plan_bindings(io, shapes)
    with pytest.raises(ValueError, match="one input size"):
        check_engine_metadata(io, ModelMetadata(), "dyn.engine")


@pytest.mark.parametrize("tensors,meta,match", [
    ([("pixel_values", "INPUT", (1, 3, H, W), "FLOAT"), ("depth", "OUTPUT", (1, 1, H, W),
                                                         "FLOAT")], _meta(), "pixel_values"),
    ([("image", "INPUT", (1, 3, W, H), "FLOAT"), ("depth", "OUTPUT", (1, 1, W, H), "FLOAT")],
     _meta(), "height 98 != 56"),
    ([("image", "INPUT", (1, 3, H, W), "FLOAT"), ("out", "OUTPUT", (1, 1, H, W), "FLOAT")],
     _meta(), "'depth'"),
    ([("image", "INPUT", (1, 3, H, W), "FLOAT"), ("mask", "INPUT", (1, 1, H, W), "FLOAT"),
      ("depth", "OUTPUT", (1, 1, H, W), "FLOAT")], _meta(), "one image tensor"),
    ([("image", "INPUT", (4, 3, H, W), "FLOAT"), ("depth", "OUTPUT", (4, 1, H, W), "FLOAT")],
     _meta(), "batch 4"),
])
def test_engine_metadata_mismatch_is_refused(tensors, meta, match):
    with pytest.raises(ValueError, match=match):
        check_engine_metadata(engine_io(FakeEngine(tensors)), meta, "fake.engine")


def test_unsupported_engine_dtype():
    with pytest.raises(ValueError, match="FP8"):
        engine_io(FakeEngine([("image", "INPUT", (1, 3, H, W), "FP8")]))


def test_engine_metadata_file_beside_engine(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model.engine.json"):
        engine_metadata_path(engine)
    _meta(provenance={"precision": "fp16"}).save(tmp_path / "model.json")
    assert load_engine_metadata(engine).provenance["precision"] == "fp16"
    (tmp_path / "model.engine.json").write_text(json.dumps(_meta(max_depth=50.0).to_dict()))
    assert load_engine_metadata(engine).max_depth == 50.0      # <engine>.json wins


# -- real TensorRT (skipped without it) ------------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_engine_matches_onnxruntime(tiny_models, tmp_path):
    import tensorrt as trt
    _, onnx_path = tiny_models
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    engine_path = tmp_path / "tiny.engine"
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    read_onnx_metadata(onnx_path).save(tmp_path / "tiny.engine.json")
    with DepthEstimator.load(engine_path, "tensorrt") as est_trt, \
            DepthEstimator.load(onnx_path, "onnxruntime") as est_ort:
        rgb = _frame(3)
        a, b = est_trt.estimate(rgb, CAM), est_ort.estimate(rgb, CAM)
        assert a.backend == "tensorrt"
        assert (np.abs(a.depth - b.depth) / b.depth).max() < 1e-3


def test_package_checkpoint_folder_runs_on_torch(tmp_path):
    """A checkpoint folder of this package (save_depth_model) opens on the torch backend
    and gives the same depth as its own inference module."""
    import torch
    from depth_perception.models import load_depth_model, save_depth_model
    from depth_perception.models.dpt_depth import DPTDepthConfig, DPTDepthNet
    torch.manual_seed(0)
    net = DPTDepthNet(DPTDepthConfig(size="tiny", min_depth=0.5, max_depth=40.0))
    folder = save_depth_model(tmp_path / "ckpt", net)
    assert resolve_model(folder).kind == "checkpoint"
    with DepthEstimator.load(folder, device="cpu", short_side=H) as est:
        assert est.backend.name == "torch" and est.metadata.output_kind == "metric_depth"
        res = est.estimate(_frame(5), CAM)
    assert res.depth.shape == (CAM.height, CAM.width)
    assert np.nanmin(res.depth) >= 0.5 and np.nanmax(res.depth) <= 40.0
    module, _ = load_depth_model(folder)
    with torch.inference_mode():
        ref = module(torch.from_numpy(res.prepared.tensor)).numpy()
    from depth_perception.runtime.processing import postprocess
    np.testing.assert_allclose(res.depth, postprocess(ref, res.prepared, est.metadata),
                               rtol=1e-5)


def test_tensorrt_from_onnx_builds_engine_through_the_cache(tiny_models, tmp_path, monkeypatch):
    """backend='tensorrt' on an .onnx asks the engine cache (build once) and opens its engine.

    TensorRT itself is absent here: the import check and the engine class are replaced,
    the cache logic (ensure_engine with a stand-in builder) is the real one.
    """
    from depth_perception.runtime import engine as tensorrt_build
    from depth_perception.runtime.backends import tensorrt_backend as trt_mod

    _, onnx_path = tiny_models
    builds, opened = [], []

    def fake_builder(onnx, engine_path, *, config, calibration=None, key=None):
        builds.append((Path(onnx), config.precision))
        Path(engine_path).write_bytes(b"engine")
        tensorrt_build.write_engine_metadata(engine_path, read_onnx_metadata(onnx), key,
                                             {"precision": config.precision})
        return Path(engine_path)

    env = tensorrt_build.TensorRTEnvironment(gpu_name="Test GPU", tensorrt_version="10.9.0")

    def engine_builder(onnx, precision, cache_dir=None):    # the real cache, a stand-in build
        return tensorrt_build.ensure_engine(onnx, precision, cache_dir, environment=env,
                                            builder=fake_builder)
    monkeypatch.setattr(trt_mod, "import_tensorrt", lambda: None)

    class FakeEngineBackend:
        def __init__(self, model, **options):
            opened.append(Path(model))
            self.name, self.precision, self.device = "tensorrt", "fp16", "cuda:0"
            self.metadata = read_onnx_metadata(onnx_path)

    monkeypatch.setattr(trt_mod, "TensorRTBackend", FakeEngineBackend)
    for _ in range(2):  # second start reuses the cached engine
        load_backend(onnx_path, "tensorrt", precision="fp16", engine_cache_dir=tmp_path,
                     engine_builder=engine_builder)
    assert builds == [(Path(onnx_path), "fp16")]
    assert len(opened) == 2 and opened[0] == opened[1] and opened[0].parent == tmp_path


def test_transformers_folder_whose_weights_do_not_fit_is_refused_like_export(tmp_path):
    """The runtime refuses what export refuses (one resolver, one weight check); an
    explicit option lets it through."""
    from safetensors.torch import load_file, save_file
    from support.models_fixtures import save_tiny_depth_anything

    folder = save_tiny_depth_anything(tmp_path / "da")
    state = load_file(str(folder / "model.safetensors"))
    dropped = sorted(k for k in state if k.startswith("head."))[0]
    del state[dropped]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert resolve_model(folder).kind == "transformers"
    with pytest.raises(ValueError, match="1 missing") as info:
        load_backend(folder, "torch", device="cpu")
    assert dropped in str(info.value) and "allow_weight_mismatch" in str(info.value)
    opened, _ = load_backend(folder, "torch", device="cpu", allow_weight_mismatch=True)
    opened.close()


def test_tensorrt_on_onnx_without_an_engine_builder_says_so(tiny_models, monkeypatch):
    from depth_perception.runtime.backends import tensorrt_backend as trt_mod

    monkeypatch.setattr(trt_mod, "import_tensorrt", lambda: None)
    with pytest.raises(ValueError, match="engine builder"):
        load_backend(tiny_models[1], "tensorrt")
