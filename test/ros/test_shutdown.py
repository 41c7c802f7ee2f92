"""Every executable that runs ROS ends cleanly: ``depth_node``, ``evaluator_node`` and
``depth_replay`` on SIGINT and SIGTERM (exit 0) and on a lifecycle manager's
``shutdown`` transition (the depth node), ``depth-perception demo`` on SIGINT and
SIGTERM during its ROS phase (130 / 143, an interrupted run). Each is a real subprocess
over DDS; its whole output must hold no ERROR line, traceback, unretrieved future or
failed transition."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from support.rostools import RosHarness, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

W, H = 96, 64
IMAGE, INFO, LIDAR = "/camera/image_raw", "/camera/camera_info", "/lidar/points"
BAD = ("ERROR", "Traceback", "never retrieved", "Unable to start transition",
       "Failed to publish")


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    return make_synthetic_bags(tmp_path_factory.mktemp("bags"), frames=20, size=(W, H),
                               conditions=("night",), seed=4)[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from support.models_fixtures import tiny_depth_anything_onnx

    return tiny_depth_anything_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx",
                                    height=56, width=84)


def start(script: str, *args: str) -> subprocess.Popen:
    """The installed console script ``script`` (setup.py's entry points, beside this
    Python) with stdout and stderr in one stream, in the test session's ROS domain."""
    path = Path(sys.executable).parent / script
    if not path.exists():
        pytest.fail(f"console script {script} is not installed beside {sys.executable}: "
                    "install the package (./setup.sh, or pip install -e .)")
    # A shell starts background jobs with SIGINT ignored, and exec keeps an ignored signal
    # ignored: a child of such a test run would never see the SIGINT sent to it. With a
    # handler installed here, exec gives the child SIGINT's default (Python's Ctrl-C).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([str(path), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        signal.signal(signal.SIGINT, previous)


def node_cmd(model) -> list[str]:
    return ["depth_node", "--ros-args", "-p", f"model:={model}",
            "-r", f"image:={IMAGE}", "-r", f"camera_info:={INFO}"]


def ended(proc: subprocess.Popen, sig: int | None, timeout: float = 60.0):
    """Send ``sig`` (None: none, the process ends by itself) and return (code, output)."""
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args[2]} did not end within {timeout:.0f} s:\n{out}")
    return proc.returncode, out


def ignores(proc: subprocess.Popen, sig: int) -> bool:
    """Whether ``proc`` ignores ``sig`` (Linux /proc; False where it cannot be read)."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    mask = next((int(line.split()[1], 16) for line in status.splitlines()
                 if line.startswith("SigIgn:")), 0)
    return bool(mask >> (int(sig) - 1) & 1)


def assert_clean(name: str, code: int, out: str, want: int = 0) -> None:
    assert code == want, f"{name} exited {code} (want {want}):\n{out}"
    for bad in BAD:
        assert bad not in out, f"{name} printed {bad!r}:\n{out}"


def call(client, request, timeout: float):
    """The service's response, or None after ``timeout`` seconds (the harness spins)."""
    future = client.call_async(request)
    try:
        wait_for(future.done, timeout, f"{client.srv_name}")
    except AssertionError:
        client.remove_pending_request(future)
        return None
    return future.result()


def kill_all(*procs) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_node_evaluator_and_replayer_end_cleanly(sig, bag, model, tmp_path):
    from sensor_msgs.msg import Image

    from depth_perception.ros import interfaces

    report_dir = tmp_path / "report"
    node = evaluator = replay = None
    with RosHarness() as ros:
        depth = ros.collect(Image, "/depth/image")
        metrics_type = interfaces.message_type("FrameMetrics")
        metrics = (ros.collect(metrics_type, "/depth_evaluator/frame_metrics")
                   if metrics_type is not None else None)
        try:
            node = start(*node_cmd(model))
            evaluator = start(
                "evaluator_node", "--ros-args",
                "-p", f"output_dir:={report_dir}", "-p", f"tf_bag:={bag}",
                "-p", "reliable_inputs:=true", "-r", f"lidar:={LIDAR}",
                "-r", f"image:={IMAGE}")
            # the depth node is active (publishes /depth) and both listeners matched it
            wait_for(lambda: ros.helper.count_publishers("/depth/image") >= 1
                     and ros.helper.count_subscribers("/depth/image") >= 2, 90,
                     "the depth node active and the evaluator on /depth")
            ros.wait_subscribed(depth)
            replay = start("depth_replay", str(bag), "--loop",
                           "--wait-for", IMAGE, INFO, LIDAR)
            depth.wait_count(1, timeout=60)            # working: depth came out
            if metrics is not None:
                metrics.wait_count(1, timeout=60)      # working: a frame scored
            results = {name: ended(proc, sig) for name, proc in
                       (("depth_replay", replay), ("depth_node", node),
                        ("evaluator_node", evaluator))}
        finally:
            kill_all(replay, node, evaluator)
    for name, (code, out) in results.items():
        assert_clean(name, code, out)
    # the shutdown ran in order: the node finished its work, the evaluator wrote its
    # report through a still valid context, the replayer said what it played
    assert "report written to" in results["evaluator_node"][1]
    assert (report_dir / "report.md").is_file() and (report_dir / "metrics.json").is_file()
    assert f"{IMAGE}: " in results["depth_replay"][1]


def test_lifecycle_shutdown_request_ends_the_node(model):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    node = None
    with RosHarness() as ros:
        get_state = ros.helper.create_client(GetState, "/depth_node/get_state")
        change = ros.helper.create_client(ChangeState, "/depth_node/change_state")
        try:
            node = start(*node_cmd(model))
            assert get_state.wait_for_service(timeout_sec=60), "no /depth_node/get_state"
            assert change.wait_for_service(timeout_sec=10)

            def active() -> bool:
                state = call(get_state, GetState.Request(), 5)
                return state is not None and state.current_state.label == "active"

            wait_for(active, 90, "the depth node active")
            request = ChangeState.Request()
            request.transition.id = Transition.TRANSITION_ACTIVE_SHUTDOWN
            response = call(change, request, 30)
            assert response is not None and response.success
            code, out = ended(node, None, timeout=30)    # it ends by itself
        finally:
            kill_all(node)
    assert_clean("depth_node", code, out)


@pytest.mark.slow
@pytest.mark.parametrize("sig,want", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_demo_interrupted_in_its_ros_phase(sig, want, model, tmp_path):
    """The demo with a given model (no training) replays its bags slowly over DDS (0.1x:
    its three 20-frame bags take about a minute; at 0.5x the whole ROS phase could end
    before the signal arrived); the signal arrives once its depth node publishes."""
    from sensor_msgs.msg import Image

    demo = None
    with RosHarness() as ros:
        depth = ros.collect(Image, "/depth/image")
        try:
            t0 = time.monotonic()
            demo = start("depth-perception", "demo", "--out", str(tmp_path / "demo"),
                         "--model", str(model), "--backend", "onnxruntime",
                         "--frames", "20", "--size", f"{W}x{H}", "--student-steps", "0",
                         "--rate", "0.1")
            wait_for(lambda: bool(depth.messages) or demo.poll() is not None, 120,
                     "the demo's depth node to publish")
            assert demo.poll() is None, f"the demo ended early:\n{demo.communicate()[0]}"
            assert not ignores(demo, sig), f"the demo was started with {sig.name} ignored"
            code, out = ended(demo, sig)
        finally:
            kill_all(demo)
    assert_clean("depth-perception demo", code, out, want)
    print(f"demo reached its ROS phase in {time.monotonic() - t0:.0f} s")
