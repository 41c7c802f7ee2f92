"""Public datasets into the package's rosbag2 layout (``depth-perception import``).

:mod:`~depth_perception.datasets.kitti` (KITTI raw, through pykitti) and
:mod:`~depth_perception.datasets.nuscenes` (through the nuScenes devkit) write one bag
per drive / scene with the topics, frames and ``custom_data`` of the synthetic drives,
so training, ``evaluate`` and replay read them unchanged. The devkits are optional
extras, imported when an import runs.
"""
