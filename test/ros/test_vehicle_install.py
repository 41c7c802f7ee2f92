"""What a vehicle installs starts the node: a fresh venv with the ROS 2 wheels and
``pip install .`` (not editable, no extras), then the installed ``depth_node``
executable on an ONNX model over DDS, fed a distorted camera, publishes depth and a
cloud. The same through the CMake (colcon) install prefix. A folder without
``__init__.py`` is skipped by ``find_packages``; only starting the installed node shows
it (the dev venv's editable install hides it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception import conversions  # noqa: E402
from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.rectify import Calibration  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEV_VENV = Path(sys.executable).parent.parent


def ros_release() -> str:
    """The ROS 2 release of the wheels this venv runs (``ros-<release>-rclpy``), so the
    vehicle talks to the test's DDS participant with the same release (CI: kilted, jazzy)."""
    from importlib import metadata

    for release in ("kilted", "jazzy"):
        try:
            metadata.version(f"ros-{release}-rclpy")
            return release
        except metadata.PackageNotFoundError:
            continue
    return "kilted"


#: the ROS 2 wheels a vehicle needs to run the node (setup.sh's list without build tools)
ROS_WHEELS = [f"ros-{ros_release()}-{w}" for w in (
    "rclpy[fastrtps]", "sensor-msgs", "std-msgs", "geometry-msgs", "nav-msgs",
    "diagnostic-msgs", "rmw-fastrtps-cpp", "lifecycle-msgs", "rosgraph-msgs")]
#: what CMakeLists.txt installs: the sources colcon would see (no venv inside)
SOURCES = ("CMakeLists.txt", "package.xml", "msg", "depth_perception", "launch", "config",
           "resource")
PIN = Intrinsics(fx=60.0, fy=60.0, cx=39.5, cy=29.5, width=80, height=60)
LENS = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))


def vehicle_env(**extra) -> dict:
    """This session's environment (ROS_DOMAIN_ID, discovery range) without what the dev
    venv put there: its library path, Python path and the ROS wheels' bootstrap flag
    (whose re-exec sets the library path of the venv that runs)."""
    drop = {"LD_LIBRARY_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH",
            "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run(cmd, timeout=1800, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                         timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def subpackages(top: Path) -> set[str]:
    """Dotted names of the folders under ``top`` that hold Python modules."""
    return {".".join(p.parent.relative_to(top.parent).parts)
            for p in top.rglob("*.py") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def vehicle(tmp_path_factory):
    """A fresh venv: the ROS 2 wheels, then ``pip install .`` (no extras, not editable)."""
    venv = tmp_path_factory.mktemp("vehicle") / "venv"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = ROOT / "constraints-cpu.txt"
    run([*pip, "-c", constraints, *ROS_WHEELS])
    run([*pip, "-c", constraints, ROOT])
    return venv


def serve_one_frame(cmd, env, cwd) -> tuple[list, list, str]:
    """Start the node (``cmd``), feed distorted frames until depth and a cloud come back;
    returns (depth messages, cloud messages, node stderr)."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from support.rostools import RosHarness, header, image_msg, stop_process

    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    rgb = np.random.default_rng(0).integers(0, 255, (PIN.height, PIN.width, 3), np.uint8)
    depth_msgs = point_msgs = info_msgs = []
    failure = None
    try:
        with RosHarness() as ros:
            depth = ros.collect(Image, "/depth/image")
            info = ros.collect(CameraInfo, "/depth/camera_info")
            points = ros.collect(PointCloud2, "/points")
            pub_img, pub_info = ros.publisher(Image, "/image"), ros.publisher(CameraInfo,
                                                                                "/camera_info")
            ros.wait_matched(pub_img, timeout=180)
            ros.wait_subscribed(points, timeout=180)
            for k in range(400):
                stamp = 1_000_000_000 + k * 50_000_000
                pub_info.publish(conversions.calibration_to_camera_info(LENS, header(stamp)))
                pub_img.publish(image_msg(rgb, stamp))
                try:
                    points.wait_count(1, timeout=0.5)
                    depth.wait_count(1, timeout=0.5)
                    info.wait_count(1, timeout=0.5)
                    break
                except AssertionError:
                    if proc.poll() is not None:
                        break
            depth_msgs, point_msgs, info_msgs = depth.messages, points.messages, info.messages
    except AssertionError as exc:       # e.g. the node never subscribed: say why below
        failure = exc
    finally:
        err = stop_process(proc)
    assert depth_msgs and point_msgs, f"{failure or 'no depth/cloud'} from {cmd[0]}:\n" \
        f"{err[-4000:]}"
    # the rectified camera: D = 0, K = the lens' P
    assert not any(info_msgs[0].d)
    np.testing.assert_allclose(np.reshape(info_msgs[0].k, (3, 3)), PIN.K)
    return depth_msgs, point_msgs, err


def test_pip_install_starts_the_installed_depth_node(vehicle, tmp_path):
    from support.models_fixtures import tiny_depth_anything_onnx

    py = vehicle / "bin" / "python"
    site = Path(run([py, "-c", "import depth_perception, os; "
                     "print(os.path.dirname(depth_perception.__file__))"],
                    env=vehicle_env(), cwd=tmp_path).stdout.strip())
    assert vehicle in site.parents                        # the installed copy, not the tree
    # every subpackage of the sources is installed
    assert subpackages(ROOT / "depth_perception") <= subpackages(site)
    onnx_path = tiny_depth_anything_onnx(tmp_path / "m.onnx", 56, 70)
    depth, cloud, _ = serve_one_frame(
        [vehicle / "bin" / "depth_node", "--ros-args", "-p", f"model:={onnx_path}",
         "-p", "backend:=onnxruntime"],
        vehicle_env(), tmp_path)
    assert (depth[0].width, depth[0].height) == (PIN.width, PIN.height)
    assert cloud[0].width * cloud[0].height == PIN.width * PIN.height


def test_cmake_install_prefix_starts_its_depth_node(vehicle, tmp_path):
    """The colcon path: CMakeLists.txt configured, built and installed (messages, Python
    package, lib/depth_perception executables) against the wheels; the prefix's node runs
    with the prefix's site-packages first on PYTHONPATH, as `source install/setup.bash`
    sets it."""
    from support.models_fixtures import tiny_depth_anything_onnx

    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    src, build, prefix = tmp_path / "src", tmp_path / "build", tmp_path / "install"
    src.mkdir()
    for name in SOURCES:                        # staged: CMake refuses a venv in the tree
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    env = {**os.environ, "PATH": f"{DEV_VENV / 'bin'}:{os.environ['PATH']}",
           "LD_LIBRARY_PATH": str(DEV_VENV / "lib"), "AMENT_PREFIX_PATH": str(DEV_VENV)}
    run(["cmake", "-S", src, "-B", build, "-Wno-dev", "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_PREFIX_PATH={DEV_VENV}", f"-DCMAKE_INSTALL_PREFIX={prefix}",
         f"-DPython3_EXECUTABLE={DEV_VENV / 'bin' / 'python'}",
         "-DPython3_FIND_VIRTUALENV=ONLY", "-DBUILD_TESTING=OFF"], env=env)
    run(["cmake", "--build", build, "-j", "2"], env=env)
    run(["cmake", "--install", build], env=env)
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages"
    assert subpackages(ROOT / "depth_perception") <= subpackages(site / "depth_perception")
    node = prefix / "lib" / "depth_perception" / "depth_node"
    assert node.is_file()
    # what a ROS user sources: the prefix's setup script puts lib/ on LD_LIBRARY_PATH
    # (rosidl dlopens the typesupport libraries by name) and site-packages on PYTHONPATH
    local_setup = prefix / "share" / "depth_perception" / "local_setup.bash"
    sourced = run(["bash", "-c", f"source {local_setup} && echo $LD_LIBRARY_PATH && "
                   "echo $PYTHONPATH"], env=vehicle_env(), cwd=tmp_path).stdout.split("\n")
    assert str(prefix / "lib") in sourced[0].split(":"), sourced
    assert str(site) in sourced[1].split(":"), sourced
    # not sourced: the vehicle venv's Python runs it (PATH), the prefix's package first
    # (PYTHONPATH) and no LD_LIBRARY_PATH: the node loads its prefix's typesupport
    # libraries itself, and ~/status works
    run_env = vehicle_env(PYTHONPATH=str(site), PATH=f"{vehicle / 'bin'}:{os.environ['PATH']}")
    where = run([vehicle / "bin" / "python", "-c", "import depth_perception.ros.depth_node as m;"
                 " print(m.__file__)"], env=run_env, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(site), where
    onnx_path = tiny_depth_anything_onnx(tmp_path / "m.onnx", 56, 70)
    _, _, err = serve_one_frame([node, "--ros-args", "-p", f"model:={onnx_path}",
                                 "-p", "backend:=onnxruntime"], run_env, tmp_path)
    assert "~/status disabled" not in err, err[-2000:]
