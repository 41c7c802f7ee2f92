"""msg/ interfaces: built with cmake against the PyPI wheels (scripts/build_interfaces.sh),
importable as depth_perception.msg, and ~/status (DepthStatus) over real DDS."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception.ros import interfaces  # noqa: E402
from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from support.rostools import (RosHarness, camera_info_msg, image_msg, node_state,  # noqa: E402
                      stamp_ns, wait_for)

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_interfaces.sh"


@pytest.fixture(scope="module")
def built():
    """Build msg/ into the venv running the tests (fast no-op when up to date)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the msg/ interfaces cannot be built here")
    env = dict(os.environ, VENV=sys.prefix, ROS_SOURCED="0")
    proc = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    interfaces.availability.cache_clear()
    found = interfaces.availability()
    assert found.available, found.reason
    return proc


def test_build_is_idempotent_and_message_loads_in_a_fresh_interpreter(built):
    env = dict(os.environ, VENV=sys.prefix, ROS_SOURCED="0")
    again = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "up to date" in again.stdout
    # no PYTHONPATH / LD_LIBRARY_PATH help: the .pkg file and the preload do it
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    code = ("from depth_perception.msg import DepthStatus, FrameMetrics\n"
            "from rclpy.serialization import serialize_message, deserialize_message\n"
            "import depth_perception\n"
            "m = FrameMetrics(abs_rel=0.25, a1=0.5, valid_points=7, condition='night')\n"
            "r = deserialize_message(serialize_message(m), FrameMetrics)\n"
            "print(r.abs_rel, r.a1, r.valid_points, r.condition, depth_perception.__version__)")
    out = subprocess.run([sys.executable, "-c", code], env=clean, cwd="/", text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.25", "0.5", "7", "night",
                                  __import__("depth_perception").__version__]


def test_message_definitions(built):
    DepthStatus = interfaces.require("DepthStatus")
    FrameMetrics = interfaces.require("FrameMetrics")
    status = DepthStatus()
    for name in ("header", "state", "message", "backend", "precision", "model",
                 "scale_source", "scale", "inference_ms", "latency_ms", "input_hz",
                 "output_hz", "frames_in", "frames_out", "frames_dropped", "frames_bad"):
        assert hasattr(status, name), name
    types = DepthStatus.get_fields_and_field_types()
    assert types["header"] == "std_msgs/Header" and types["scale"] == "float"
    assert {types[k] for k in ("frames_in", "frames_out", "frames_dropped",
                               "frames_bad")} == {"uint64"}
    metrics = FrameMetrics()
    for name in ("header", "condition", "abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2",
                 "a3", "valid_points"):
        assert hasattr(metrics, name), name
    assert FrameMetrics.get_fields_and_field_types()["valid_points"] == "uint32"
    with pytest.raises(ValueError, match="DepthStatus"):
        interfaces.message_type("Nope")


def test_status_published_over_dds(built):
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.ros.depth_node import DepthNode
    from support.models_fixtures import constant_backend
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    DepthStatus = interfaces.require("DepthStatus")
    meta = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)
    K = Intrinsics(30.0, 30.0, 15.5, 11.5, 32, 24)

    def factory(settings):
        return DepthEstimator(constant_backend(4.0, meta), meta, "model", short_side=24)

    with RosHarness() as ros:
        status = ros.collect(DepthStatus, "/depth_node/status")
        node = ros.add(DepthNode(context=ros.context, estimator_factory=factory,
                                 parameter_overrides=[Parameter("model", value="const"),
                                                      Parameter("diagnostics_period",
                                                                value=0.2)]))
        wait_for(lambda: node_state(node) == "active", 30, "node active")
        image_pub = ros.publisher(Image, "/image")
        info_pub = ros.publisher(CameraInfo, "/camera_info")
        ros.wait_matched(image_pub)
        ros.wait_matched(info_pub)
        rgb = np.full((24, 32, 3), 100, np.uint8)
        sent = []
        for i in range(100):
            t = 7_000_000_000 + i * 50_000_000
            sent.append(t)
            info_pub.publish(camera_info_msg(K, t))
            image_pub.publish(image_msg(rgb, t))
            try:
                status.wait(lambda ms: any(m.frames_out >= 1 for m in ms), 0.5)
                break
            except AssertionError:
                continue
        msg = next(m for m in status.messages if m.frames_out >= 1)
        assert msg.state == "active" and msg.message == ""
        assert msg.backend == "function" and msg.precision == "fp32"
        assert msg.model == "const" and msg.scale_source == "model"
        # camera geometry: policy, model input size and why (explicit short side 24)
        assert msg.focal_policy == "as_trained" and msg.input_size == "42x28"
        assert "explicit short side 24" in msg.input_geometry
        assert msg.camera_info_fallbacks == 0
        assert msg.scale == pytest.approx(1.0)
        assert stamp_ns(msg) in sent and msg.header.frame_id == "camera_optical_frame"
        assert msg.frames_in >= msg.frames_out >= 1
        assert np.isfinite(msg.inference_ms) and msg.inference_ms >= 0


def test_node_runs_without_status_when_not_built(monkeypatch):
    from depth_perception.ros.depth_node import DepthNode
    from rclpy.parameter import Parameter

    monkeypatch.setattr(interfaces, "message_type", lambda name: None)
    with RosHarness() as ros:
        node = ros.add(DepthNode(context=ros.context,
                                 parameter_overrides=[Parameter("autostart", value=False)]))
        assert node.reporter._status_pub is None
        assert not any(name.endswith("/status") for name, _ in node.get_topic_names_and_types()
                       if name.startswith("/depth_node"))


def test_status_typesupport_that_does_not_load_says_what_to_source(built):
    """rclpy's error when rosidl cannot dlopen the prefix's typesupport library (an
    install prefix that was not sourced and whose libraries could not be preloaded): the
    node keeps running without ~/status and says which setup script to source."""
    from rclpy._rclpy_pybind11 import RCLError

    from depth_perception.ros.diagnostics import StatusReporter

    text = ("Failed to create publisher: Type support not from this implementation. Got:\n"
            "    Could not load library libdepth_perception__rosidl_typesupport_fastrtps_c.so:"
            " dlopen error: libdepth_perception__rosidl_typesupport_fastrtps_c.so: cannot "
            "open shared object file: No such file or directory, at shared_library.c:96")
    said = []

    class Logger:
        def error(self, msg):
            said.append(msg)

        info = warning = error

    class Node:
        cameras = []

        def create_publisher(self, msg_type, topic, qos):
            if topic == "~/status":
                raise RCLError(text)
            return object()

        def create_timer(self, *args, **kwargs):
            return None

        def get_logger(self):
            return Logger()

    reporter = StatusReporter(Node(), 1.0, None)
    assert reporter._status_pub is None
    script = interfaces.setup_script()
    assert script.endswith("/setup.bash") or script.endswith(
        "/share/depth_perception/local_setup.bash")
    assert said == [f"~/status disabled: {interfaces.load_error(RCLError(text))}"]
    assert ("libdepth_perception__rosidl_typesupport_fastrtps_c.so not found); source "
            f"{script} (it puts the install prefix's lib/ on LD_LIBRARY_PATH)") in said[0]


@pytest.mark.slow
def test_full_package_install_with_cmake(built, tmp_path):
    """The colcon path (CMakeLists.txt without INTERFACES_ONLY): messages + Python package
    in one prefix, where rosidl's generated package must not clobber ours, plus the
    console executables and share/ files."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("CMakeLists.txt", "msg", "launch", "config", "depth_perception"):
        path = ROOT / name
        (shutil.copytree if path.is_dir() else shutil.copy)(
            path, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                 if path.is_dir() else {}))
    package_xml = ROOT / "package.xml"
    if not package_xml.exists():  # the staged one written by build_interfaces.sh
        package_xml = ROOT / "build" / "interfaces" / "src" / "package.xml"
    shutil.copy(package_xml, src / "package.xml")
    venv = Path(sys.prefix)
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
               AMENT_PREFIX_PATH=str(venv))
    prefix = tmp_path / "install"
    for cmd in (["cmake", "-S", str(src), "-B", str(tmp_path / "b"), "-Wno-dev",
                 f"-DCMAKE_PREFIX_PATH={venv}", f"-DCMAKE_INSTALL_PREFIX={prefix}",
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                ["cmake", "--build", str(tmp_path / "b"), "-j", "2"],
                ["cmake", "--install", str(tmp_path / "b")]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "depth_perception"
    assert "__version__" in (site / "__init__.py").read_text(), "generated __init__ won"
    assert (site / "msg" / "_depth_status.py").is_file()
    assert (site / "ros" / "depth_node.py").is_file()
    for exe in ("depth_node", "depth_replay"):
        assert os.access(prefix / "lib" / "depth_perception" / exe, os.X_OK)
    share = prefix / "share" / "depth_perception"
    assert (share / "launch" / "robust_depth.launch.py").is_file()
    assert (share / "config" / "robust_depth.yaml").is_file()
    assert (share / "config" / "robust_depth.rviz").is_file()
