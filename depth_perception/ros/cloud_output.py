"""The depth node's ``points`` output: :mod:`depth_perception.cloud` with the target
frame from TF (:class:`depth_perception.ros.tf_listener.NodeTransforms`).

The transform is TF's at the image stamp, else its latest (static camera mounts: the
same). While TF lacks the transform to ``point_frame`` no cloud is published for that frame
(a camera-frame cloud on a topic configured for ``base_link`` would be taken by a costmap
with a different frame than its configuration expects, and the same TF gap blinds the
costmap's own transform anyway): the reason is logged (throttled) and counted in
``/diagnostics`` as ``cloud_tf_failures``; depth and CameraInfo are still published.
"""
from __future__ import annotations

from depth_perception import cloud
from depth_perception.conversions import stamp_to_ns
from depth_perception.data.tf import TransformError
from depth_perception.ros.diagnostics import Throttle


class CloudOutput:
    """Builds the node's PointCloud2 per frame; ``make`` returns None when TF fails."""

    def __init__(self, node, transforms, stats, throttle_s: float = 5.0):
        self._node, self._transforms, self._stats = node, transforms, stats
        self._throttle = Throttle(throttle_s)

    def make(self, header, depth, intrinsics, rgb, max_depth: float, settings,
             confidence=None):
        """[H,W] metres (REP 117 meanings) -> PointCloud2, or None (TF failure); ``rgb``
        [H,W,3] of the depth's geometry for a coloured cloud, else None; ``confidence``
        [H,W] for the ``point_min_confidence`` filter, else None."""
        try:
            target = self._transforms.cloud_target(header.frame_id,
                                                   stamp_to_ns(header.stamp), settings)
        except TransformError as exc:
            with self._stats.lock:
                self._stats.cloud_tf_failures += 1
                failures = self._stats.cloud_tf_failures
            if self._throttle.ready("cloud_tf"):
                self._node.get_logger().warning(
                    f"cloud not published ({failures} so far, counted as cloud_tf_failures): "
                    f"{exc}")
            return None
        return cloud.costmap_cloud(depth, intrinsics, header, settings.cloud_settings(max_depth),
                                   rgb=rgb, target=target, confidence=confidence)
