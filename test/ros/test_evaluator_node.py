"""Online evaluator node over real DDS; online vs offline agreement on a real replay."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]


def _params(**kw):
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in kw.items()]


def test_dense_reference_scored_published_and_reported(tmp_path):
    from support.rostools import RosHarness, camera_info_msg, header
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Empty

    from depth_perception import conversions
    from depth_perception.ros import interfaces
    from depth_perception.camera import Intrinsics
    from depth_perception.ros.evaluator_node import EvaluatorNode

    K = Intrinsics(40.0, 40.0, 15.5, 11.5, 32, 24)
    with RosHarness() as ros:
        node = ros.add(EvaluatorNode(context=ros.context, parameter_overrides=_params(
            reference="topic", condition="night", output_dir=str(tmp_path / "online"),
            model_name="scaled", max_frames=4)))
        FrameMetrics = interfaces.message_type("FrameMetrics")
        metrics = ros.collect(FrameMetrics, "/depth_evaluator/frame_metrics") \
            if FrameMetrics is not None else None
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        pub_depth = ros.publisher(Image, "/depth/image", reliable)
        pub_ref = ros.publisher(Image, "/reference_depth", reliable)
        pub_info = ros.publisher(CameraInfo, "/depth/camera_info", reliable)
        pub_report = ros.publisher(Empty, "/depth_evaluator/write_report", reliable)
        for p in (pub_depth, pub_ref, pub_info, pub_report):
            ros.wait_matched(p)
        if metrics is not None:
            ros.wait_subscribed(metrics)
        rng = np.random.default_rng(0)
        for k in range(4):
            stamp = 5 * 10**9 + k * 10**8
            ref = rng.uniform(2.0, 30.0, (24, 32)).astype(np.float32)
            ref[:3] = np.nan                                   # sky: no reference
            pred = ref * np.float32(1.1)
            pred[:3] = np.inf                                  # REP 117 beyond range
            pub_info.publish(camera_info_msg(K, stamp))
            # prediction first for even frames, reference first for odd ones
            msgs = [(pub_depth, pred), (pub_ref, ref)]
            for pub, d in (msgs if k % 2 == 0 else msgs[::-1]):
                pub.publish(conversions.depth_to_image(d, header(stamp)))
        if metrics is not None:
            got = metrics.wait_count(4)
            assert [m.condition for m in got] == ["night"] * 4
            for m in got:
                assert m.abs_rel == pytest.approx(0.1, abs=1e-5)
                assert m.a1 == 1.0 and m.valid_points == 21 * 32
                assert m.header.frame_id == "camera_optical_frame"
            assert sorted(m.header.stamp.nanosec for m in got) == [0, 10**8, 2 * 10**8,
                                                                    3 * 10**8]
        from support.rostools import wait_for
        wait_for(lambda: node.frames_scored == 4, what="4 scored frames")
        # max_frames=4: the report is written after the 4th frame ...
        report = tmp_path / "online" / "metrics.json"
        wait_for(report.exists, what="the report after max_frames")
        report.unlink()
        # ... and again on ~/write_report
        pub_report.publish(Empty())
        wait_for(report.exists, what="the report on ~/write_report")
    m = json.loads((tmp_path / "online" / "metrics.json").read_text())
    assert m["per_condition"]["night"]["abs_rel"] == pytest.approx(0.1, abs=1e-5)
    assert m["per_condition"]["night"]["frames"] == 4
    assert "night absRel" in (tmp_path / "online" / "report.md").read_text()


def test_lidar_without_any_transform_source_is_refused_clearly():
    from support.rostools import RosHarness

    from depth_perception.ros.evaluator_node import EvaluatorNode

    with RosHarness() as ros:
        with pytest.raises(ValueError, match="lidar_to_camera needs 16 values"):
            EvaluatorNode(context=ros.context,
                          parameter_overrides=_params(lidar_to_camera=[1.0, 2.0]))
        with pytest.raises(ValueError, match="reference must be 'lidar' or 'topic'"):
            EvaluatorNode(context=ros.context, parameter_overrides=_params(reference="gt"))


def test_launch_file_names_exist():
    """Every executable/module/parameter the launch file names exists (no launch_ros here)."""
    path = ROOT / "launch" / "evaluate_bag.launch.py"
    tree = ast.parse(path.read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    import importlib

    for module in (consts["EVALUATOR_MODULE"], consts["DEPTH_MODULE"]):
        assert callable(importlib.import_module(module).main)
    from depth_perception.ros.evaluator_node import PARAMETERS
    declared = {name for name, _, _ in PARAMETERS}
    used = set(ast.literal_eval(ast.unparse(n)) for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)) & declared
    assert {"condition", "output_dir", "max_depth", "reference", "tf_bag"} <= used
    args = {name for name, _, _ in consts["ARGUMENTS"]}
    assert {"bag", "model", "condition", "output_dir", "use_sim_time"} <= args
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        return
    spec = importlib.util.spec_from_file_location("evaluate_bag_launch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.generate_launch_description() is not None


@pytest.fixture(scope="module")
def night_bag_and_model(tmp_path_factory):
    from support.models_fixtures import tiny_depth_anything_onnx

    from depth_perception.synth import make_synthetic_bags

    tmp = tmp_path_factory.mktemp("online")
    # a wide lens (plumb_bob k1 = -0.3): online (the node's rectification) and offline
    # (evaluate's samples) must rectify to the same pixels
    bag = make_synthetic_bags(tmp / "bags", frames=8, size=(160, 48), conditions=("night",),
                              seed=0, distortion=("plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0)))[0]
    return bag, tiny_depth_anything_onnx(tmp / "tiny.onnx", 56, 168)


def test_online_replay_agrees_with_offline(night_bag_and_model, tmp_path):
    """The bag replayed over DDS through the depth node and scored live by the evaluator
    gives the same per-frame abs_rel as the offline tool (same model, same LiDAR)."""
    from depth_perception.ros.online_evaluation import evaluate_online
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate

    bag, model = night_bag_and_model
    offline = evaluate([bag], EvaluateConfig(), models=[ModelSpec(str(model), "onnxruntime",
                                                                  "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5)
    off = {f.stamp_ns: f for f in offline.models["tiny"].frames}
    on = {f.stamp_ns: f for f in online.models["tiny"].frames}
    assert len(off) == 8
    # the depth node may reject the first image (its CameraInfo comes second) and drop
    # frames when inference is slower than the replay: those are simply not scored
    assert len(on) >= 5, f"only {len(on)} of 8 frames scored online"
    assert set(on) <= set(off)
    for stamp, f in on.items():
        assert f.condition == "night"
        assert f.metrics["abs_rel"] == pytest.approx(off[stamp].metrics["abs_rel"], abs=1e-3)
        assert f.metrics["n_valid"] == off[stamp].metrics["n_valid"]      # same LiDAR pixels
    mean_on = np.mean([f.metrics["abs_rel"] for f in on.values()])
    mean_off = np.mean([off[s].metrics["abs_rel"] for s in on])
    assert mean_on == pytest.approx(mean_off, abs=1e-3)
    assert online.models["tiny"].info["images_played"] == 8


def test_online_dense_reference_agrees_with_offline(night_bag_and_model):
    from depth_perception.ros.online_evaluation import evaluate_online
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate

    bag, model = night_bag_and_model
    config = EvaluateConfig(reference="/ground_truth/depth")
    offline = evaluate([bag], config, models=[ModelSpec(str(model), "onnxruntime", "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5, reference="/ground_truth/depth")
    assert online.settings() == offline.settings()          # same protocol, mergeable
    off = {f.stamp_ns: f.metrics for f in offline.models["tiny"].frames}
    on = {f.stamp_ns: f.metrics for f in online.models["tiny"].frames}
    assert len(on) >= 5 and set(on) <= set(off)
    for stamp, m in on.items():
        assert m["abs_rel"] == pytest.approx(off[stamp]["abs_rel"], abs=1e-3)
        assert m["n_valid"] == off[stamp]["n_valid"]


def _with_log_variance(src: Path, dst: Path) -> Path:
    """``src`` with a second output ``log_variance`` = 2 ln(depth) - 6 (a model with an
    uncertainty output: the node publishes its confidence)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    depth = m.graph.output[0].name
    m.graph.initializer.extend([numpy_helper.from_array(np.array(2.0, np.float32), "lv_a"),
                                numpy_helper.from_array(np.array(-6.0, np.float32), "lv_b")])
    m.graph.node.extend([helper.make_node("Log", [depth], ["lv_log"]),
                         helper.make_node("Mul", ["lv_log", "lv_a"], ["lv_mul"]),
                         helper.make_node("Add", ["lv_mul", "lv_b"], ["log_variance"])])
    out = onnx.ValueInfoProto()
    out.CopyFrom(m.graph.output[0])
    out.name = "log_variance"
    m.graph.output.append(out)
    onnx.save(m, str(dst))
    return dst


def test_online_confidence_is_scored_as_offline(night_bag_and_model, tmp_path):
    """A model with an uncertainty output: the evaluator takes the node's
    confidence/image beside each depth frame and scores AUSE/AURG as the offline tool
    scores the same model's confidence."""
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.ros.online_evaluation import evaluate_online

    bag, plain = night_bag_and_model
    model = _with_log_variance(plain, tmp_path / "uncertain.onnx")
    offline = evaluate([bag], EvaluateConfig(), models=[ModelSpec(str(model), "onnxruntime",
                                                                  "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5, confidence=True)
    off = {f.stamp_ns: f.metrics for f in offline.models["tiny"].frames}
    on = {f.stamp_ns: f.metrics for f in online.models["tiny"].frames}
    assert len(on) >= 5 and set(on) <= set(off)
    for stamp, m in on.items():
        assert m["abs_rel"] == pytest.approx(off[stamp]["abs_rel"], abs=1e-3)
        for key in ("ause_abs_rel", "aurg_abs_rel", "ause_rmse", "aurg_rmse"):
            assert m[key] == pytest.approx(off[stamp][key], abs=1e-4), key
    assert np.isfinite([m["aurg_abs_rel"] for m in on.values()]).all()


def test_online_fused_stream_and_its_confidence_agree_with_offline(night_bag_and_model,
                                                                   tf2_msgs_built):
    """The node's temporal fusion, live: the replayed /tf gives the node the camera's
    motion, the evaluator scores the fused depth and its temporal-agreement confidence,
    frame by frame as the offline tool scores the '+ fusion' row of the same model."""
    from depth_perception.evaluation.offline import (EvaluateConfig, ModelSpec, evaluate,
                                                     fused_name)
    from depth_perception.ros.online_evaluation import evaluate_online

    bag, model = night_bag_and_model
    offline = evaluate([bag], EvaluateConfig(temporal_fusion=True, fusion_threshold=0.2,
                                             fusion_max_age=4),
                       models=[ModelSpec(str(model), "onnxruntime", "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5, confidence=True,
                             fusion={"fusion_threshold": 0.2, "fusion_max_age": 4})
    single = {f.stamp_ns: f.metrics for f in offline.models["tiny"].frames}
    off = {f.stamp_ns: f.metrics for f in offline.models[fused_name("tiny")].frames}
    on = {f.stamp_ns: f.metrics for f in online.models["tiny"].frames}
    # every frame, in order: a frame lost online would restart the node's history
    assert sorted(on) == sorted(off) and len(on) == 8
    for stamp, m in on.items():
        assert m["abs_rel"] == pytest.approx(off[stamp]["abs_rel"], abs=1e-4)
        for key in ("ause_abs_rel", "aurg_abs_rel"):
            assert m[key] == pytest.approx(off[stamp][key], abs=1e-4), key
    # the fusion did something: after the first frame, fused and single-frame differ
    later = sorted(on)[1:]
    assert any(abs(on[s]["abs_rel"] - single[s]["abs_rel"]) > 1e-4 for s in later)


def test_online_tae_agrees_with_offline(tmp_path):
    """The evaluator's TAE of consecutive frames (camera poses from the replayed
    odometry and the bag's static TF) equals the offline tool's pair by pair: on a bag
    without a moving-object mask or dense ground truth (every pixel static)..."""
    from support.bagtools import make_drive_bag
    from support.models_fixtures import tiny_depth_anything_onnx

    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.ros.online_evaluation import evaluate_online

    # a wall of LiDAR points 8-12 m ahead of a camera driving 0.2 m a frame
    y, z = np.meshgrid(np.linspace(-3, 3, 40), np.linspace(-1.5, 0.5, 12))
    x = 8.0 + 4.0 * (y + 3) / 6
    points = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    bag = make_drive_bag(tmp_path / "drive", "mcap", n=6, lidar_points=points,
                         with_gt=False)
    model = tiny_depth_anything_onnx(tmp_path / "tiny.onnx", 98, 126)
    offline = evaluate([bag], EvaluateConfig(),
                       models=[ModelSpec(str(model), "onnxruntime", "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5, temporal=True)
    off = {r.stamp_ns: r.values for r in offline.models["tiny"].temporal}
    on = {r.stamp_ns: r.values for r in online.models["tiny"].temporal}
    assert len(online.models["tiny"].frames) == 6 and len(off) == 5
    assert sorted(on) == sorted(off)
    for stamp, v in on.items():
        assert v["pixels"] == off[stamp]["pixels"] > 0
        assert v["tae"] == pytest.approx(off[stamp]["tae"], rel=1e-6, abs=1e-9)
    assert not any(r.masked for r in online.models["tiny"].temporal)   # all pixels static


def test_online_tae_with_moving_cars_agrees_with_offline(tmp_path):
    """... and on a synthetic drive with oncoming cars: the evaluator also takes the
    bag's moving-object mask and dense ground truth, so the same static, co-visible
    pixels are compared."""
    from support.models_fixtures import tiny_depth_anything_onnx

    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.ros.online_evaluation import evaluate_online
    from depth_perception.synth import SynthConfig, make_synthetic_bags

    bag, = make_synthetic_bags(tmp_path / "bags", frames=6, size=(160, 48),
                               conditions=("day-clear",), seed=0,
                               config=SynthConfig(moving_car_probability=1.0))
    model = tiny_depth_anything_onnx(tmp_path / "tiny.onnx", 56, 168)
    offline = evaluate([bag], EvaluateConfig(),
                       models=[ModelSpec(str(model), "onnxruntime", "tiny")])
    online = evaluate_online(bag, str(model), model_name="tiny", backend="onnxruntime",
                             rate=0.5, temporal=True)
    off = {r.stamp_ns: r for r in offline.models["tiny"].temporal}
    on = {r.stamp_ns: r for r in online.models["tiny"].temporal}
    assert len(off) == 5 and sorted(on) == sorted(off)
    for stamp, r in on.items():
        assert r.masked and off[stamp].masked                 # static pixels from the mask
        assert r.values["pixels"] == off[stamp].values["pixels"] > 0
        assert r.values["tae"] == pytest.approx(off[stamp].values["tae"], rel=1e-6)

