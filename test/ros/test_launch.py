"""The launch file, parameter file, rviz config and CMake install rules name only things
that exist; the launch description loads where launch_ros is installed."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "robust_depth.launch.py"


def load_launch_module():
    spec = importlib.util.spec_from_file_location("robust_depth_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level imports nothing from launch
    return module


def cmake_executables() -> dict[str, str]:
    """name -> 'module:function' of the console executables CMakeLists.txt installs."""
    text = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(_executables(.*?)\)", text, re.S).group(1)
    return dict(entry.split("=", 1) for entry in re.findall(r'"([^"]+)"', block))


def test_launch_module_imports_nothing_heavy_at_module_level():
    tree = ast.parse(LAUNCH.read_text())
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top_imports for a in n.names} | {
        getattr(n, "module", None) for n in top_imports}
    assert not {"launch", "launch_ros", "rclpy"} & names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
               for n in tree.body)


def test_every_named_executable_file_and_parameter_exists():
    from depth_perception.ros import depth_node as node_module
    from depth_perception.ros import params

    launch = load_launch_module()
    # executables: installed by CMakeLists.txt, and their entry points import
    executables = cmake_executables()
    assert launch.EXECUTABLE in executables
    module_name, function = executables[launch.EXECUTABLE].split(":")
    assert module_name == launch.NODE_MODULE
    for target in executables.values():
        mod, func = target.split(":")
        assert callable(getattr(importlib.import_module(mod), func)), target
    # files: exist in the source tree and are installed (setup.py data_files / CMake)
    for relative in (launch.PARAMS_FILE, launch.RVIZ_FILE):
        assert (ROOT / relative).is_file(), relative
        assert launch.share_file(relative).endswith(relative)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.py")' in setup and 'glob("config/*.rviz")' in setup
    # parameters the launch file sets are declared by the node
    declared = set(params.PARAMETER_NAMES) | {"use_sim_time"}
    assert set(launch.PARAMETER_ARGUMENTS) <= declared
    assert {"autostart", "use_sim_time"} <= declared
    names = [name for name, _, _ in launch.ARGUMENTS]
    for required in ("params_file", "model", "backend", "image", "camera_info", "namespace",
                     "cameras", "use_sim_time", "rviz", "log_level"):
        assert required in names
    assert all(text for _, _, text in launch.ARGUMENTS), "every argument has a description"
    # remapped topics are the node's own relative input names (in its camera pipeline)
    from depth_perception.ros import camera_pipeline

    node_source = (Path(node_module.__file__).read_text()
                   + Path(camera_pipeline.__file__).read_text())
    for topic in launch.REMAPPED_TOPICS:
        assert f'"{topic}"' in node_source


def test_params_yaml_repeats_the_parameter_table():
    """config/robust_depth.yaml names every parameter of the table with its default (one
    source of truth: the table), and NodeSettings() holds the same defaults."""
    from depth_perception.ros import params as table

    data = yaml.safe_load((ROOT / "config" / "robust_depth.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    specs = table.SPECS
    assert set(params) == set(specs), (set(params) ^ set(specs))
    defaults = table.NodeSettings()
    for name, value in params.items():
        spec = specs[name]
        assert table.validate_parameter(spec, value) == "", name
        assert value == spec.ros_default, f"{name}: yaml {value!r}, table {spec.default!r}"
        assert type(value) is type(spec.ros_default), (name, value, spec.default)
        assert getattr(defaults, name) == spec.default, name
    # the settings object is built from the table, row for row
    assert [f for f in table.NodeSettings.__dataclass_fields__] == list(table.PARAMETER_NAMES)
    assert table.settings_from_values(params) == defaults
    with pytest.raises(ValueError, match="unknown depth node parameters"):
        table.settings_from_values({"sync_slop": 0.05})


def test_declared_descriptors_carry_ranges_and_read_only():
    pytest.importorskip("rcl_interfaces")
    from depth_perception.ros import params as table

    d = table.descriptor(table.SPECS["point_stride"])
    assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (1, 64)
    d = table.descriptor(table.SPECS["camera_info_wait"])
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (0.0, 10.0)
    assert table.descriptor(table.SPECS["model"]).read_only
    assert "as_trained" in table.descriptor(table.SPECS["focal_policy"]).additional_constraints
    assert not table.descriptor(table.SPECS["focal_policy"]).read_only


def test_rviz_config_shows_camera_depth_and_cloud_in_optical_frame():
    launch = load_launch_module()
    rviz = yaml.safe_load((ROOT / launch.RVIZ_FILE).read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_optical_frame"
    displays = {d["Name"]: d for d in manager["Displays"]}
    topics = {(d["Class"], d.get("Topic", {}).get("Value")) for d in displays.values()}
    assert ("rviz_default_plugins/Image", "/camera/image_raw") in topics
    assert ("rviz_default_plugins/Image", "/depth_colorized/image") in topics
    assert ("rviz_default_plugins/PointCloud2", "/points") in topics


def camera_info_topic(image_topic: str) -> str:
    """image_transport's getCameraInfoTopic: ``<ns>/<name>`` -> ``<ns>/camera_info``."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info" if "/" in image_topic \
        else "camera_info"


def test_depth_image_and_its_camera_info_sit_side_by_side():
    """depth_image_proc / rviz DepthCloud derive the CameraInfo from the image topic: it
    must be the depth node's own depth/camera_info, not its input's camera_info."""
    from depth_perception.ros.camera_pipeline import (COLORIZED_TOPIC, DEPTH_INFO_TOPIC,
                                                      DEPTH_TOPIC, RGB_INFO_TOPIC,
                                                      RGB_TOPIC)

    assert camera_info_topic(DEPTH_TOPIC) == DEPTH_INFO_TOPIC == "depth/camera_info"
    assert camera_info_topic(COLORIZED_TOPIC) != "camera_info"        # not the input's
    assert camera_info_topic("front/" + DEPTH_TOPIC) == "front/depth/camera_info"
    launch = load_launch_module()
    rviz = yaml.safe_load((ROOT / launch.RVIZ_FILE).read_text())
    cloud = next(d for d in rviz["Visualization Manager"]["Displays"]
                 if d["Class"] == "rviz_default_plugins/DepthCloud")
    assert cloud["Depth Map Topic"] == "/" + DEPTH_TOPIC
    assert camera_info_topic(cloud["Depth Map Topic"]) == "/" + DEPTH_INFO_TOPIC
    # its colour: an image of the depth's geometry (not the distorted image_raw), under
    # depth_image_proc/point_cloud_xyzrgb's names, beside its own CameraInfo
    assert cloud["Color Image Topic"] == "/" + RGB_TOPIC == "/rgb/image_rect_color"
    assert camera_info_topic(RGB_TOPIC) == RGB_INFO_TOPIC == "rgb/camera_info"
    assert ("input_image", "", ) == next(a[:2] for a in launch.ARGUMENTS
                                         if a[0] == "input_image")
    assert "input_image" in launch.PARAMETER_ARGUMENTS


def test_generate_launch_description_loads():
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI (needs a ROS 2 "
                                             "installation)")
    from launch import LaunchDescription

    description = load_launch_module().generate_launch_description()
    assert isinstance(description, LaunchDescription)
    declared = {a.name for a in description.get_launch_arguments()}
    assert {name for name, _, _ in load_launch_module().ARGUMENTS} <= declared
