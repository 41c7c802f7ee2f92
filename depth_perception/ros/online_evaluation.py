"""Online evaluation of a bag: replay it over DDS into a depth node and score it live.

:func:`evaluate_online` runs, in one process and a private rclpy context, the depth node
(:class:`depth_perception.ros.depth_node.DepthNode`), the evaluator
(:class:`depth_perception.ros.evaluator_node.EvaluatorNode`) and a bag replayer, and
returns the evaluator's :class:`~depth_perception.evaluation.report.EvaluationResults`
(the same protocol as the offline tool, so the two merge and can be compared frame by
frame). The demo and ``evaluate --online`` use it.
"""
from __future__ import annotations

import logging
import threading

from depth_perception.evaluation.ground_truth import parse_reference
from depth_perception.evaluation.report import EvaluationResults

log = logging.getLogger(__name__)


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
                    input_short_side: int = 0, focal_policy: str = "as_trained",
                    rate: float = 1.0, queue_size: int = 0, reference: str = "lidar",
                    condition: str | None = None, min_depth: float = 0.1,
                    max_depth: float = 80.0, timeout: float = 120.0,
                    input_image: str = "raw",
                    fusion: dict | None = None,
                    confidence: bool = False,
                    temporal: bool = False) -> EvaluationResults:
    """Replay ``bag`` over DDS into an in-process depth node and score it live.

    1. a private rclpy context with the depth node (``model``, ``backend``,
       ``input_short_side`` (0: as the model was trained), ``focal_policy``), the evaluator (camera<-lidar static frames from the bag's
       /tf_static, motion from the replayed /odom) and a replay node;
    2. the bag's camera, LiDAR, odometry (and ground-truth) topics played with their
       recorded timing once every subscriber has matched;
    3. wait until the depth node has handled every image and the evaluator has received
       every depth image, then score the frames still waiting for a later scan.

    ``reference``: "lidar" or a dense depth topic of the bag (e.g. /ground_truth/depth).
    ``input_image``: the depth node's parameter (raw images are rectified by the node).
    ``queue_size``: the depth node's input queue; 0 (default) holds every image of the
    bag, so that the bursts a loaded machine delivers (a starved replayer catching up
    publishes several frames within milliseconds) are all scored - evaluation wants every
    frame, the latency is reported apart; 1 is the live node's newest-frame-only queue.
    Frames the depth node drops are not scored. ``fusion``: the depth node's temporal
    fusion parameters (``{"fusion_threshold": 0.1, "fusion_max_age": 8}``; None: off);
    the bag's /tf and /tf_static are then played too, the motion's source.
    ``confidence``: the depth node publishes ``confidence/image`` (a model with an
    uncertainty output, or ``fusion``): the evaluator scores each frame with it (AUSE,
    AURG), as the offline tool scores a row with a confidence. ``temporal``: the
    evaluator also scores the TAE of consecutive frames as the offline tool does: camera
    poses from the bag's odometry and TF, and, where the bag has them, its moving-object
    mask and dense ground truth played too (static and co-visible pixels). Returns the
    evaluator's
    results (merged into ``results`` if given, which must use the same protocol).
    """
    import rclpy
    from rclpy.parameter import Parameter

    from depth_perception.data.bag import BagReader, BagTopics
    from depth_perception.ros.camera_pipeline import CONFIDENCE_TOPIC, DEPTH_TOPIC
    from depth_perception.ros.depth_node import DepthNode
    from depth_perception.ros.evaluator_node import EvaluatorNode
    from depth_perception.ros.lifetime import Spinner, init, make_executor, shutdown_lifecycle
    from depth_perception.ros.replay import BagReplayer
    from depth_perception.ros.tf_listener import _import_tf_message

    lidar = parse_reference(reference).kind == "lidar"
    topics = BagTopics() if lidar else BagTopics(gt_depth=reference)
    ref_topic = topics.lidar if lidar else topics.gt_depth
    with BagReader(bag, topics) as reader:
        condition = condition or reader.condition or "unknown"
        reader.require("image")
        reader.require("lidar" if lidar else "gt_depth")
        camera = reader.camera_info(0)           # warm the node up at the camera's size
        bag_images = reader.count("image")
        played = [topics.image, topics.camera_info, ref_topic]
        if (lidar or temporal) and reader.has("odom"):
            played.append(topics.odom)
        moving = temporal and reader.has("gt_moving")
        covisibility = temporal and reader.has("gt_depth")
        played += [t for t, wanted in ((topics.gt_moving, moving),
                                       (topics.gt_depth, covisibility))
                   if wanted and t not in played]
        if (fusion is not None or temporal) and _import_tf_message()[0] is not None:
            # the node's ego-motion and the evaluator's camera poses come from TF
            # (without tf2_msgs the node has none: every frame is single-frame, counted
            # as fusion_resets_no_tf; the evaluator reads the bag's static frames and
            # the replayed odometry)
            played += [getattr(topics, k) for k in ("tf_static", "tf") if reader.has(k)]
    context = rclpy.Context()
    init(context=context)
    spin = Spinner(make_executor(context=context), "evaluate_online")
    nodes = []
    try:
        # 1. Nodes
        depth_node = DepthNode(context=context, parameter_overrides=[
            Parameter("model", value=str(model)), Parameter("backend", value=backend),
            Parameter("input_short_side", value=int(input_short_side)),
            Parameter("focal_policy", value=str(focal_policy)),
            Parameter("input_image", value=str(input_image)),
            Parameter("queue_size", value=int(queue_size or max(1, bag_images))),
            Parameter("warmup_size", value=f"{camera.width}x{camera.height}"),
            *([Parameter("temporal_fusion", value=True)]
              + [Parameter(k, value=v) for k, v in fusion.items()]
              if fusion is not None else [])],
            cli_args=["--ros-args", "-r", f"image:={topics.image}",
                      "-r", f"camera_info:={topics.camera_info}"])
        nodes.append(depth_node)
        evaluator = EvaluatorNode(context=context, parameter_overrides=[
            Parameter("reference", value="lidar" if lidar else "topic"),
            Parameter("condition", value=condition), Parameter("model_name", value=model_name),
            Parameter("min_depth", value=float(min_depth)),
            Parameter("max_depth", value=float(max_depth)),
            Parameter("tf_bag", value=str(bag)), Parameter("reliable_inputs", value=True),
            Parameter("confidence", value=bool(confidence)),
            Parameter("temporal", value=bool(temporal)),
            Parameter("moving_mask", value=bool(moving)),
            Parameter("covisibility", value=bool(covisibility))],
            cli_args=["--ros-args", "-r", f"lidar:={topics.lidar}",
                      "-r", f"reference_depth:={topics.gt_depth}",
                      "-r", f"moving:={topics.gt_moving}",
                      "-r", f"ground_truth:={topics.gt_depth}",
                      "-r", f"image:={topics.image}"])
        nodes.append(evaluator)
        player_node = rclpy.create_node("evaluate_online_replay", context=context)
        nodes.append(player_node)
        for node in nodes:
            spin.executor.add_node(node)
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
            for out in (DEPTH_TOPIC, CONFIDENCE_TOPIC) if confidence else (DEPTH_TOPIC,):
                _wait(lambda: evaluator.count_publishers(evaluator.resolve_topic_name(out)) > 0
                      and depth_node.count_subscribers(depth_node.resolve_topic_name(out)) > 0,
                      timeout, f"the evaluator to match the depth node's {out}")
            stats = player.play()
        n_images = stats.published[topics.image]
        # 3. Let the last frames through the depth node and the evaluator
        s = depth_node.stats
        _wait(lambda: s.frames_in >= n_images, 10.0, "the depth node to receive every image",
              raise_on_timeout=False)       # best-effort camera input may lose a frame
        _wait(lambda: s.frames_out + s.frames_dropped + s.frames_bad >= s.frames_in
              and evaluator.frames_received >= s.frames_out, timeout,
              "the depth node and the evaluator to finish")
        if confidence:              # published right after each depth image
            _wait(lambda: evaluator.confidences_received >= s.frames_out, 10.0,
                  "the evaluator to receive every confidence image", raise_on_timeout=False)
        # every scan / reference image and odometry message delivered before the frames
        # still waiting for a later scan are decided (reliable, so nothing is lost)
        n_odom = stats.published[topics.odom] if topics.odom in played else 0
        n_moving = stats.published[topics.gt_moving] if moving else 0
        n_truth = stats.published[topics.gt_depth] if covisibility else 0
        _wait(lambda: evaluator.references_received >= stats.published[ref_topic]
              and evaluator.odometry_received >= n_odom
              and evaluator.moving_received >= n_moving
              and evaluator.ground_truth_received >= n_truth, timeout,
              "the evaluator to receive every reference, odometry and ground-truth message")
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
        # also on Ctrl-C: no callback runs any more, then the depth node's shutdown
        # transition (its worker joined), then the nodes, then the context
        spin.stop(timeout=10.0)
        for node in nodes:
            try:
                shutdown_lifecycle(node)
                node.destroy_node()
            except Exception:                # noqa: BLE001 - teardown goes on
                log.debug("teardown of %s failed", node.get_name(), exc_info=True)
        context.try_shutdown()
    if results is None:
        return online
    results.absorb(online, append=True)
    return results


