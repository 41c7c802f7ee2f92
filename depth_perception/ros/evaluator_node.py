"""Online evaluator: scores a live depth topic against LiDAR or a ground-truth depth topic.

Node ``depth_evaluator`` (plain rclpy Node, one per run):

* subscribes ``depth`` (sensor_msgs/Image 32FC1/16UC1, the depth node's output) and
  ``depth/camera_info`` (its K, for projecting LiDAR), plus the reference: ``lidar``
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
* writes the same report as the offline tool (``output_dir``) on ``~/write_report``
  (std_msgs/Empty), after ``max_frames`` frames, or when it is destroyed.

Pure parts (reference projection, matching, metrics, reports) live in
:mod:`depth_perception.evaluation.ground_truth` and :mod:`.report`.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from depth_perception.data.projection import camera_from_lidar, project_lidar
from depth_perception.evaluation.ground_truth import StampMatcher, parse_reference
from depth_perception.evaluation.report import EvaluationResults, write_report

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
)


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _make_node_class():
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                           qos_profile_sensor_data)
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Empty

    from depth_perception import conversions
    from depth_perception.ros import interfaces

    class EvaluatorNode(Node):
        """Scores ``depth`` against the reference frame by frame; see the module docstring."""

        def __init__(self, **kwargs):
            super().__init__(NODE_NAME, **kwargs)
            for name, default, description in PARAMETERS:
                self.declare_parameter(name, default, ParameterDescriptor(
                    description=description, read_only=True))
            p = {name: self.get_parameter(name).value for name, _, _ in PARAMETERS}
            self.condition = str(p["condition"])
            self.model_name = str(p["model_name"])
            self.output_dir = str(p["output_dir"])
            self.max_frames = int(p["max_frames"])
            self.camera_frame = str(p["camera_frame"])
            if p["reference"] not in ("lidar", "topic"):
                raise ValueError(f"{NODE_NAME}: parameter reference must be 'lidar' or "
                                 f"'topic', got '{p['reference']}'")
            self.use_lidar = p["reference"] == "lidar"
            # the same reference label as the offline tool, so reports merge
            spec = (parse_reference("lidar", self.resolve_topic_name("lidar")) if self.use_lidar
                    else parse_reference(self.resolve_topic_name("reference_depth")))
            self.results = EvaluationResults(
                float(p["min_depth"]), float(p["max_depth"]), bool(p["median_scaling"]),
                p["align"] or None, reference=spec.label)
            self.lock = threading.RLock()
            self.frames_scored = 0
            self.frames_received = 0
            self.references_received = 0             # LiDAR scans or reference images
            self.odometry_received = 0
            self.frames_failed = 0
            self.report_paths = None
            self.scored = threading.Event()          # set after each scored frame
            self._intrinsics = {}                    # frame_id -> Intrinsics
            self._images = {}                        # stamp_ns -> rgb (sample figure only)
            tol = int(float(p["match_tolerance" if self.use_lidar else "dense_tolerance"])
                      * 1e9)
            self.matcher = StampMatcher(tol, nearest=self.use_lidar)
            self.T_cam_lidar = self._static_extrinsic(p)
            self.world_frame = str(p["world_frame"])
            self.motion_compensation = bool(p["motion_compensation"])
            self._tf = None
            self._dynamic_until = None
            self._ready = []                         # matched, waiting for odometry

            # Publishers: FrameMetrics when the interfaces are built.
            self.metrics_type = interfaces.message_type("FrameMetrics")
            self.metrics_pub = None
            if self.metrics_type is None:
                self.get_logger().warning("~/frame_metrics not published: "
                                          + interfaces.availability().reason)
            else:
                self.metrics_pub = self.create_publisher(self.metrics_type, "~/frame_metrics",
                                                         10)

            # Subscriptions.
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                  history=HistoryPolicy.KEEP_LAST)
            self.create_subscription(Image, "depth", self._on_depth, reliable)
            self.create_subscription(CameraInfo, "depth/camera_info", self._on_info, reliable)
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
            ref_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE
                                 if p["reliable_inputs"] else ReliabilityPolicy.BEST_EFFORT)
            if self.use_lidar:
                self.create_subscription(PointCloud2, "lidar", self._on_lidar, ref_qos)
                if self.T_cam_lidar is None:
                    self._setup_tf(p, QoSProfile, DurabilityPolicy, ReliabilityPolicy)
            else:
                self.create_subscription(Image, "reference_depth", self._on_reference, ref_qos)
            self.create_subscription(Empty, "~/write_report", lambda _: self.write_report(), 1)
            self.get_logger().info(
                f"scoring 'depth' against {'LiDAR' if self.use_lidar else 'reference_depth'}"
                f" (condition {self.condition}, range {p['min_depth']}-{p['max_depth']} m)")

        # -- camera<-lidar ---------------------------------------------------------------
        def _static_extrinsic(self, p):
            values = [float(v) for v in p["lidar_to_camera"]]
            if len(values) == 16:
                return np.asarray(values, np.float64).reshape(4, 4)
            if len(values) != 1:
                raise ValueError(f"{NODE_NAME}: lidar_to_camera needs 16 values (row-major "
                                 f"4x4 T_camera_lidar), got {len(values)}")
            return None

        def _setup_tf(self, p, QoSProfile, DurabilityPolicy, ReliabilityPolicy):
            """TF buffer: static frames from /tf_static (or the tf_bag), motion from /tf, /odom."""
            from nav_msgs.msg import Odometry

            from depth_perception.data.tf import TfBuffer

            self._tf = TfBuffer()
            self._tf_children = set()                # frames that /tf moves
            self._dynamic_until = None               # newest dynamic stamp received
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                TFMessage = None
            if p["tf_bag"]:
                from depth_perception.evaluation.offline import static_tf_from_bag
                static_tf_from_bag(p["tf_bag"], self._tf)
            if TFMessage is not None:
                latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                     reliability=ReliabilityPolicy.RELIABLE)
                self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched)
                self.create_subscription(TFMessage, "/tf", self._on_tf, 100)
            elif not p["tf_bag"]:
                self.get_logger().error(
                    "no static camera/lidar frames: tf2_msgs is not importable here, so "
                    "/tf_static cannot be received; set parameter tf_bag (a bag with "
                    "/tf_static) or lidar_to_camera (16 values)")
            self.create_subscription(Odometry, "/odom", self._on_odom, 100)

        def _on_tf_static(self, msg):
            with self.lock:
                self._tf.add_tf_message(msg, static=True)

        def _on_tf(self, msg):
            with self.lock:
                for tr in msg.transforms:
                    self._tf_children.add(tr.child_frame_id.lstrip("/"))
                self._tf.add_tf_message(msg, static=False)
                self._moved(max(_stamp_ns(tr.header.stamp) for tr in msg.transforms)
                            if msg.transforms else None)

        def _on_odom(self, msg):
            with self.lock:
                self.odometry_received += 1
                if msg.child_frame_id.lstrip("/") not in self._tf_children:
                    self._tf.add_odometry(msg)
                self._moved(_stamp_ns(msg.header.stamp))

        def _moved(self, stamp):
            if stamp is not None and (self._dynamic_until is None or stamp > self._dynamic_until):
                self._dynamic_until = stamp
            self._drain_locked(final=False)

        def _camera_from_lidar(self, camera_frame, lidar_frame, stamp_ns, scan_stamp_ns):
            if self.T_cam_lidar is not None:
                return self.T_cam_lidar
            return camera_from_lidar(self._tf, camera_frame, lidar_frame, stamp_ns,
                                     scan_stamp_ns, self.world_frame, self.motion_compensation)

        # -- callbacks -----------------------------------------------------------------
        def _on_info(self, msg):
            try:
                K = conversions.camera_info_to_intrinsics(msg)
            except ValueError as exc:
                self.get_logger().warning(f"ignoring depth/camera_info: {exc}",
                                          throttle_duration_sec=5.0)
                return
            with self.lock:
                new = msg.header.frame_id not in self._intrinsics
                self._intrinsics[msg.header.frame_id] = K
                if new:
                    self._drain_locked(final=False)

        def _on_image(self, msg):
            try:
                self._images[_stamp_ns(msg.header.stamp)] = conversions.image_to_rgb(msg)
            except ValueError:
                return
            while len(self._images) > 30:
                del self._images[min(self._images)]

        def _on_depth(self, msg):
            self.frames_received += 1
            try:
                depth = conversions.image_to_depth(msg)
            except ValueError as exc:
                self.frames_failed += 1
                self.get_logger().warning(f"bad depth image: {exc}", throttle_duration_sec=5.0)
                return
            item = (depth, msg.header.frame_id)
            with self.lock:
                self._score(self.matcher.add_prediction(_stamp_ns(msg.header.stamp), item))

        def _on_lidar(self, msg):
            self.references_received += 1
            points = conversions.cloud_to_numpy(msg, ("x", "y", "z"))
            item = (points, msg.header.frame_id)
            with self.lock:
                self._score(self.matcher.add_reference(_stamp_ns(msg.header.stamp), item))

        def _on_reference(self, msg):
            self.references_received += 1
            try:
                ref = conversions.image_to_depth(msg)
            except ValueError as exc:
                self.get_logger().warning(f"bad reference depth: {exc}",
                                          throttle_duration_sec=5.0)
                return
            with self.lock:
                self._score(self.matcher.add_reference(_stamp_ns(msg.header.stamp),
                                                       (ref, None)))

        # -- scoring -------------------------------------------------------------------
        def _reference_depth(self, depth, frame_id, stamp, ref_stamp, ref):
            data, lidar_frame = ref
            if not self.use_lidar:
                return data
            camera_frame = self.camera_frame or frame_id
            K = self._intrinsics.get(frame_id)
            if K is None:
                raise ValueError(f"no depth/camera_info received for frame '{frame_id}'")
            if (K.height, K.width) != depth.shape:
                raise ValueError(f"depth/camera_info is {K.width}x{K.height} but the depth "
                                 f"image is {depth.shape[1]}x{depth.shape[0]}")
            T = self._camera_from_lidar(camera_frame, lidar_frame, stamp, ref_stamp)
            return project_lidar(data, T, K)

        def _must_wait(self, match) -> bool:
            """A LiDAR frame waits for its depth/camera_info (a separate topic that may come
            second) and, with motion compensation, for odometry up to both stamps (TF does
            not extrapolate)."""
            stamp, (_, frame_id), ref_stamp, _ = match
            if not self.use_lidar:
                return False
            if frame_id not in self._intrinsics:
                return True
            if not self.motion_compensation or self.T_cam_lidar is not None:
                return False
            return self._dynamic_until is None or self._dynamic_until < max(stamp, ref_stamp)

        def _score(self, matches):
            with self.lock:
                self._ready.extend(matches)
                self._drain_locked(final=False)

        def _drain_locked(self, final):
            """Score the matched frames that need nothing more (caller holds self.lock)."""
            ready, self._ready = self._ready, []
            now = []
            for match in ready:
                if not final and self._must_wait(match):
                    self._ready.append(match)
                else:
                    now.append(match)
            for stamp, (depth, frame_id), ref_stamp, ref in now:
                try:
                    gt = self._reference_depth(depth, frame_id, stamp, ref_stamp, ref)
                    with self.lock:
                        m = self.results.add_frame(self.model_name, gt, depth, self.condition,
                                                   "online", self.frames_scored, stamp,
                                                   self._images.get(stamp))
                        self.frames_scored += 1
                except ValueError as exc:
                    self.frames_failed += 1
                    self.get_logger().warning(f"frame {stamp} not scored: {exc}",
                                              throttle_duration_sec=5.0)
                    continue
                self._publish(stamp, frame_id, m)
                self.scored.set()
                if self.max_frames and self.frames_scored == self.max_frames:
                    self.write_report()

        def _publish(self, stamp, frame_id, m):
            if self.metrics_pub is None:
                return
            msg = self.metrics_type()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
            msg.header.frame_id = frame_id
            msg.condition = self.condition
            for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"):
                setattr(msg, key, float(m[key]))
            msg.valid_points = int(m["n_valid"])
            self.metrics_pub.publish(msg)

        # -- report --------------------------------------------------------------------
        def flush(self):
            """Score the frames still waiting for a later reference with what arrived."""
            with self.lock:
                self._ready.extend(self.matcher.flush())
                self._drain_locked(final=True)

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
            with self.lock:
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

    return EvaluatorNode


_NODE_CLASS = None


def EvaluatorNode(**kwargs):  # noqa: N802 - a class factory kept lazy (rclpy at call time)
    """Create the evaluator node (rclpy must be initialised). kwargs go to rclpy Node."""
    global _NODE_CLASS
    if _NODE_CLASS is None:
        _NODE_CLASS = _make_node_class()
    return _NODE_CLASS(**kwargs)


def _wait(predicate, timeout: float, what: str, raise_on_timeout: bool = True) -> bool:
    """Wait for a condition of other threads (DDS matching, node counters) up to timeout."""
    import time

    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            return False
        tick.wait(0.01)
    return True


def evaluate_online(bag, model: str, results: EvaluationResults | None = None,
                    model_name: str = "online", backend: str = "auto",
                    input_short_side: int = 518, rate: float = 1.0, reference: str = "lidar",
                    condition: str | None = None, min_depth: float = 0.1,
                    max_depth: float = 80.0, timeout: float = 120.0) -> EvaluationResults:
    """Replay ``bag`` over DDS into an in-process depth node and score it live.

    1. a private rclpy context with the depth node (``model``, ``backend``,
       ``input_short_side``), the evaluator (camera<-lidar static frames from the bag's
       /tf_static, motion from the replayed /odom) and a replay node;
    2. the bag's camera, LiDAR, odometry (and ground-truth) topics played with their
       recorded timing once every subscriber has matched;
    3. wait until the depth node has handled every image and the evaluator has received
       every depth image, then score the frames still waiting for a later scan.

    ``reference``: "lidar" or a dense depth topic of the bag (e.g. /ground_truth/depth).
    Frames the depth node drops (one-slot queue, when inference is slower than the
    replay) are simply not scored. Returns the evaluator's results (merged into
    ``results`` if given, which must use the same protocol).
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from depth_perception.data.bag import BagReader, BagTopics
    from depth_perception.ros.depth_node import DepthNode
    from depth_perception.ros.replay import BagReplayer

    lidar = parse_reference(reference).kind == "lidar"
    topics = BagTopics() if lidar else BagTopics(gt_depth=reference)
    ref_topic = topics.lidar if lidar else topics.gt_depth
    with BagReader(bag, topics) as reader:
        condition = condition or reader.condition or "unknown"
        reader.require("image")
        reader.require("lidar" if lidar else "gt_depth")
        camera = reader.camera_info(0)           # warm the node up at the camera's size
        played = [topics.image, topics.camera_info, ref_topic]
        if lidar and reader.has("odom"):
            played.append(topics.odom)
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    nodes = []
    spin = threading.Thread(target=executor.spin, daemon=True, name="evaluate_online")
    try:
        # 1. Nodes
        depth_node = DepthNode(context=context, parameter_overrides=[
            Parameter("model", value=str(model)), Parameter("backend", value=backend),
            Parameter("input_short_side", value=int(input_short_side)),
            Parameter("warmup_size", value=f"{camera.width}x{camera.height}")],
            cli_args=["--ros-args", "-r", f"image:={topics.image}",
                      "-r", f"camera_info:={topics.camera_info}"])
        nodes.append(depth_node)
        evaluator = EvaluatorNode(context=context, parameter_overrides=[
            Parameter("reference", value="lidar" if lidar else "topic"),
            Parameter("condition", value=condition), Parameter("model_name", value=model_name),
            Parameter("min_depth", value=float(min_depth)),
            Parameter("max_depth", value=float(max_depth)),
            Parameter("tf_bag", value=str(bag)), Parameter("reliable_inputs", value=True)],
            cli_args=["--ros-args", "-r", f"lidar:={topics.lidar}",
                      "-r", f"reference_depth:={topics.gt_depth}",
                      "-r", f"image:={topics.image}"])
        nodes.append(evaluator)
        player_node = rclpy.create_node("evaluate_online_replay", context=context)
        nodes.append(player_node)
        for node in nodes:
            executor.add_node(node)
        spin.start()
        # the depth node configures (loads the model) and activates from a timer
        _wait(lambda: depth_node.state == "active" or bool(depth_node.problem), timeout,
              "the depth node to load the model and activate")
        if depth_node.state != "active":
            raise RuntimeError(f"the depth node did not start with model {model}: "
                               f"{depth_node.problem or depth_node.state}")
        # 2. Replay once everyone listens (depth node and evaluator on their inputs,
        #    evaluator on the depth node's output)
        with BagReplayer(bag, player_node, topics=played, rate=rate) as player:
            player.wait_for_subscribers(played, timeout=timeout)
            _wait(lambda: evaluator.count_publishers(evaluator.resolve_topic_name("depth")) > 0
                  and depth_node.count_subscribers(depth_node.resolve_topic_name("depth")) > 0,
                  timeout, "the evaluator to match the depth node's output")
            stats = player.play()
        n_images = stats.published[topics.image]
        # 3. Let the last frames through the depth node and the evaluator
        s = depth_node.stats
        _wait(lambda: s.frames_in >= n_images, 10.0, "the depth node to receive every image",
              raise_on_timeout=False)       # best-effort camera input may lose a frame
        _wait(lambda: s.frames_out + s.frames_dropped + s.frames_bad >= s.frames_in
              and evaluator.frames_received >= s.frames_out, timeout,
              "the depth node and the evaluator to finish")
        # every scan / reference image and odometry message delivered before the frames
        # still waiting for a later scan are decided (reliable, so nothing is lost)
        n_odom = stats.published[topics.odom] if topics.odom in played else 0
        _wait(lambda: evaluator.references_received >= stats.published[ref_topic]
              and evaluator.odometry_received >= n_odom, timeout,
              "the evaluator to receive every reference and odometry message")
        evaluator.flush()
        log.info("online evaluation of %s: %d images played, depth node in/out/dropped/bad "
                 "%d/%d/%d/%d; evaluator received %d, scored %d, unmatched %d, failed %d",
                 bag, n_images, s.frames_in, s.frames_out, s.frames_dropped, s.frames_bad,
                 evaluator.frames_received, evaluator.frames_scored,
                 evaluator.matcher.unmatched, evaluator.frames_failed)
        if evaluator.frames_scored == 0:
            raise RuntimeError(f"online evaluation of {bag}: no frame could be scored "
                               f"({s.frames_out} depth images, {evaluator.frames_failed} "
                               "failed; see the log)")
        online = evaluator.results
        online.models[model_name].info.update(
            model=str(model), backend=s.backend, images_played=n_images,
            frames_dropped=s.frames_dropped, frames_bad=s.frames_bad,
            frames_unmatched=evaluator.matcher.unmatched, frames_failed=evaluator.frames_failed)
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in nodes:
            try:
                node.destroy_node()
            except Exception:                # noqa: BLE001 - teardown goes on
                log.debug("destroy_node failed", exc_info=True)
        context.try_shutdown()
        if spin.is_alive():
            spin.join(timeout=10.0)
    if results is None:
        return online
    results.absorb(online, append=True)
    return results


def main(args=None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    rclpy.init(args=args)
    node = None
    try:
        node = EvaluatorNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:
        logging.getLogger(NODE_NAME).error(str(exc))
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
