"""Test session setup: DDS isolation before anything imports rclpy."""
import os
import random

# Each test session gets its own ROS domain and stays on this machine, so parallel
# sessions (and other ROS processes) never see each other's topics.
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
