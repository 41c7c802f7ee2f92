"""Helpers shared by the test folders (bags, ROS harness, tiny models)."""
