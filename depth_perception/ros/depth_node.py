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
publishes ``depth/image`` (32FC1 metres or 16UC1 mm) beside ``depth/camera_info``
(image_transport's pairing), ``points``, ``depth_colorized/image`` and the rectified
colour image ``rgb/image_rect_color`` beside ``rgb/camera_info`` (only while
subscribed), ``/diagnostics`` and ``~/status``. A raw image is rectified with its
CameraInfo's calibration first (``input_image``, :mod:`depth_perception.rectify`);
the outputs describe the rectified camera.

Several cameras, one model (``cameras``, e.g. ``['front', 'rear']``): each camera ``C``
has the topics above under ``C/`` and its own pairing, queue, counters, diagnostics
status and scale policy (:mod:`depth_perception.ros.camera_pipeline`). The one worker
takes the waiting frame of every camera at once and runs them through
:meth:`~depth_perception.runtime.estimator.DepthEstimator.estimate_batch` (one batch
where the model takes one): a camera that stalls is simply absent from the batch, so it
never delays the others by more than the inference already running.

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

import importlib
import logging
import threading
import time

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from depth_perception import conversions
from depth_perception.camera import parse_size
from depth_perception.conversions import stamp_to_ns
from depth_perception.ros import qos as ros_qos
from depth_perception.ros.camera_pipeline import CameraPipeline
from depth_perception.ros.diagnostics import FrameStats, StatusReporter, Throttle
from depth_perception.ros.params import (PARAMETER_NAMES, PARAMETERS, SPECS, NodeSettings,
                                         EstimatorFactory, camera_namespace_problem,
                                         declare_parameters, default_estimator_factory,
                                         settings_from_values, validate_parameter)
from depth_perception.ros.tf_listener import NodeTransforms
from depth_perception.runtime.geometry import warmup_intrinsics

NODE_NAME = "depth_node"
log = logging.getLogger(__name__)


def import_diagnostic_updater():
    """``diagnostic_updater`` (a ROS 2 installation) or None (pip-only ROS 2; logged at
    debug level)."""
    try:
        return importlib.import_module("diagnostic_updater")
    except ImportError as exc:
        log.debug("optional module diagnostic_updater not available: %s", exc)
        return None


class DepthNode(LifecycleNode):
    """Lifecycle depth node; see the module docstring.

    ``estimator_factory(settings) -> DepthEstimator`` is the collaborator that loads the
    model (:data:`~depth_perception.ros.params.EstimatorFactory`; default:
    :func:`default_estimator_factory`); tests pass their own.
    """

    def __init__(self, node_name: str = NODE_NAME, *,
                 estimator_factory: EstimatorFactory | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        self._factory = estimator_factory or default_estimator_factory
        declare_parameters(self)
        self._settings = self._read_settings()
        problem = camera_namespace_problem(self._settings.cameras)
        if problem:                 # read-only: checked once, here
            raise ValueError(f"parameter 'cameras': {problem}")
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._throttle = Throttle(5.0)
        self._state = "unconfigured"
        self._problem = ""
        self._estimator = None
        self._subs: list = []       # the node's own (LiDAR); cameras hold theirs
        self.lidar_cloud = None     # (points [N,3], frame_id, stamp ns) of the latest cloud
        self.qos_problems: list[str] = []

        # per-camera queues (queue_size each, default one slot) + one inference worker
        self.frames_ready = threading.Condition()
        self._stop = False
        self._worker: threading.Thread | None = None

        self._io_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self.transforms = NodeTransforms(self, callback_group=self._io_group)
        self.cameras = [CameraPipeline(self, ns, i, self._io_group)
                        for i, ns in enumerate(self._settings.cameras)]

        # /diagnostics and ~/status are ordinary publishers: they report in every state,
        # including "unconfigured because the model failed to load".
        self.reporter = StatusReporter(self, self._settings.diagnostics_period,
                                       self._diag_group, import_diagnostic_updater())
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

    @property
    def stats(self) -> FrameStats:
        """The first camera's counters (the only camera's, by default)."""
        return self.cameras[0].stats

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
            for camera in self.cameras[1:]:
                camera.scale_policy = make_scale_policy(new.scale_policy, **new.scale_params())
        if est is not None and new.estimator_options() != old.estimator_options():
            self._apply_estimator_options(est, new)
        if new.camera_info_wait != old.camera_info_wait:
            for camera in self.cameras:
                camera.pairer.wait_s = new.camera_info_wait
        if new.qos_check_period != old.qos_check_period:
            self._qos_timer.timer_period_ns = int(new.qos_check_period * 1e9)
        if new.diagnostics_period != old.diagnostics_period:
            self.reporter.timer.timer_period_ns = int(new.diagnostics_period * 1e9)
        resubscribe = any(s.resubscribe and getattr(new, s.name) != getattr(old, s.name)
                          for s in PARAMETERS)
        if (new.scale_policy == "lidar_median") != (old.scale_policy == "lidar_median"):
            resubscribe = True
        if resubscribe and self._state == "active":
            self._destroy_subscriptions()
            self._create_subscriptions()
            self._check_qos()
        if self._state == "active":
            self.transforms.ensure(new)

    def _apply_estimator_options(self, est, settings: NodeSettings) -> None:
        """Input size knobs, focal policy and output range for the same (already loaded)
        backend."""
        try:
            est.set_input_options(**settings.estimator_options())
        except (AttributeError, TypeError, ValueError) as exc:
            self.get_logger().warning(f"estimator option change not applied: {exc}")

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
            self.reporter.publish()
            return TransitionCallbackReturn.FAILURE
        self._problem = ""
        est = self._estimator
        self.warm_up()
        for camera in self.cameras:
            camera.stats.backend = str(est.backend.name)
            camera.stats.precision = str(est.backend.precision)
            camera.configure(est)
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
            fixed = est.metadata.fixed_size
            size = (fixed[1], fixed[0]) if fixed else None
        if size is None:
            return None
        w, h = size
        start = time.monotonic()
        try:
            est.estimate(np.zeros((h, w, 3), np.uint8),
                         warmup_intrinsics(est.metadata, w, h))
        except Exception as exc:  # noqa: BLE001 - blank frames may fail (e.g. NaN check)
            self.get_logger().warning(f"warm-up inference at {w}x{h} failed: {exc}")
        finally:
            est.reset()                  # the blank frame must not seed scale smoothing
        ms = (time.monotonic() - start) * 1e3
        self.get_logger().info(f"warm-up inference at {w}x{h}: {ms:.0f} ms")
        return ms

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self.cameras:
            camera.reset()
        self._start_worker()
        self._create_subscriptions()
        self.transforms.ensure(self._settings)
        self._state = "active"
        self._check_qos()
        topics = ", ".join(self.resolve_topic_name(c.image_topic(self._settings))
                           for c in self.cameras)
        self.get_logger().info(f"active: waiting for images on {topics}")
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
        self.transforms.close()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for camera in self.cameras:
            camera.release()
        est, self._estimator = self._estimator, None
        if est is not None:
            est.close()

    @property
    def state(self) -> str:
        """unconfigured | inactive | active | finalized."""
        return self._state

    @property
    def problem(self) -> str:
        """Why the node is not producing depth ('' when it is or could)."""
        return self._problem

    # -- subscriptions ------------------------------------------------------------------
    def _input_qos(self):
        return ros_qos.sensor_qos(reliable=self._settings.input_reliability == "reliable")

    def _create_subscriptions(self) -> None:
        from sensor_msgs.msg import PointCloud2

        qos = self._input_qos()
        settings = self._settings
        for camera in self.cameras:
            camera.create_subscriptions(settings, qos)
        if settings.scale_policy == "lidar_median":
            self._subs.append(self.create_subscription(
                PointCloud2, settings.lidar_topic, self._on_lidar, qos,
                callback_group=self._io_group))

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for camera in self.cameras:
            camera.destroy_subscriptions()

    def _on_lidar(self, msg) -> None:
        try:
            points = conversions.cloud_to_numpy(msg, ("x", "y", "z"))
            self.lidar_cloud = (points, str(msg.header.frame_id),
                                stamp_to_ns(msg.header.stamp))
        except ValueError as exc:
            if self._throttle.ready("lidar"):
                self.get_logger().warning(f"LiDAR cloud ignored: {exc}")

    # -- inference worker ---------------------------------------------------------------
    def _start_worker(self) -> None:
        with self.frames_ready:
            self._stop = False
            for camera in self.cameras:
                camera.queue.clear()
        self._worker = threading.Thread(target=self._work, name="depth_inference", daemon=True)
        self._worker.start()

    def _stop_worker(self) -> None:
        with self.frames_ready:
            self._stop = True
            self.frames_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        self._worker = None

    def _work(self) -> None:
        """Each round takes the oldest waiting frame of every camera that has one."""
        while True:
            with self.frames_ready:
                self.frames_ready.wait_for(
                    lambda: self._stop or any(c.queue for c in self.cameras))
                if self._stop:
                    return
                frames = [(c, c.queue.popleft()) for c in self.cameras if c.queue]
            try:
                self.process(frames)
            except Exception as exc:  # never let one round kill the worker
                for camera, _ in frames:
                    camera.reject("backend_error", f"unexpected error: {exc!r}")

    def process(self, frames) -> int:
        """[(camera, frame)] -> published outputs, the frames through the model together.
        Returns how many were published (bad input is counted and logged per camera)."""
        settings, est = self._settings, self._estimator
        if est is None:
            return 0
        jobs = [(camera, camera.prepare(frame, est, settings)) for camera, frame in frames]
        jobs = [(camera, job) for camera, job in jobs if job is not None]
        if not jobs:
            return 0
        results = est.estimate_batch([job.input for _, job in jobs])
        return sum(camera.finish(job, result, est, settings)
                   for (camera, job), result in zip(jobs, results))

    # -- QoS ----------------------------------------------------------------------------
    def _check_qos(self) -> None:
        """Warn when a topic has publishers whose QoS can never match our subscription."""
        if self._state != "active":
            return
        qos = self._input_qos()
        problems = []
        for camera in self.cameras:
            for topic in (camera.image_topic(self._settings), camera.topic("camera_info")):
                problems += ros_qos.incompatible_publishers(
                    self, self.resolve_topic_name(topic), qos)
        self.qos_problems = problems
        for line in problems:
            self.get_logger().warning(f"QoS mismatch, no data will arrive: {line}")


def main(args=None) -> int:
    """Entry point: a DepthNode on one executor thread until SIGINT/SIGTERM or a
    lifecycle ``shutdown``; then the shutdown transition and teardown (:mod:`.lifetime`)."""
    from depth_perception.ros.lifetime import run_nodes

    return run_nodes(lambda: [DepthNode()], args=args)


if __name__ == "__main__":
    raise SystemExit(main())
