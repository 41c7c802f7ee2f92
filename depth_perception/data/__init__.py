"""Rosbag data layer: reading bags, TF, training samples, frame cache, augmentation.

Submodules import their heavy dependencies lazily; import what you need directly, e.g.
``from depth_perception.data.samples import BagSequence, SampleConfig``.
"""
from __future__ import annotations

__all__ = ["bag", "tf", "samples", "cache", "augment", "dataset"]
