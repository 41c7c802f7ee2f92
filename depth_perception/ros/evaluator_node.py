"""Online evaluator: scores a live depth topic against LiDAR or a ground-truth depth topic.

Node ``depth_evaluator`` (plain rclpy Node, one per run):

* subscribes ``depth/image`` (sensor_msgs/Image 32FC1/16UC1, the depth node's output)
  and ``depth/camera_info`` beside it (its K, for projecting LiDAR), plus the reference: ``lidar``
  (PointCloud2; remap to /lidar/points) projected through the camera<-lidar transform, or
  ``reference_depth`` (a dense depth Image, remap to e.g. /ground_truth/depth); optionally
  ``image`` (the camera image, only for the sample figure of the report);
* the camera<-lidar transform comes from ``/tf_static``/``/tf`` where tf2_msgs is
  importable, else from the ``tf_bag`` parameter (the bag's /tf_static) or the
  ``lidar_to_camera`` parameter (16 row-major values of T_camera_lidar);
* pairs frames by stamp (dense: same stamp; LiDAR: nearest scan in time within
  ``match_tolerance``), computes the metrics with ``depth_perception.metrics`` and
  publishes ``~/frame_metrics`` (depth_perception/msg/FrameMetrics, when the package's
  interfaces are built; otherwise it says so once and only writes the report);
* with ``temporal``, also the TAE of consecutive scored frames (the camera's poses from
  the same TF and odometry; with ``moving_mask`` static pixels only, from ``moving``; with
  ``covisibility`` pixels both frames see only, from the dense depth on ``ground_truth``);
* writes the same report as the offline tool (``output_dir``) on ``~/write_report``
  (std_msgs/Empty), after ``max_frames`` frames, or when it is destroyed.

The scoring itself is :class:`depth_perception.evaluation.online.OnlineScorer` (no
rclpy); replaying a bag through a depth node and this evaluator in one process is
:func:`depth_perception.ros.online_evaluation.evaluate_online`.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Empty

from depth_perception import conversions
from depth_perception.conversions import ns_to_stamp, stamp_to_ns
from depth_perception.evaluation.ground_truth import parse_reference
from depth_perception.evaluation.online import OnlineScorer
from depth_perception.evaluation.report import EvaluationResults, write_report
from depth_perception.ros.camera_pipeline import CONFIDENCE_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC
from depth_perception.ros import interfaces
from depth_perception.ros.qos import latched_qos

log = logging.getLogger(__name__)

NODE_NAME = "depth_evaluator"
#: Parameters (name, default, description).
PARAMETERS = (
    ("reference", "lidar", "'lidar' (PointCloud2 on 'lidar') or 'topic' (dense depth Image "
                           "on 'reference_depth')"),
    ("condition", "unknown", "recording condition of the frames: day-clear|night|rain|snow"),
    ("model_name", "online", "row name of this run in the report"),
    ("output_dir", "", "folder for metrics.json/report.md/plots; empty: no report file"),
    ("max_frames", 0, "write the report after this many scored frames (0: never by count)"),
    ("min_depth", 0.1, "valid reference range, lower bound [m]"),
    ("max_depth", 80.0, "valid reference range / evaluation cap [m]"),
    ("median_scaling", False, "per-frame median scaling before scoring"),
    ("align", "", "'' | affine | affine_disparity: least-squares alignment before scoring"),
    ("match_tolerance", 0.1, "largest |stamp difference| between depth and reference [s] "
                             "(LiDAR: nearest scan within it, as the offline samples)"),
    ("dense_tolerance", 0.005, "largest |stamp difference| between depth and a dense "
                               "reference image [s] (same stamps expected)"),
    ("reliable_inputs", False, "subscribe to the LiDAR/reference reliably (replays and "
                               "recorded bags) instead of best effort (live sensors)"),
    ("camera_frame", "", "optical frame of the depth images (default: their frame_id)"),
    ("world_frame", "odom", "fixed frame for LiDAR motion compensation"),
    ("motion_compensation", True, "move each scan to the image time through odometry/TF"),
    ("tf_bag", "", "bag whose /tf_static gives the static frames where tf2_msgs is missing"),
    ("lidar_to_camera", [0.0], "T_camera_lidar, 16 row-major values (overrides TF)"),
    ("confidence", False, "also score 'confidence/image' (AUSE/AURG of the depth node's "
                          "confidence): each depth frame waits for its confidence image"),
    ("temporal", False, "also score the TAE of consecutive scored frames (camera poses in "
                        "world_frame from TF/odometry)"),
    ("moving_mask", False, "with temporal: each frame waits for its moving-object mask "
                           "(mono8 Image on 'moving', non-zero: moving); only static "
                           "pixels enter the TAE (false: every pixel is static)"),
    ("covisibility", False, "with temporal: each frame waits for dense ground-truth depth "
                            "on 'ground_truth'; only pixels both frames see enter the TAE"),
)


def _mono_mask(msg) -> np.ndarray:
    """[H,W] mask of a mono8 Image (non-zero: set)."""
    mask = conversions.image_to_numpy(msg)
    if mask.ndim != 2:
        raise ValueError(f"encoding '{msg.encoding}', expected mono8")
    return mask


def _static_extrinsic(values) -> np.ndarray | None:
    values = [float(v) for v in values]
    if len(values) == 16:
        return np.asarray(values, np.float64).reshape(4, 4)
    if len(values) != 1:
        raise ValueError(f"{NODE_NAME}: lidar_to_camera needs 16 values (row-major "
                         f"4x4 T_camera_lidar), got {len(values)}")
    return None


class EvaluatorNode(Node):
    """Scores ``depth`` against the reference frame by frame; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True))
        p = {name: self.get_parameter(name).value for name, _, _ in PARAMETERS}
        self.output_dir = str(p["output_dir"])
        self.max_frames = int(p["max_frames"])
        if p["reference"] not in ("lidar", "topic"):
            raise ValueError(f"{NODE_NAME}: parameter reference must be 'lidar' or "
                             f"'topic', got '{p['reference']}'")
        self.use_lidar = p["reference"] == "lidar"
        # the same reference label as the offline tool, so reports merge
        spec = (parse_reference("lidar", self.resolve_topic_name("lidar")) if self.use_lidar
                else parse_reference(self.resolve_topic_name("reference_depth")))
        results = EvaluationResults(float(p["min_depth"]), float(p["max_depth"]),
                                    bool(p["median_scaling"]), p["align"] or None,
                                    reference=spec.label)
        tol = float(p["match_tolerance" if self.use_lidar else "dense_tolerance"])
        self.frames_received = 0
        self.confidences_received = 0
        self.references_received = 0             # LiDAR scans or reference images
        self.odometry_received = 0
        self.report_paths = None
        self.scored = threading.Event()          # set after each scored frame
        self._tf_children: set[str] = set()      # frames that /tf moves
        self.scorer = OnlineScorer(
            results, str(p["model_name"]), str(p["condition"]), self.use_lidar,
            int(tol * 1e9), T_cam_lidar=_static_extrinsic(p["lidar_to_camera"]),
            world_frame=str(p["world_frame"]),
            motion_compensation=bool(p["motion_compensation"]),
            camera_frame=str(p["camera_frame"]), on_scored=self._on_scored,
            on_failed=self._on_failed, with_confidence=bool(p["confidence"]),
            temporal=bool(p["temporal"]), with_moving=bool(p["moving_mask"]),
            with_ground_truth=bool(p["covisibility"]))

        # Publishers: FrameMetrics when the interfaces are built.
        self.metrics_type = interfaces.message_type("FrameMetrics")
        self.metrics_pub = None
        if self.metrics_type is None:
            self.get_logger().warning("~/frame_metrics not published: "
                                      + interfaces.availability().reason)
        else:
            self.metrics_pub = self.create_publisher(self.metrics_type, "~/frame_metrics", 10)

        # Subscriptions.
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, DEPTH_TOPIC, self._on_depth, reliable)
        self.create_subscription(CameraInfo, DEPTH_INFO_TOPIC, self._on_info, reliable)
        if self.scorer.with_confidence:
            self.create_subscription(Image, CONFIDENCE_TOPIC, self._on_confidence, reliable)
        self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
        ref_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE
                             if p["reliable_inputs"] else ReliabilityPolicy.BEST_EFFORT)
        if (self.use_lidar and self.scorer.T_cam_lidar is None) or self.scorer.temporal:
            self._setup_tf(p["tf_bag"])
        if self.use_lidar:
            self.create_subscription(PointCloud2, "lidar", self._on_lidar, ref_qos)
        else:
            self.create_subscription(Image, "reference_depth", self._on_reference, ref_qos)
        self.moving_received = self.ground_truth_received = 0
        if self.scorer.with_moving:
            self.create_subscription(Image, "moving", self._on_moving, ref_qos)
        if self.scorer.with_ground_truth:
            self.create_subscription(Image, "ground_truth", self._on_ground_truth, ref_qos)
        self.create_subscription(Empty, "~/write_report", lambda _: self.write_report(), 1)
        self.get_logger().info(
            f"scoring '{DEPTH_TOPIC}' against {'LiDAR' if self.use_lidar else 'reference_depth'}"
            f" (condition {self.scorer.condition}, range {p['min_depth']}-{p['max_depth']} m)")

    # -- what tools read -----------------------------------------------------------
    @property
    def results(self) -> EvaluationResults:
        return self.scorer.results

    @property
    def matcher(self):
        return self.scorer.matcher

    @property
    def frames_scored(self) -> int:
        return self.scorer.frames_scored

    @property
    def frames_failed(self) -> int:
        return self.scorer.frames_failed

    # -- camera<-lidar ---------------------------------------------------------------
    def _setup_tf(self, tf_bag: str) -> None:
        """TF buffer: static frames from /tf_static (or the tf_bag), motion from /tf, /odom
        (camera<-lidar for the LiDAR reference, camera poses for the TAE)."""
        from nav_msgs.msg import Odometry

        from depth_perception.data.tf import TfBuffer

        self.scorer.tf = TfBuffer()
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            TFMessage = None
        if tf_bag:
            from depth_perception.evaluation.offline import static_tf_from_bag
            static_tf_from_bag(tf_bag, self.scorer.tf)
        if TFMessage is not None:
            self.create_subscription(TFMessage, "/tf_static", self._on_tf_static,
                                     latched_qos(100))
            self.create_subscription(TFMessage, "/tf", self._on_tf, 100)
        elif not tf_bag:
            self.get_logger().error(
                "no static camera/lidar frames: tf2_msgs is not importable here, so "
                "/tf_static cannot be received; set parameter tf_bag (a bag with "
                "/tf_static) or lidar_to_camera (16 values)")
        self.create_subscription(Odometry, "/odom", self._on_odom, 100)

    def _on_tf_static(self, msg):
        with self.scorer.lock:
            self.scorer.tf.add_tf_message(msg, static=True)

    def _on_tf(self, msg):
        with self.scorer.lock:
            for tr in msg.transforms:
                self._tf_children.add(tr.child_frame_id.lstrip("/"))
            self.scorer.tf.add_tf_message(msg, static=False)
            self.scorer.moved(max(stamp_to_ns(tr.header.stamp) for tr in msg.transforms)
                              if msg.transforms else None)

    def _on_odom(self, msg):
        with self.scorer.lock:
            if msg.child_frame_id.lstrip("/") not in self._tf_children:
                self.scorer.tf.add_odometry(msg)
            self.scorer.moved(stamp_to_ns(msg.header.stamp))
            self.odometry_received += 1

    # -- callbacks -----------------------------------------------------------------
    def _on_info(self, msg):
        try:
            K = conversions.camera_info_to_intrinsics(msg)
        except ValueError as exc:
            self.get_logger().warning(f"ignoring depth/camera_info: {exc}",
                                      throttle_duration_sec=5.0)
            return
        self.scorer.add_intrinsics(msg.header.frame_id, K)

    def _on_image(self, msg):
        try:
            self.scorer.add_image(stamp_to_ns(msg.header.stamp), conversions.image_to_rgb(msg))
        except ValueError:
            return

    # The counters below go up once the message is in the scorer: a caller that waits for
    # them (evaluate_online) and then flushes never races a message still being added.
    def _on_depth(self, msg):
        try:
            depth = conversions.image_to_depth(msg)
        except ValueError as exc:
            with self.scorer.lock:
                self.scorer.frames_failed += 1
            self.get_logger().warning(f"bad depth image: {exc}", throttle_duration_sec=5.0)
        else:
            self.scorer.add_depth(stamp_to_ns(msg.header.stamp), msg.header.frame_id, depth)
        self.frames_received += 1

    def _image_input(self, msg, decode, add, what: str) -> None:
        """Decode an Image input and hand it to the scorer; a bad one is logged, skipped."""
        try:
            value = decode(msg)
        except ValueError as exc:
            self.get_logger().warning(f"bad {what}: {exc}", throttle_duration_sec=5.0)
        else:
            add(stamp_to_ns(msg.header.stamp), value)

    def _on_confidence(self, msg):                  # 32FC1, as the depth
        self._image_input(msg, conversions.image_to_depth, self.scorer.add_confidence,
                          "confidence image")
        self.confidences_received += 1

    def _on_moving(self, msg):
        self._image_input(msg, _mono_mask, self.scorer.add_moving, "moving-object mask")
        self.moving_received += 1

    def _on_ground_truth(self, msg):
        self._image_input(msg, conversions.image_to_depth, self.scorer.add_ground_truth,
                          "ground-truth depth")
        self.ground_truth_received += 1

    def _on_lidar(self, msg):
        points = conversions.cloud_to_numpy(msg, ("x", "y", "z"))
        self.scorer.add_reference(stamp_to_ns(msg.header.stamp), points, msg.header.frame_id)
        self.references_received += 1

    def _on_reference(self, msg):
        self._image_input(msg, conversions.image_to_depth, self.scorer.add_reference,
                          "reference depth")
        self.references_received += 1

    # -- scored frames -------------------------------------------------------------
    def _on_failed(self, stamp: int, reason: str) -> None:
        self.get_logger().warning(f"frame {stamp} not scored: {reason}",
                                  throttle_duration_sec=5.0)

    def _on_scored(self, stamp: int, frame_id: str, m: dict) -> None:
        if self.metrics_pub is not None:
            msg = self.metrics_type()
            msg.header.stamp = ns_to_stamp(stamp)
            msg.header.frame_id = frame_id
            msg.condition = self.scorer.condition
            for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"):
                setattr(msg, key, float(m[key]))
            msg.valid_points = int(m["n_valid"])
            self.metrics_pub.publish(msg)
        self.scored.set()
        if self.max_frames and self.scorer.frames_scored == self.max_frames:
            self.write_report()

    # -- report --------------------------------------------------------------------
    def flush(self):
        """Score the frames still waiting for a later reference with what arrived."""
        self.scorer.flush()

    def _say(self, level: int, text: str) -> None:
        """Node logger while the context lives; Python logging after shutdown (Ctrl-C)."""
        if self.context.ok():
            {logging.INFO: self.get_logger().info,
             logging.WARNING: self.get_logger().warning,
             logging.ERROR: self.get_logger().error}[level](text)
        else:
            log.log(level, "%s: %s", NODE_NAME, text)

    def write_report(self):
        """Write the report into output_dir (if set); returns the paths dict or None."""
        self.flush()
        with self.scorer.lock:
            if not self.results.models:
                self._say(logging.WARNING, "no frame scored yet: no report written")
                return None
            if not self.output_dir:
                return None
            self.report_paths = write_report(
                self.results, self.output_dir, title="Online depth evaluation",
                notes=f"Live scoring by the {NODE_NAME} node.")
        self._say(logging.INFO, f"report written to {self.report_paths['report']}")
        return self.report_paths

    def destroy_node(self):
        if self.output_dir and self.report_paths is None:
            try:
                self.write_report()
            except Exception as exc:                # noqa: BLE001 - shutting down
                self._say(logging.ERROR, f"could not write the report: {exc}")
        return super().destroy_node()


def main(args=None) -> int:
    """Entry point: spin until SIGINT/SIGTERM, then write the report and end (exit 0;
    2 for bad parameters)."""
    from depth_perception.ros.lifetime import run_nodes

    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    try:
        return run_nodes(lambda: [EvaluatorNode()], args=args)
    except ValueError as exc:
        logging.getLogger(NODE_NAME).error(str(exc))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
