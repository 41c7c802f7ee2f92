"""Synthetic driving bags: one rosbag2 per condition of the same procedural drive.

Pure compute (numpy + OpenCV, no ROS) in small modules:

* :mod:`~depth_perception.synth.layout`: drive configuration, trajectory, scene boxes;
* :mod:`~depth_perception.synth.raycast`: ray casting against the ground and boxes;
* :mod:`~depth_perception.synth.materials`: procedural textures at the hits;
* :mod:`~depth_perception.synth.shading` and :mod:`~depth_perception.synth.conditions`:
  light transport and one shader per condition;
* :mod:`~depth_perception.synth.street`: camera and LiDAR views along the drive;
* :mod:`~depth_perception.synth.writer`: rosbag2 writing (topics listed there).
"""
from depth_perception.camera import parse_size
from depth_perception.synth.conditions import CONDITIONS
from depth_perception.synth.layout import (BUILDING, CAR, GROUND, LAMP, MOVING_CAR, POLE,
                                           SKY, Scene, SynthConfig, Trajectory)
from depth_perception.synth.street import CameraGeometry, SyntheticStreet
from depth_perception.synth.writer import (IMAGE_FORMATS, MSG_TYPES, STORAGES, TOPICS,
                                           make_synthetic_bags, make_varied_drives,
                                           write_synthetic_bags)

__all__ = ["BUILDING", "CAR", "CONDITIONS", "GROUND", "IMAGE_FORMATS", "LAMP", "MOVING_CAR",
           "MSG_TYPES", "POLE", "SKY", "STORAGES", "TOPICS", "CameraGeometry", "Scene",
           "SynthConfig", "SyntheticStreet", "Trajectory", "make_synthetic_bags",
           "make_varied_drives",
           "parse_size", "write_synthetic_bags"]
