"""Start the depth node (a lifecycle node that configures and activates itself) and,
optionally, rviz2 with the package's view of camera image, colourised depth and cloud.

    ros2 launch depth_perception robust_depth.launch.py model:=/models/da2_s_518.onnx \
        image:=/camera/image_raw camera_info:=/camera/camera_info rviz:=true

Parameters come from ``params_file`` (default: the package's config/robust_depth.yaml);
the launch arguments ``model``, ``backend``, ``input_image``, ``cameras`` and
``use_sim_time`` override it
when given. Several cameras on one node and one model:

    ros2 launch depth_perception robust_depth.launch.py model:=/models/m.onnx \
        cameras:=front,left,right   # front/image, front/camera_info -> front/depth/image, ...

An ``image_rect`` input (already rectified, e.g. by image_proc) takes
``input_image:=rectified``; the default (``raw``) rectifies a driver's ``image_raw``.

With ``autostart:=false`` the node waits in 'unconfigured' for a lifecycle manager
(``ros2 lifecycle set /depth_node configure``).

Every name used below is a module-level constant, so tests check them without
launch_ros installed.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = "depth_perception"
EXECUTABLE = "depth_node"          # installed by CMakeLists.txt into lib/depth_perception
NODE_MODULE = "depth_perception.ros.depth_node"
NODE_NAME = "depth_node"
PARAMS_FILE = "config/robust_depth.yaml"
RVIZ_FILE = "config/robust_depth.rviz"
RVIZ_PACKAGE, RVIZ_EXECUTABLE = "rviz2", "rviz2"
#: (name, default, description) of every launch argument
ARGUMENTS = (
    ("params_file", "", "YAML with depth_node parameters (empty: the package's "
                        f"{PARAMS_FILE})"),
    ("model", "", "model: .onnx / .engine file, checkpoint folder or transformers model "
                  "id/folder (empty: the params_file's)"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: the params_file's)"),
    ("image", "/camera/image_raw", "camera image topic (sensor_msgs/Image)"),
    ("camera_info", "/camera/camera_info", "camera info topic (sensor_msgs/CameraInfo)"),
    ("input_image", "", "raw (a driver's image_raw: rectified with the CameraInfo's D, R, "
                        "P) | rectified (image_rect: described by P, not rectified again) | "
                        "ignore_distortion (comparisons only); empty: the params_file's "
                        "(raw)"),
    ("namespace", "", "namespace of the node and its outputs"),
    ("cameras", "", "comma-separated camera namespaces served by one node and one model "
                    "(C/image + C/camera_info -> C/depth/image, C/points, ...; the image and "
                    "camera_info remappings then do not apply); empty: the params_file's "
                    "(one camera on the node's own topics)"),
    ("use_sim_time", "false", "use /clock (bag replay with --clock)"),
    ("autostart", "true", "configure and activate at start-up (false: wait for a "
                          "lifecycle manager)"),
    ("rviz", "false", f"start rviz2 with {RVIZ_FILE}"),
    ("log_level", "info", "log level of the node: debug | info | warn | error"),
)
#: launch arguments that become node parameters when not empty
PARAMETER_ARGUMENTS = ("model", "backend", "input_image")
#: the node's input topics (relative names) remapped by the launch file
REMAPPED_TOPICS = ("image", "image/compressed", "camera_info")


def share_file(relative: str) -> str:
    """A file of the installed package share (colcon install), else of the source tree."""
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        try:
            candidate = Path(get_package_share_directory(PACKAGE)) / relative
            if candidate.exists():
                return str(candidate)
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    return str(Path(__file__).resolve().parent.parent / relative)


def _node_actions(context):
    from launch_ros.actions import LifecycleNode, Node

    value = {name: context.perform_substitution(_config(name)) for name, _, _ in ARGUMENTS}
    params_file = value["params_file"] or share_file(PARAMS_FILE)
    overrides = {"use_sim_time": value["use_sim_time"].lower() == "true",
                 "autostart": value["autostart"].lower() == "true"}
    overrides.update({k: value[k] for k in PARAMETER_ARGUMENTS if value[k]})
    if value["cameras"].strip():
        overrides["cameras"] = [c.strip() for c in value["cameras"].split(",") if c.strip()]
    image = value["image"]
    remappings = [("image", image), ("image/compressed", f"{image}/compressed"),
                  ("camera_info", value["camera_info"])]
    actions = [LifecycleNode(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
        namespace=value["namespace"], output="screen",
        parameters=[params_file, overrides], remappings=remappings,
        arguments=["--ros-args", "--log-level", value["log_level"]])]
    if value["rviz"].lower() == "true":
        actions.append(Node(package=RVIZ_PACKAGE, executable=RVIZ_EXECUTABLE, name="rviz2",
                            arguments=["-d", share_file(RVIZ_FILE)], output="screen",
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return actions


def _config(name: str):
    from launch.substitutions import LaunchConfiguration

    return LaunchConfiguration(name)


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    actions = [DeclareLaunchArgument(name, default_value=default, description=text)
               for name, default, text in ARGUMENTS]
    actions.append(OpaqueFunction(function=_node_actions))
    return LaunchDescription(actions)
