"""Runtime pure compute: image -> metric depth, without ROS.

* :mod:`.processing`: model input preparation and output decoding (numpy/cv2).
* :mod:`.backends`: TensorRT, onnxruntime and torch behind one named-tensor contract;
  :func:`depth_perception.runtime.backends.load_backend` picks and opens one.
* :mod:`.scale`: metric scale policies for relative models (LiDAR median, ground plane).
* :mod:`.estimator`: :class:`~depth_perception.runtime.estimator.DepthEstimator`, the
  one path from an RGB frame to a depth image used by the node, evaluation and export.

Nothing here imports rclpy; importing this package imports no torch, onnxruntime or
TensorRT (backends import them when opened).
"""
