"""``depth_node``: camera image + CameraInfo in; metric depth, CameraInfo, cloud out.

A thin ROS 2 adapter over :class:`depth_perception.runtime.estimator.DepthEstimator`
(all image -> depth compute lives there, without rclpy). Lifecycle:

* configure: load the model (FAILURE with the reason on error; the process stays up
  and ``/diagnostics`` and ``~/status`` say why),
* activate: subscribe ``image`` (+ ``camera_info``, remappable) with the sensor-data QoS,
  start the inference worker; warn about publishers whose QoS cannot match,
* deactivate: unsubscribe, stop the worker; cleanup: release the backend.

Image and CameraInfo are paired by equal stamps
(:class:`depth_perception.runtime.pairing.StampPairer`): an image waits up to
``camera_info_wait`` for its CameraInfo, then takes the newest valid CameraInfo of its
frame (said once); a rejected CameraInfo never pairs with any image.

Inference runs in its own thread behind a bounded queue (``queue_size``, default one
slot: only the newest frame waits, older ones are dropped and counted, so a slow model
never turns into lag; a bag replay for evaluation uses a deeper queue so that bursts of
frames, which a loaded machine delivers, are all scored).
Outputs carry the input's stamp and frame_id (never now()).

Topics (relative, remappable): ``image`` (or ``image/compressed``), ``camera_info``;
publishes ``depth`` (32FC1 metres or 16UC1 mm), ``depth/camera_info``, ``points`` and
``depth/colorized`` (only while subscribed), ``/diagnostics`` and ``~/status``.

Transforms (``use_tf``, default true): the scale policies ``lidar_median`` (camera <- the
cloud's frame) and ``ground_plane`` (camera height and pitch in ``base_frame``) read TF
through :class:`depth_perception.ros.tf_listener.NodeTransforms`; the parameters
``lidar_to_camera``, ``camera_height`` and ``camera_pitch_deg`` are the fallback while
TF lacks a transform, and the explicit override with ``use_tf:=false``. The source used
is logged. Parameters: :mod:`depth_perception.ros.params`.

Run: ``python -m depth_perception.ros.depth_node --ros-args -p model:=model.onnx
-r image:=/camera/image_raw -r camera_info:=/camera/camera_info``.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from depth_perception import conversions, units
from depth_perception.camera import parse_size
from depth_perception.colorize import colorize_depth
from depth_perception.data.projection import project_lidar
from depth_perception.conversions import stamp_to_ns
from depth_perception.ros import qos as ros_qos
from depth_perception.ros import util as ros_utils
from depth_perception.ros.cloud_output import CloudOutput
from depth_perception.ros.diagnostics import FrameStats, StatusReporter, Throttle, image_problem
from depth_perception.ros.params import (PARAMETER_NAMES, PARAMETERS, SPECS, NodeSettings,
                                         declare_parameters, default_estimator_factory,
                                         settings_from_values, validate_parameter)
from depth_perception.ros.tf_listener import NodeTransforms
from depth_perception.runtime.geometry import warmup_intrinsics
from depth_perception.runtime.pairing import StampPairer

NODE_NAME = "depth_node"


@dataclass
class _Frame:
    image: object
    info: object
    received: float


class DepthNode(LifecycleNode):
    """Lifecycle depth node; see the module docstring.

    ``estimator_factory(settings) -> estimator`` is the collaborator that loads the model
    (default: :func:`default_estimator_factory`); tests pass their own.
    """

    def __init__(self, node_name: str = NODE_NAME, *,
                 estimator_factory: Callable | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        self._factory = estimator_factory or default_estimator_factory
        declare_parameters(self)
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.stats = FrameStats()
        self._throttle = Throttle(5.0)
        self._state = "unconfigured"
        self._problem = ""
        self._estimator = None
        self._subs: list = []
        self._pairer = StampPairer(self._settings.camera_info_wait)
        self._pair_timer = None
        self._pair_lock = threading.Lock()
        self._lidar_cloud = None   # (points [N,3], frame_id, stamp ns) of the latest cloud
        self._last_stamp_ns: int | None = None
        self._plan_said = ""        # input geometry last logged
        self._pubs: dict = {}
        self.qos_problems: list[str] = []

        # bounded queue (queue_size, default one slot) + inference worker
        self._queue: collections.deque[_Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._worker: threading.Thread | None = None
        self._publish_lock = threading.Lock()

        self._io_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._transforms = NodeTransforms(self, callback_group=self._io_group)
        self._cloud = CloudOutput(self, self._transforms, self.stats)

        # /diagnostics and ~/status are ordinary publishers: they report in every state,
        # including "unconfigured because the model failed to load".
        self._reporter = StatusReporter(self, self._settings.diagnostics_period,
                                        self._diag_group, ros_utils.import_diagnostic_updater())
        self._qos_timer = self.create_timer(self._settings.qos_check_period,
                                            self._check_qos, callback_group=self._diag_group)
        self._autostart_timer = None
        if self._settings.autostart:
            self._autostart_timer = self.create_timer(0.0, self._autostart,
                                                      callback_group=self._diag_group)

    # -- parameters ---------------------------------------------------------------------
    @property
    def settings(self) -> NodeSettings:
        """The parameters in force (one immutable value)."""
        return self._settings

    def _read_settings(self, overrides: dict | None = None) -> NodeSettings:
        values = {name: self.get_parameter(name).value for name in PARAMETER_NAMES}
        values.update(overrides or {})
        return settings_from_values(values)

    def _validate_parameters(self, params) -> SetParametersResult:
        """Check every value; no side effects (rclpy already refuses read-only ones)."""
        for param in params:
            spec = SPECS.get(param.name)
            if spec is None:
                continue
            reason = validate_parameter(spec, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        """Apply accepted changes live: the next frame uses the new settings."""
        old = self._settings
        changed = {p.name: p.value for p in params if p.name in PARAMETER_NAMES}
        new = self._read_settings(changed)
        self._settings = new
        self.get_logger().info(f"parameters changed: {changed}")
        est = self._estimator
        if est is not None and (new.scale_policy != old.scale_policy
                                or new.scale_params() != old.scale_params()):
            from depth_perception.runtime.scale import make_scale_policy
            est.scale_policy = make_scale_policy(new.scale_policy, **new.scale_params())
        if est is not None and new.estimator_options() != old.estimator_options():
            self._apply_estimator_options(est, new)
        if new.camera_info_wait != old.camera_info_wait:
            self._pairer.wait_s = new.camera_info_wait
        if new.qos_check_period != old.qos_check_period:
            self._qos_timer.timer_period_ns = int(new.qos_check_period * 1e9)
        if new.diagnostics_period != old.diagnostics_period:
            self._reporter.timer.timer_period_ns = int(new.diagnostics_period * 1e9)
        resubscribe = any(s.resubscribe and getattr(new, s.name) != getattr(old, s.name)
                          for s in PARAMETERS)
        if (new.scale_policy == "lidar_median") != (old.scale_policy == "lidar_median"):
            resubscribe = True
        if resubscribe and self._state == "active":
            self._destroy_subscriptions()
            self._create_subscriptions()
            self._check_qos()
        if self._state == "active":
            self._transforms.ensure(new)

    def _apply_estimator_options(self, est, settings: NodeSettings) -> None:
        """Input size knobs and focal policy for the same (already loaded) backend."""
        try:
            est.set_input_options(**settings.estimator_options())
        except (AttributeError, TypeError, ValueError) as exc:
            self.get_logger().warning(f"input size change not applied: {exc}")

    # -- lifecycle ----------------------------------------------------------------------
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        try:
            self._estimator = self._factory(settings)
        except Exception as exc:  # any load failure: report, stay up, stay unconfigured
            self._problem = f"cannot load model '{settings.model}': {exc}"
            self.get_logger().error(f"configure failed: {self._problem}")
            self._estimator = None
            self._reporter.publish()
            return TransitionCallbackReturn.FAILURE
        self._problem = ""
        est = self._estimator
        self.warm_up()
        self.stats.backend = str(getattr(getattr(est, "backend", None), "name", ""))
        self.stats.precision = str(getattr(getattr(est, "backend", None), "precision", ""))
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        qos = ros_qos.output_qos(2)
        self._pubs = {
            "depth": self.create_lifecycle_publisher(Image, "depth", qos),
            "info": self.create_lifecycle_publisher(CameraInfo, "depth/camera_info", qos),
            "points": self.create_lifecycle_publisher(PointCloud2, "points", qos),
            "colorized": self.create_lifecycle_publisher(Image, "depth/colorized", qos),
        }
        self._state = "inactive"
        self.get_logger().info(f"configured: model '{settings.model}' on {self.stats.backend} "
                               f"({self.stats.precision})")
        return TransitionCallbackReturn.SUCCESS

    def warm_up(self, size: tuple[int, int] | None = None) -> float | None:
        """One inference on a blank frame of ``size`` (width, height): default the
        ``warmup_size`` parameter, else a fixed-size model's input size. Returns its time
        in ms (None when there is nothing to warm up). Never fails configure: a warm-up
        error is logged and the first real frame reports it."""
        est = self._estimator
        if est is None:
            return None
        if size is None:
            size = parse_size(self._settings.warmup_size) if self._settings.warmup_size else None
        if size is None:
            fixed = getattr(getattr(est, "metadata", None), "fixed_size", None)
            size = (fixed[1], fixed[0]) if fixed else None
        if size is None:
            return None
        w, h = size
        start = time.monotonic()
        try:
            est.estimate(np.zeros((h, w, 3), np.uint8),
                         warmup_intrinsics(getattr(est, "metadata", None), w, h))
        except Exception as exc:  # noqa: BLE001 - blank frames may fail (e.g. NaN check)
            self.get_logger().warning(f"warm-up inference at {w}x{h} failed: {exc}")
        finally:
            reset = getattr(getattr(est, "scale_policy", None), "reset", None)
            if reset is not None:
                reset()                  # the blank frame must not seed scale smoothing
        ms = (time.monotonic() - start) * 1e3
        self.get_logger().info(f"warm-up inference at {w}x{h}: {ms:.0f} ms")
        return ms

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stats.reset()
        self._last_stamp_ns = None
        self._start_worker()
        self._create_subscriptions()
        self._transforms.ensure(self._settings)
        self._state = "active"
        self._check_qos()
        self.get_logger().info("active: waiting for images on "
                               f"{self.resolve_topic_name(self._image_topic())}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        self._stop_worker()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        self._stop_worker()
        self._release()
        self._transforms.close()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        est, self._estimator = self._estimator, None
        if est is not None:
            close = getattr(est, "close", None) or getattr(getattr(est, "backend", None),
                                                           "close", None)
            if close is not None:
                close()

    @property
    def state(self) -> str:
        """unconfigured | inactive | active | finalized."""
        return self._state

    @property
    def problem(self) -> str:
        """Why the node is not producing depth ('' when it is or could)."""
        return self._problem

    # -- subscriptions ------------------------------------------------------------------
    def _image_topic(self) -> str:
        return "image/compressed" if self._settings.image_transport == "compressed" else "image"

    def _image_type(self):
        from sensor_msgs.msg import CompressedImage, Image
        return CompressedImage if self._settings.image_transport == "compressed" else Image

    def _input_qos(self):
        return ros_qos.sensor_qos(reliable=self._settings.input_reliability == "reliable")

    def _create_subscriptions(self) -> None:
        from sensor_msgs.msg import CameraInfo, PointCloud2

        qos = self._input_qos()
        settings = self._settings
        self._subs = [
            self.create_subscription(self._image_type(), self._image_topic(), self._on_image,
                                     qos, callback_group=self._io_group),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                     callback_group=self._io_group),
        ]
        if settings.scale_policy == "lidar_median":
            self._subs.append(self.create_subscription(
                PointCloud2, settings.lidar_topic, self._on_lidar, qos,
                callback_group=self._io_group))
        # ticks only while an image waits for its CameraInfo (reset in _on_image)
        self._pair_timer = self.create_timer(0.01, self._expire_pairs,
                                             callback_group=self._io_group)
        self._pair_timer.cancel()

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._pair_timer is not None:
            self.destroy_timer(self._pair_timer)
            self._pair_timer = None
        self._pairer.clear()

    # -- pairing by stamp ---------------------------------------------------------------
    def _on_camera_info(self, msg) -> None:
        why = ""
        try:
            conversions.camera_info_to_intrinsics(msg)
        except ValueError as exc:
            why = str(exc)
        if why and self._throttle.ready("camera_info_msg"):
            self.get_logger().warning(f"CameraInfo rejected (frame_id '{msg.header.frame_id}', "
                                      f"stamp {stamp_to_ns(msg.header.stamp) * 1e-9:.6f} s): "
                                      f"{why}")
        self._decide(self._pairer.add_info(msg.header.frame_id, stamp_to_ns(msg.header.stamp),
                                           msg, why))

    def _on_image(self, msg) -> None:
        self._decide(self._pairer.add_image(msg.header.frame_id,
                                            stamp_to_ns(msg.header.stamp), msg))
        with self._pair_lock:       # never cancel the timer while an image waits
            timer = self._pair_timer
            if self._pairer.waiting and timer is not None and timer.is_canceled():
                timer.reset()

    def _expire_pairs(self) -> None:
        self._decide(self._pairer.expire())
        with self._pair_lock:
            timer = self._pair_timer
            if not self._pairer.waiting and timer is not None:
                timer.cancel()

    def _decide(self, pairings) -> None:
        for p in pairings:
            if p.kind == "fallback":
                with self.stats.lock:
                    self.stats.camera_info_fallbacks += 1
                if p.first_fallback:
                    self.get_logger().warning(p.why + " (said once per frame; counted in "
                                              "diagnostics as camera_info_fallbacks)")
            if p.ok:
                self._on_pair(p.image, p.info)
                continue
            with self.stats.lock:
                self.stats.frames_in += 1
                self.stats.input_rate.tick()
            self._reject("camera_info" if p.kind == "rejected_info" else "no_camera_info",
                         f"image at {stamp_to_ns(p.image.header.stamp) * 1e-9:.6f} s not "
                         f"processed: {p.why}")

    def _on_pair(self, image, info) -> None:
        with self._cond:
            self.stats.frames_in += 1
            self.stats.input_rate.tick()
            self._queue.append(_Frame(image, info, time.monotonic()))
            while len(self._queue) > self._settings.queue_size:
                self._queue.popleft()                      # the oldest waiting frame
                self.stats.frames_dropped += 1
            self._cond.notify()

    def _on_lidar(self, msg) -> None:
        try:
            points = conversions.cloud_to_numpy(msg, ("x", "y", "z"))
            self._lidar_cloud = (points, str(msg.header.frame_id),
                                 stamp_to_ns(msg.header.stamp))
        except ValueError as exc:
            if self._throttle.ready("lidar"):
                self.get_logger().warning(f"LiDAR cloud ignored: {exc}")

    # -- inference worker ---------------------------------------------------------------
    def _start_worker(self) -> None:
        with self._cond:
            self._stop = False
            self._queue.clear()
        self._worker = threading.Thread(target=self._work, name="depth_inference", daemon=True)
        self._worker.start()

    def _stop_worker(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        self._worker = None

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or bool(self._queue))
                if self._stop:
                    return
                frame = self._queue.popleft()
            try:
                self.process(frame.image, frame.info)
            except Exception as exc:  # never let one frame kill the worker
                self._reject("backend_error", f"unexpected error: {exc!r}")

    # -- one frame ----------------------------------------------------------------------
    def _reject(self, reason: str, text: str) -> None:
        self.stats.count_bad(reason)
        if self._throttle.ready(reason):
            self.get_logger().warning(f"frame rejected ({reason}, {self.stats.bad[reason]} so "
                                      f"far): {text}")

    def process(self, image, info) -> bool:
        """Image + CameraInfo -> published outputs. False (counted, logged) on bad input."""
        settings, est = self._settings, self._estimator
        if est is None:
            return False
        header = image.header
        # 1. stamps must not go backwards (a bag loop restarts after one rejected frame)
        stamp_ns = stamp_to_ns(header.stamp)
        last = self._last_stamp_ns
        self._last_stamp_ns = stamp_ns
        if last is not None and stamp_ns < last:
            reset = getattr(getattr(est, "scale_policy", None), "reset", None)
            if reset is not None:
                reset()
            self._reject("stamp_backwards", f"stamp {stamp_ns * 1e-9:.6f} s is older than the "
                         f"previous frame's {last * 1e-9:.6f} s (bag restarted? clock reset?)")
            return False
        # 2. decode: CameraInfo, then the image
        problem = image_problem(image)
        if problem is not None:
            self._reject(*problem)
            return False
        try:
            intrinsics = conversions.camera_info_to_intrinsics(info)
        except ValueError as exc:
            self._reject("camera_info", str(exc))
            return False
        try:
            rgb = conversions.image_to_rgb(image)
        except ValueError as exc:
            self._reject("image", str(exc))
            return False
        if (intrinsics.width, intrinsics.height) != (rgb.shape[1], rgb.shape[0]):
            why = (f"CameraInfo is {intrinsics.width}x{intrinsics.height} but the image is "
                   f"{rgb.shape[1]}x{rgb.shape[0]} (frame_id '{header.frame_id}')")
            self._pairer.reject_info(info.header.frame_id, stamp_to_ns(info.header.stamp), why)
            self._reject("camera_info", why)
            return False
        reference = None
        cloud = self._lidar_cloud
        if settings.scale_policy == "lidar_median" and cloud is not None:
            points, lidar_frame, lidar_stamp_ns = cloud
            T = self._transforms.camera_from_lidar(header.frame_id, lidar_frame,
                                                   lidar_stamp_ns, settings)
            reference = project_lidar(points, T, intrinsics)
        elif settings.scale_policy == "ground_plane":
            self._transforms.apply_camera_pose(est, header.frame_id, stamp_ns, settings)
        # 3. depth
        try:
            result = est.estimate(rgb, intrinsics, reference_depth=reference)
        except ValueError as exc:
            self._reject("image", str(exc))
            return False
        except RuntimeError as exc:
            self._reject("model_nan" if "nan" in str(exc).lower() else "backend_error",
                         str(exc))
            return False
        except Exception as exc:
            self._reject("backend_error", f"{type(exc).__name__}: {exc}")
            return False
        depth = result.depth
        meta = getattr(est, "metadata", None)
        lo = settings.min_depth or getattr(meta, "min_depth", 0.0)
        hi = settings.max_depth or getattr(meta, "max_depth", math.inf)
        depth = units.mark_out_of_range(depth, lo, hi)
        # 4. publish, with the input's stamp and frame_id
        self._publish(header, depth, result.intrinsics, rgb, lo, hi, settings)
        now_ns = self.get_clock().now().nanoseconds
        latency_ms = (now_ns - stamp_ns) * 1e-6 if now_ns > 0 else math.nan
        with self.stats.lock:
            self.stats.frames_out += 1
            self.stats.output_rate.tick()
            self.stats.last_inference_ms = float(result.timings.get("inference_ms", math.nan))
            self.stats.last_latency_ms = latency_ms
            if not self.stats.max_latency_ms >= latency_ms:
                self.stats.max_latency_ms = latency_ms
            self.stats.last_scale = float(result.scale)
            self.stats.last_scale_source = str(result.scale_source)
            self.stats.backend = str(result.backend)
            self.stats.precision = str(result.precision)
            plan = getattr(est, "input_plan", None)
            self.stats.input_plan = plan.reason if plan is not None else ""
            size = ("{}x{}".format(*result.prepared.model_size)
                    if result.prepared is not None else "")
            said, self.stats.input_size = self.stats.input_size, size
        if size and (size, self.stats.input_plan) != (said, self._plan_said):
            self._plan_said = self.stats.input_plan
            self.get_logger().info(f"model input {size} for the {rgb.shape[1]}x{rgb.shape[0]} "
                                   f"camera '{header.frame_id}': {self.stats.input_plan}")
        self._reporter.publish_status(header)
        return True

    def _publish(self, header, depth, intrinsics, rgb, lo, hi, settings: NodeSettings) -> None:
        pubs = self._pubs
        if not pubs:
            return
        with self._publish_lock:
            pubs["depth"].publish(conversions.depth_to_image(depth, header,
                                                             settings.output_encoding))
            pubs["info"].publish(conversions.intrinsics_to_camera_info(intrinsics, header))
            if pubs["points"].get_subscription_count() > 0:    # None: no TF to point_frame
                cloud = self._cloud.make(header, depth, intrinsics, rgb, hi, settings)
                if cloud is not None:
                    pubs["points"].publish(cloud)
            if pubs["colorized"].get_subscription_count() > 0:
                bgr = colorize_depth(depth, lo, hi, settings.colormap)
                pubs["colorized"].publish(conversions.numpy_to_image(bgr, "bgr8", header))

    # -- QoS ----------------------------------------------------------------------------
    def _check_qos(self) -> None:
        """Warn when a topic has publishers whose QoS can never match our subscription."""
        if self._state != "active":
            return
        qos = self._input_qos()
        problems = []
        for topic in (self._image_topic(), "camera_info"):
            problems += ros_qos.incompatible_publishers(
                self, self.resolve_topic_name(topic), qos)
        self.qos_problems = problems
        for line in problems:
            self.get_logger().warning(f"QoS mismatch, no data will arrive: {line}")


def main(args=None) -> int:
    """Entry point: spin a DepthNode on a MultiThreadedExecutor until shutdown."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=args)
    node = DepthNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.state == "active":
            node.trigger_deactivate()
        if node.state == "inactive":
            node.trigger_cleanup()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
