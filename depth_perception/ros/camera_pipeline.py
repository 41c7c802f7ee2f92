"""One camera of the depth node: its topics, pairing, queue, publishers and counters.

The node (:mod:`depth_perception.ros.depth_node`) owns the model, the parameters, the
lifecycle and one inference worker; it holds one :class:`CameraPipeline` per entry of
the ``cameras`` parameter. For the camera namespace ``C`` ('' = the node's own
topics) a pipeline

* subscribes ``C/image`` (or ``C/image/compressed``) and ``C/camera_info`` and pairs
  them by stamp with its own :class:`~depth_perception.runtime.pairing.StampPairer`,
* keeps its own newest-frame queue (``queue_size`` frames; older ones are dropped and
  counted in its :class:`~depth_perception.ros.diagnostics.FrameStats`),
* turns a paired frame into a :class:`~depth_perception.runtime.estimator.FrameInput`
  (:meth:`prepare`: stamp order, decoding, LiDAR reference, TF camera pose, with this
  camera's scale policy; the raw image with the rectifier of its calibration,
  :func:`depth_perception.rectify.rectifier`, which the estimator uses to resample it
  straight to the model input, maps cached per calibration) and a result
  into ``C/depth/image`` beside ``C/depth/camera_info`` (image_transport's pairing: the
  rectified camera, D = 0), ``C/points``, ``C/depth_colorized/image`` and the colour
  image in the depth's geometry ``C/rgb/image_rect_color`` beside ``C/rgb/camera_info``
  (only while subscribed) with the
  frame's stamp and frame_id (:meth:`finish`).

The first camera uses the estimator's own scale policy (one camera: exactly as before);
every other camera gets its own copy at configure, so smoothing never mixes cameras.
"""
from __future__ import annotations

import collections
import copy
import functools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from depth_perception import conversions, rectify
from depth_perception.colorize import colorize_depth
from depth_perception.conversions import stamp_to_ns
from depth_perception.data.projection import project_lidar
from depth_perception.ros import qos as ros_qos
from depth_perception.ros.cloud_output import CloudOutput
from depth_perception.ros.diagnostics import FrameStats, Throttle, image_problem
from depth_perception.runtime.estimator import FrameInput
from depth_perception.runtime.fusion import TemporalFusion
from depth_perception.runtime.pairing import StampPairer

#: image_transport layout: an image topic ``<ns>/image`` beside ``<ns>/camera_info``
DEPTH_TOPIC = "depth/image"
DEPTH_INFO_TOPIC = "depth/camera_info"
COLORIZED_TOPIC = "depth_colorized/image"        # display only: no CameraInfo of its own
#: the colour image in the depth's geometry (rectified, camera resolution) beside its
#: CameraInfo (= depth/camera_info): depth_image_proc/point_cloud_xyzrgb's input names,
#: and the colour of rviz's DepthCloud
RGB_TOPIC = "rgb/image_rect_color"
RGB_INFO_TOPIC = "rgb/camera_info"
#: per-pixel confidence (32FC1, 0..1, NaN where no depth) beside its CameraInfo
CONFIDENCE_TOPIC = "confidence/image"
CONFIDENCE_INFO_TOPIC = "confidence/camera_info"


CONFIDENCE_SOURCES = {
    "model": "from the model's uncertainty output (log-variance)",
    "temporal": "from the temporal fusion's agreement",
    "": "none (the model has no uncertainty output and temporal_fusion is off; "
        "confidence/image is not published)"}


@dataclass
class Frame:
    """A paired image and CameraInfo waiting for inference."""

    image: object
    info: object
    received: float


@dataclass
class Job:
    """A frame ready for the model: the estimator input plus what publishing needs."""

    input: FrameInput
    header: object
    stamp_ns: int


class CameraPipeline:
    """Everything per camera; ``node`` is the DepthNode (logger, settings, worker
    condition ``node.frames_ready``, transforms, LiDAR cloud, status reporter)."""

    def __init__(self, node, namespace: str, index: int, callback_group):
        self.node = node
        self.namespace = namespace.rstrip("/")
        self.index = index
        self.label = self.namespace.strip("/") or "(node namespace)"
        self.stats = FrameStats()
        self.cloud = CloudOutput(node, node.transforms, self.stats)
        self.pairer = StampPairer(node.settings.camera_info_wait)
        self.queue: collections.deque[Frame] = collections.deque()
        self.subscriptions: list = []
        self.publishers: dict = {}
        self.scale_policy = None          # None: the estimator's own (the first camera)
        self._group = callback_group
        self._throttle = Throttle(5.0)
        self._pair_timer = None
        self._pair_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_stamp_ns: int | None = None
        self._plan_said = ""
        self.frame_id = ""                # of the last published frame (for ~/status)
        self.confidence_source: str | None = None   # in use ('' none): logged on change
        self.fusion: TemporalFusion | None = None   # temporal_fusion: this camera's state
        self._fused_stamp_ns: int | None = None     # stamp of the frame the state holds

    def topic(self, name: str) -> str:
        """``name`` in this camera's namespace (relative unless the namespace is absolute)."""
        return f"{self.namespace}/{name}" if self.namespace else name

    def _say(self, text: str) -> str:
        return text if len(self.node.cameras) == 1 else f"camera '{self.label}': {text}"

    # -- lifecycle ----------------------------------------------------------------------
    def configure(self, est) -> None:
        """Publishers, and this camera's scale policy (a copy of the estimator's)."""
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        node, qos = self.node, ros_qos.output_qos(2)
        self.publishers = {
            "depth": node.create_lifecycle_publisher(Image, self.topic(DEPTH_TOPIC), qos),
            "info": node.create_lifecycle_publisher(CameraInfo, self.topic(DEPTH_INFO_TOPIC),
                                                    qos),
            "points": node.create_lifecycle_publisher(PointCloud2, self.topic("points"), qos),
            "colorized": node.create_lifecycle_publisher(Image, self.topic(COLORIZED_TOPIC),
                                                         qos),
            "rgb": node.create_lifecycle_publisher(Image, self.topic(RGB_TOPIC), qos),
            "rgb_info": node.create_lifecycle_publisher(CameraInfo, self.topic(RGB_INFO_TOPIC),
                                                        qos),
            "confidence": node.create_lifecycle_publisher(Image, self.topic(CONFIDENCE_TOPIC),
                                                          qos),
            "confidence_info": node.create_lifecycle_publisher(
                CameraInfo, self.topic(CONFIDENCE_INFO_TOPIC), qos),
        }
        self.scale_policy = None if self.index == 0 else copy.deepcopy(est.scale_policy)

    def release(self) -> None:
        for pub in self.publishers.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.publishers = {}
        self.scale_policy = None

    def reset(self) -> None:
        """Counters, stamp order and the fusion's history forgotten (activate)."""
        self.stats.reset()
        self._last_stamp_ns = None
        self.fusion = None

    def image_topic(self, settings) -> str:
        return self.topic("image/compressed" if settings.image_transport == "compressed"
                          else "image")

    def create_subscriptions(self, settings, qos) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        image_type = CompressedImage if settings.image_transport == "compressed" else Image
        node = self.node
        self.subscriptions = [
            node.create_subscription(image_type, self.image_topic(settings), self._on_image,
                                     qos, callback_group=self._group),
            node.create_subscription(CameraInfo, self.topic("camera_info"),
                                     self._on_camera_info, qos, callback_group=self._group),
        ]
        # ticks only while an image waits for its CameraInfo (reset in _on_image)
        self._pair_timer = node.create_timer(0.01, self._expire_pairs,
                                             callback_group=self._group)
        self._pair_timer.cancel()

    def destroy_subscriptions(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions = []
        if self._pair_timer is not None:
            self.node.destroy_timer(self._pair_timer)
            self._pair_timer = None
        self.pairer.clear()

    # -- pairing by stamp ---------------------------------------------------------------
    def _on_camera_info(self, msg) -> None:
        why = ""
        try:
            rectify.rectifier(conversions.camera_info_to_calibration(msg),
                              self.node.settings.input_image)
        except ValueError as exc:
            why = str(exc)
        if why and self._throttle.ready("camera_info_msg"):
            self.node.get_logger().warning(self._say(
                f"CameraInfo rejected (frame_id '{msg.header.frame_id}', stamp "
                f"{stamp_to_ns(msg.header.stamp) * 1e-9:.6f} s): {why}"))
        self._decide(self.pairer.add_info(msg.header.frame_id, stamp_to_ns(msg.header.stamp),
                                          msg, why))

    def _on_image(self, msg) -> None:
        self._decide(self.pairer.add_image(msg.header.frame_id,
                                           stamp_to_ns(msg.header.stamp), msg))
        with self._pair_lock:       # never cancel the timer while an image waits
            timer = self._pair_timer
            if self.pairer.waiting and timer is not None and timer.is_canceled():
                timer.reset()

    def _expire_pairs(self) -> None:
        self._decide(self.pairer.expire())
        with self._pair_lock:
            timer = self._pair_timer
            if not self.pairer.waiting and timer is not None:
                timer.cancel()

    def _decide(self, pairings) -> None:
        for p in pairings:
            if p.kind == "fallback":
                with self.stats.lock:
                    self.stats.camera_info_fallbacks += 1
                if p.first_fallback:
                    self.node.get_logger().warning(self._say(
                        p.why + " (said once per frame; counted in diagnostics as "
                        "camera_info_fallbacks)"))
            if p.ok:
                self._on_pair(p.image, p.info)
                continue
            with self.stats.lock:
                self.stats.frames_in += 1
                self.stats.input_rate.tick()
            self.reject("camera_info" if p.kind == "rejected_info" else "no_camera_info",
                        f"image at {stamp_to_ns(p.image.header.stamp) * 1e-9:.6f} s not "
                        f"processed: {p.why}")

    def _on_pair(self, image, info) -> None:
        cond = self.node.frames_ready
        with cond:
            self.stats.frames_in += 1
            self.stats.input_rate.tick()
            self.queue.append(Frame(image, info, time.monotonic()))
            while len(self.queue) > self.node.settings.queue_size:
                self.queue.popleft()                       # the oldest waiting frame
                self.stats.frames_dropped += 1
            cond.notify()

    # -- one frame ----------------------------------------------------------------------
    def reject(self, reason: str, text: str) -> None:
        self.stats.count_bad(reason)
        if self._throttle.ready(reason):
            self.node.get_logger().warning(self._say(
                f"frame rejected ({reason}, {self.stats.bad[reason]} so far): {text}"))

    def _policy(self, est):
        return est.scale_policy if self.scale_policy is None else self.scale_policy

    def prepare(self, frame: Frame, est, settings) -> Job | None:
        """Image + CameraInfo -> a :class:`Job`; None (counted, logged) on bad input."""
        image, info = frame.image, frame.info
        header = image.header
        # 1. stamps must not go backwards (a bag loop restarts after one rejected frame)
        stamp_ns = stamp_to_ns(header.stamp)
        last = self._last_stamp_ns
        self._last_stamp_ns = stamp_ns
        if last is not None and stamp_ns < last:
            reset = getattr(self._policy(est), "reset", None)
            if reset is not None:
                reset()
            self.fusion = None                    # no history across a jump back
            self.reject("stamp_backwards", f"stamp {stamp_ns * 1e-9:.6f} s is older than the "
                        f"previous frame's {last * 1e-9:.6f} s (bag restarted? clock reset?)")
            return None
        # 2. decode: CameraInfo, then the image
        problem = image_problem(image)
        if problem is not None:
            self.reject(*problem)
            return None
        try:     # maps computed once per calibration (and input_image), then cached
            rectifier = rectify.rectifier(conversions.camera_info_to_calibration(info),
                                          settings.input_image)
        except ValueError as exc:
            self.reject("camera_info", f"CameraInfo (frame_id '{info.header.frame_id}'): {exc}")
            return None
        try:
            rgb = conversions.image_to_rgb(image, copy=False)     # read, never written
        except ValueError as exc:
            self.reject("image", str(exc))
            return None
        intrinsics = rectifier.intrinsics               # of the rectified image
        if (intrinsics.width, intrinsics.height) != (rgb.shape[1], rgb.shape[0]):
            why = (f"CameraInfo is {intrinsics.width}x{intrinsics.height} but the image is "
                   f"{rgb.shape[1]}x{rgb.shape[0]} (frame_id '{header.frame_id}')")
            self.pairer.reject_info(info.header.frame_id, stamp_to_ns(info.header.stamp), why)
            self.reject("camera_info", why)
            return None
        # 3. this camera's reference depth or pose for its scale policy (TF per frame_id)
        node, reference = self.node, None
        cloud = node.lidar_cloud
        if settings.scale_policy == "lidar_median" and cloud is not None:
            points, lidar_frame, lidar_stamp_ns = cloud
            T = node.transforms.camera_from_lidar(header.frame_id, lidar_frame, stamp_ns,
                                                  lidar_stamp_ns, settings)
            reference = project_lidar(points, T, intrinsics)
        elif settings.scale_policy == "ground_plane":
            holder = est if self.scale_policy is None else self
            node.transforms.apply_camera_pose(holder, header.frame_id, stamp_ns, settings)
        # the raw image: the estimator rectifies it straight to the model input
        return Job(FrameInput(rgb, intrinsics, reference, self.scale_policy, rectifier),
                   header, stamp_ns)

    def finish(self, job: Job, result, est, settings) -> bool:
        """A result (or the exception of its frame) -> published outputs and counters."""
        if isinstance(result, ValueError):
            self.reject("image", str(result))
            return False
        if isinstance(result, RuntimeError):
            self.reject("model_nan" if "nan" in str(result).lower() else "backend_error",
                        str(result))
            return False
        if isinstance(result, Exception):
            self.reject("backend_error", f"{type(result).__name__}: {result}")
            return False
        header, rgb = job.header, job.input.rgb          # raw when a rectifier is set
        # the range the estimator marked with (node parameters narrowing the model's):
        # the colour scale and the cloud's sky cap use the same one
        lo, hi = est.depth_range
        depth = result.depth
        fused = self._fuse(job, result, est, settings) if settings.temporal_fusion else None
        if fused is not None:
            depth = fused.depth
        elif self.fusion is not None:             # turned off: forget the history
            self.fusion = None
        confidence = self._confidence(result, fused, depth, settings)
        # 4. publish, with the input's stamp and frame_id
        self._publish(header, depth, result.intrinsics, job.input, lo, hi, settings,
                      confidence)
        now_ns = self.node.get_clock().now().nanoseconds
        latency_ms = (now_ns - job.stamp_ns) * 1e-6 if now_ns > 0 else math.nan
        stats = self.stats
        with stats.lock:
            stats.frames_out += 1
            stats.output_rate.tick()
            stats.last_inference_ms = float(result.timings.get("inference_ms", math.nan))
            stats.last_rectify_ms = float(result.timings.get("rectify_ms", math.nan))
            stats.last_latency_ms = latency_ms
            if not stats.max_latency_ms >= latency_ms:
                stats.max_latency_ms = latency_ms
            stats.last_scale = float(result.scale)
            stats.last_scale_source = str(result.scale_source)
            stats.backend = str(result.backend)
            stats.precision = str(result.precision)
            plan = est.plan(result.intrinsics) if hasattr(est, "plan") else None
            stats.input_plan = plan.reason if plan is not None else ""
            size = ("{}x{}".format(*result.prepared.model_size)
                    if result.prepared is not None else "")
            said, stats.input_size = stats.input_size, size
        if size and (size, stats.input_plan) != (said, self._plan_said):
            self._plan_said = stats.input_plan
            self.node.get_logger().info(
                f"model input {size} for the {rgb.shape[1]}x{rgb.shape[0]} camera "
                f"'{header.frame_id}': {stats.input_plan}")
        self.frame_id = str(header.frame_id)
        self.node.reporter.publish_status(header, stats)
        return True

    def _fuse(self, job: Job, result, est, settings):
        """This camera's temporal fusion of the new depth (:mod:`depth_perception.runtime.
        fusion`, on the model's grid: :meth:`DepthEstimator.fuse`) with the camera motion
        since the previous frame from TF; without it the frame is published
        single-frame (counted, logged)."""
        fusion = self.fusion
        if fusion is None or (fusion.threshold, fusion.max_age) != (
                settings.fusion_threshold, settings.fusion_max_age):
            fusion = self.fusion = TemporalFusion(settings.fusion_threshold,
                                                  settings.fusion_max_age)
            self._fused_stamp_ns = None
        T = None
        if self._fused_stamp_ns is not None:
            T, why = self.node.transforms.camera_motion(job.header.frame_id,
                                                        self._fused_stamp_ns, job.stamp_ns,
                                                        settings)
            if T is None:
                with self.stats.lock:
                    self.stats.fusion_resets_no_tf += 1
                    n = self.stats.fusion_resets_no_tf
                if self._throttle.ready("fusion_tf"):
                    self.node.get_logger().warning(self._say(
                        f"temporal fusion: no camera motion from TF ({why}); frame published "
                        f"single-frame ({n} so far, counted as fusion_resets_no_tf)"))
        self._fused_stamp_ns = job.stamp_ns
        out = est.fuse(fusion, result, T)
        with self.stats.lock:
            self.stats.last_fused_fraction = out.fused
        return out

    def _confidence(self, result, fused, depth, settings):
        """What computes the [H,W] confidence of the published depth (NaN where it has
        none) from the source ``confidence_source`` picks, or None; the source is
        logged when it changes. Computed only when published or filtering the cloud."""
        choice = settings.confidence_source
        model = choice in ("auto", "model") and result.has_confidence
        source = "model" if model else ""
        if not source and fused is not None and choice in ("auto", "temporal"):
            source = "temporal"
        if source != self.confidence_source:
            self.confidence_source = self.stats.confidence_source = source
            self.node.get_logger().info(self._say(
                f"confidence/image: {CONFIDENCE_SOURCES[source]} (confidence_source "
                f"'{choice}')"))
        if not source:
            return None
        @functools.cache
        def confidence() -> np.ndarray:
            values = result.confidence if source == "model" else fused.confidence
            with np.errstate(invalid="ignore"):
                return np.where(np.isfinite(depth) & (depth > 0), values,
                                np.float32(np.nan)).astype(np.float32)
        return confidence

    def _publish(self, header, depth, intrinsics, frame: FrameInput, lo, hi,
                 settings, confidence=None) -> None:
        """``frame``: the estimator's input; its raw image is rectified at camera
        resolution only for ``rgb/image_rect_color`` or a coloured cloud, while someone
        subscribes (the model's input was resampled from it directly). ``confidence``:
        what computes the confidence image (see :meth:`_confidence`), called only for a
        ``confidence`` subscriber or the cloud's ``point_min_confidence`` filter."""
        pubs = self.publishers
        if not pubs:
            return
        with self._publish_lock:
            # the input's stereo (Tx, Ty) carried on; the cloud ignores them, as
            # depth_image_proc does (each camera's cloud in its own frame)
            tx_ty = frame.rectifier.tx_ty if frame.rectifier is not None else (0.0, 0.0)
            info = conversions.intrinsics_to_camera_info(intrinsics, header, tx_ty=tx_ty)
            pubs["depth"].publish(conversions.depth_to_image(depth, header,
                                                             settings.output_encoding))
            pubs["info"].publish(info)
            if confidence is not None and (
                    pubs["confidence"].get_subscription_count() > 0
                    or pubs["confidence_info"].get_subscription_count() > 0):
                pubs["confidence"].publish(conversions.depth_to_image(confidence(), header,
                                                                      "32FC1"))
                pubs["confidence_info"].publish(info)
            want_cloud = pubs["points"].get_subscription_count() > 0
            want_rgb = pubs["rgb"].get_subscription_count() > 0
            rgb = None                                    # [H,W,3] of intrinsics
            if want_rgb or (want_cloud and settings.point_rgb):
                rgb = frame.rgb if frame.rectifier is None else frame.rectifier.apply(frame.rgb)
            if want_rgb:
                pubs["rgb"].publish(conversions.numpy_to_image(rgb, "rgb8", header))
                pubs["rgb_info"].publish(info)
            if want_cloud:                                 # None: no TF to point_frame
                cloud = self.cloud.make(header, depth, intrinsics,
                                        rgb if settings.point_rgb else None, hi, settings,
                                        confidence() if confidence is not None
                                        and settings.point_min_confidence > 0 else None)
                if cloud is not None:
                    pubs["points"].publish(cloud)
            if pubs["colorized"].get_subscription_count() > 0:
                bgr = colorize_depth(depth, lo, hi, settings.colormap)
                pubs["colorized"].publish(conversions.numpy_to_image(bgr, "bgr8", header))
