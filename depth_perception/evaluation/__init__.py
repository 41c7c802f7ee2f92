"""Evaluation of depth models on rosbags: offline (bag -> DepthEstimator -> metrics),
online (an rclpy node scoring a live depth topic) and the reports both write.

Light at import time: the submodules import torch, rclpy or matplotlib only inside the
functions that need them.
"""
from __future__ import annotations

from depth_perception.evaluation.report import (  # noqa: F401
    EvaluationResults,
    ModelResults,
    write_report,
)

__all__ = ["EvaluationResults", "ModelResults", "write_report"]
