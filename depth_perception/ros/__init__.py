"""The package's ROS 2 nodes and their plumbing: the only code that imports rclpy."""
