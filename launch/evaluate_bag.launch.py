"""Replay a bag through the depth node and score it online, with sim time.

    ros2 launch depth_perception evaluate_bag.launch.py bag:=bags/night model:=model.onnx \
        condition:=night output_dir:=eval/night

Starts ``ros2 bag play --clock`` (or ``depth-perception replay --clock`` on pip-only
machines without ros2cli), the depth node (``depth_node``) and the evaluator
(``evaluator_node``), all with ``use_sim_time``. The evaluator writes its report into
``output_dir`` when it stops (Ctrl-C) or on ``ros2 topic pub --once
/depth_evaluator/write_report std_msgs/msg/Empty``.

Names used below are module-level constants so tests can check them without launch_ros.
"""
from __future__ import annotations

import shutil

PACKAGE = "depth_perception"
DEPTH_EXECUTABLE = "depth_node"
EVALUATOR_EXECUTABLE = "evaluator_node"
EVALUATOR_MODULE = "depth_perception.ros.evaluator_node"
DEPTH_MODULE = "depth_perception.ros.depth_node"
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
LIDAR_TOPIC = "/lidar/points"
GT_TOPIC = "/ground_truth/depth"
#: (name, default, description) of every launch argument
ARGUMENTS = (
    ("bag", "", "rosbag2 folder to replay"),
    ("model", "", "depth model: .onnx, .engine, checkpoint folder or transformers folder"),
    ("backend", "auto", "auto | tensorrt | onnxruntime | torch"),
    ("condition", "unknown", "recording condition written in the report"),
    ("reference", "lidar", "lidar | topic (dense depth on /ground_truth/depth)"),
    ("output_dir", "evaluation", "report folder"),
    ("max_depth", "80.0", "evaluation cap [m]"),
    ("rate", "1.0", "replay rate"),
    ("use_sim_time", "true", "use the bag's /clock"),
    ("log_level", "info", "log level of the nodes"),
)


def player_command(bag: str = "BAG", rate: str = "RATE") -> list[str]:
    """``ros2 bag play`` where ros2cli exists, else the package's own replay verb."""
    if shutil.which("ros2"):
        return ["ros2", "bag", "play", bag, "--clock", "--rate", rate]
    return ["depth-perception", "replay", bag, "--clock", "--rate", rate]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    cfg = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    sim = {"use_sim_time": cfg["use_sim_time"]}
    log = ["--ros-args", "--log-level", cfg["log_level"]]
    actions = [DeclareLaunchArgument(n, default_value=d, description=t)
               for n, d, t in ARGUMENTS]
    actions.append(ExecuteProcess(cmd=player_command(cfg["bag"], cfg["rate"]),
                                  output="screen"))
    actions.append(Node(
        package=PACKAGE, executable=DEPTH_EXECUTABLE, name="depth_node", output="screen",
        parameters=[sim, {"model": cfg["model"], "backend": cfg["backend"]}],
        remappings=[("image", IMAGE_TOPIC), ("camera_info", CAMERA_INFO_TOPIC)],
        arguments=log))
    actions.append(Node(
        package=PACKAGE, executable=EVALUATOR_EXECUTABLE, name="depth_evaluator",
        output="screen",
        parameters=[sim, {"condition": cfg["condition"], "output_dir": cfg["output_dir"],
                          "max_depth": cfg["max_depth"], "reference": cfg["reference"],
                          "tf_bag": cfg["bag"]}],
        remappings=[("depth/image", "/depth/image"), ("depth/camera_info", "/depth/camera_info"),
                    ("lidar", LIDAR_TOPIC), ("reference_depth", GT_TOPIC),
                    ("image", IMAGE_TOPIC)],
        arguments=log))
    return LaunchDescription(actions)
