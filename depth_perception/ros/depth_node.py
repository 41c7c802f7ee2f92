"""``depth_node``: camera image + CameraInfo in; metric depth, CameraInfo, cloud out.

A thin ROS 2 adapter over :class:`depth_perception.runtime.estimator.DepthEstimator`
(all image -> depth compute lives there, without rclpy). Lifecycle:

* configure: load the model (FAILURE with the reason on error; the process stays up
  and ``/diagnostics`` and ``~/status`` say why),
* activate: subscribe ``image`` (+ ``camera_info``, remappable) with the sensor-data QoS,
  start the inference worker; warn about publishers whose QoS cannot match,
* deactivate: unsubscribe, stop the worker; cleanup: release the backend.

Inference runs in its own thread behind a ONE-SLOT queue: only the newest frame is
processed, older ones are dropped and counted, so a slow model never turns into lag.
Outputs carry the input's stamp and frame_id (never now()).

Topics (relative, remappable): ``image`` (sensor_msgs/Image; ``image/compressed`` with
``image_transport:=compressed``), ``camera_info``; publishes ``depth`` (32FC1 metres or
16UC1 mm), ``depth/camera_info``, ``points`` (only while subscribed),
``depth/colorized`` (bgr8, only while subscribed), ``/diagnostics`` and ``~/status``
(depth_perception/msg/DepthStatus, when the package's messages are built).

Transforms (``use_tf``, default true): the scale policies ``lidar_median`` (camera <- the
cloud's frame) and ``ground_plane`` (camera height and pitch in ``base_frame``) read TF
through :class:`depth_perception.ros.tf_listener.TfSource` (tf2_ros, or ``/tf`` +
``/tf_static`` with the package's own buffer); the parameters ``lidar_to_camera``,
``camera_height`` and ``camera_pitch_deg`` are the fallback while TF lacks a transform,
and the explicit override with ``use_tf:=false``. The source used is logged.

Run: ``python -m depth_perception.ros.depth_node --ros-args -p model:=model.onnx
-r image:=/camera/image_raw -r camera_info:=/camera/camera_info``.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from depth_perception import conversions, units
from depth_perception.ros import interfaces
from depth_perception.camera import Intrinsics, parse_size
from depth_perception.colorize import colorize_depth
from depth_perception.ros import util as ros_utils
from depth_perception.ros.util import FrameStats, stamp_to_ns

NODE_NAME = "depth_node"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
SCALE_POLICIES = ("model", "fixed", "lidar_median", "ground_plane")
OUTPUT_ENCODINGS = (units.ENCODING_METRES, units.ENCODING_MILLIMETRES)
IMAGE_TRANSPORTS = ("raw", "compressed")
COLORMAPS = ("turbo", "inferno", "magma", "plasma", "viridis", "jet", "bone", "gray")
#: REP 103: lidar (x forward, y left, z up) -> camera optical (x right, y down, z forward).
LIDAR_TO_OPTICAL = (0.0, -1.0, 0.0, 0.0,
                    0.0, 0.0, -1.0, 0.0,
                    1.0, 0.0, 0.0, 0.0,
                    0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, and what values are valid."""

    name: str
    default: object
    description: str
    read_only: bool = False
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    resubscribe: bool = False  # applying a change needs new subscriptions


PARAMETERS = (
    ParamSpec("model", "", "Model to load: .onnx file, TensorRT .engine/.plan file, this "
              "package's checkpoint folder, or a transformers model id/folder", read_only=True),
    ParamSpec("backend", "auto", "Inference backend: auto picks the fastest available",
              read_only=True, choices=BACKENDS),
    ParamSpec("autostart", True, "Configure and activate at start-up (set false when a "
              "lifecycle manager drives the node)"),
    ParamSpec("scale_policy", "model", "Metric scale: model (metric models), fixed "
              "(scale_factor), lidar_median (LiDAR on lidar_topic), ground_plane "
              "(camera_height)", choices=SCALE_POLICIES),
    ParamSpec("scale_factor", 1.0, "Factor for scale_policy 'fixed'", low=1e-6, high=1e6),
    ParamSpec("camera_height", 1.5, "Camera height above the ground plane [m] "
              "(scale_policy 'ground_plane'). With use_tf, TF's height of the image frame "
              "above base_frame takes precedence; this value is the fallback while TF has "
              "no such transform (and the value used when use_tf is false)",
              low=0.01, high=100.0),
    ParamSpec("camera_pitch_deg", 0.0, "Camera pitch, positive down [deg] "
              "(scale_policy 'ground_plane'). With use_tf, the pitch of the image frame in "
              "base_frame from TF takes precedence; this is the fallback",
              low=-85.0, high=85.0),
    ParamSpec("lidar_topic", "lidar/points", "PointCloud2 topic for scale_policy "
              "'lidar_median'", resubscribe=True),
    ParamSpec("lidar_to_camera", list(LIDAR_TO_OPTICAL), "4x4 row-major transform from the "
              "LiDAR frame to the camera optical frame (scale_policy 'lidar_median'). With "
              "use_tf, TF's transform from the cloud's frame_id to the image's frame_id "
              "takes precedence; this is the fallback while TF has none (and the value "
              "used when use_tf is false)"),
    ParamSpec("use_tf", True, "Take camera<-LiDAR (lidar_median) and the camera height and "
              "pitch (ground_plane) from TF (/tf, /tf_static) when TF has them; false: always "
              "use the parameters lidar_to_camera / camera_height / camera_pitch_deg"),
    ParamSpec("base_frame", "base_link", "TF frame on the road plane, z up (REP 105 "
              "base_link), for the camera height and pitch of scale_policy 'ground_plane'"),
    ParamSpec("min_depth", 0.0, "Depth below this is published as -inf (too close) [m]; "
              "0 = the model's min_depth", low=0.0, high=1000.0),
    ParamSpec("max_depth", 0.0, "Depth beyond this is published as +inf (out of range) [m]; "
              "0 = the model's max_depth", low=0.0, high=1000.0),
    ParamSpec("point_stride", 1, "Point cloud decimation: every n-th pixel in u and v",
              low=1, high=64),
    ParamSpec("point_max_range", 0.0, "Points beyond this depth are NaN/skipped [m]; "
              "0 = no limit", low=0.0, high=1000.0),
    ParamSpec("publish_organized_cloud", True, "Organized (H x W, NaN for invalid) cloud; "
              "false: only valid points (height 1)"),
    ParamSpec("point_rgb", False, "Add the packed rgb field to the point cloud"),
    ParamSpec("colormap", "turbo", "OpenCV colormap of depth/colorized", choices=COLORMAPS),
    ParamSpec("output_encoding", units.ENCODING_METRES, "depth encoding: 32FC1 metres "
              "(NaN invalid, +inf beyond range) or 16UC1 millimetres (0 invalid)",
              choices=OUTPUT_ENCODINGS),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image on 'image'; compressed: "
              "sensor_msgs/CompressedImage on 'image/compressed'", choices=IMAGE_TRANSPORTS,
              resubscribe=True),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the image and "
              "camera_info subscriptions: best_effort (sensor data; matches every camera) or "
              "reliable (never matches a best-effort camera: the node warns)",
              choices=("best_effort", "reliable"), resubscribe=True),
    ParamSpec("input_short_side", 518, "Dynamic-size models: short side of the model input "
              "[px] (multiple of 14; 0 = camera size rounded)", low=0, high=4096),
    ParamSpec("input_max_pixels", 0, "Dynamic-size models: cap on model input pixels "
              "(0 = no cap)", low=0, high=16_777_216),
    ParamSpec("warmup_size", "", "Run one inference on a blank WxH frame (e.g. '1280x720', "
              "the camera's size) at configure, so the first camera frames do not wait for "
              "lazy initialisation (CUDA context, kernels, allocator); '' = the model's "
              "input size for fixed-size models, no warm-up for dynamic-size ones",
              read_only=True),
    ParamSpec("sync_slop", 0.05, "image/CameraInfo ApproximateTime slop [s]", low=0.0,
              high=10.0),
    ParamSpec("qos_check_period", 5.0, "Period of the QoS compatibility check [s]",
              low=0.5, high=3600.0),
    ParamSpec("diagnostics_period", 1.0, "Period of /diagnostics and ~/status [s]",
              low=0.05, high=60.0),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


@dataclass(frozen=True)
class NodeSettings:
    """The node's parameters as one immutable value, swapped atomically on a change."""

    model: str = ""
    backend: str = "auto"
    autostart: bool = True
    scale_policy: str = "model"
    scale_factor: float = 1.0
    camera_height: float = 1.5
    camera_pitch_deg: float = 0.0
    lidar_topic: str = "lidar/points"
    lidar_to_camera: tuple = LIDAR_TO_OPTICAL
    use_tf: bool = True
    base_frame: str = "base_link"
    min_depth: float = 0.0
    max_depth: float = 0.0
    point_stride: int = 1
    point_max_range: float = 0.0
    publish_organized_cloud: bool = True
    point_rgb: bool = False
    colormap: str = "turbo"
    output_encoding: str = units.ENCODING_METRES
    image_transport: str = "raw"
    input_reliability: str = "best_effort"
    input_short_side: int = 518
    input_max_pixels: int = 0
    warmup_size: str = ""
    sync_slop: float = 0.05
    qos_check_period: float = 5.0
    diagnostics_period: float = 1.0

    def estimator_options(self) -> dict:
        """Preprocessing options of DepthEstimator.load (input size knobs)."""
        return {"short_side": self.input_short_side or None,
                "max_pixels": self.input_max_pixels or None}

    def scale_params(self) -> dict:
        """Keyword arguments of make_scale_policy for ``scale_policy``."""
        return {"model": {}, "fixed": {"factor": self.scale_factor},
                "lidar_median": {},
                "ground_plane": {"camera_height": self.camera_height,
                                 "pitch_deg": self.camera_pitch_deg}}[self.scale_policy]


def validate_parameter(spec: ParamSpec, value) -> str:
    """'' if ``value`` is valid for ``spec``, else the reason (no side effects)."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {list(spec.choices)}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            return f"{spec.name} must be finite, got {value}"
        if spec.low is not None and value < spec.low:
            return f"{spec.name} must be >= {spec.low}, got {value}"
        if spec.high is not None and value > spec.high:
            return f"{spec.name} must be <= {spec.high}, got {value}"
    if spec.name == "input_short_side" and 0 < value < 14:
        return f"input_short_side must be 0 (camera size) or >= 14 (one patch), got {value}"
    if spec.name == "input_max_pixels" and 0 < value < 14 * 14:
        return f"input_max_pixels must be 0 (no cap) or >= 196 (one patch), got {value}"
    if spec.name == "warmup_size" and value:
        try:
            parse_size(value)
        except ValueError:
            return f"warmup_size must be '' or WIDTHxHEIGHT (e.g. 1280x720), got {value!r}"
    if spec.name == "base_frame" and not str(value).strip("/ "):
        return "base_frame must name a TF frame, got an empty string"
    if spec.name == "lidar_to_camera":
        values = list(value)
        if len(values) != 16 or not all(math.isfinite(v) for v in values):
            return f"lidar_to_camera must be 16 finite numbers (4x4 row-major), got {values}"
    return ""


def default_estimator_factory(settings: NodeSettings):
    """Load the estimator the node runs: DepthEstimator.load(model, backend, policy)."""
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.runtime.scale import make_scale_policy

    if not settings.model:
        raise ValueError("parameter 'model' is empty: set it to an .onnx/.engine file, a "
                         "checkpoint folder or a transformers model id/folder "
                         "(--ros-args -p model:=/path/to/model.onnx)")
    policy = make_scale_policy(settings.scale_policy, **settings.scale_params())
    return DepthEstimator.load(settings.model, backend=settings.backend, scale_policy=policy,
                               **settings.estimator_options())


def image_problem(msg) -> tuple[str, str] | None:
    """(reason, text) when an Image cannot be a colour input, None if it looks usable.

    Classifies the failure for the diagnostics counters; the decoding itself (and its own
    checks) stays in :mod:`depth_perception.conversions`.
    """
    if not hasattr(msg, "encoding"):  # CompressedImage
        return ("empty", "compressed image with no data") if len(msg.data) == 0 else None
    width, height, encoding = int(msg.width), int(msg.height), str(msg.encoding)
    if width <= 0 or height <= 0:
        return "empty", f"empty {width}x{height} image (frame_id '{msg.header.frame_id}')"
    if encoding not in conversions.COLOUR_ENCODINGS:
        return "encoding", (f"image encoding '{encoding}' is not a colour encoding; expected "
                            f"one of {list(conversions.COLOUR_ENCODINGS)}")
    dtype, channels = conversions.ENCODINGS[encoding]
    row = width * channels * dtype.itemsize
    if int(msg.step) < row or len(msg.data) != int(msg.step) * height:
        return "size", (f"image {width}x{height} {encoding}: step {msg.step} and "
                        f"{len(msg.data)} data bytes do not fit (expected step >= {row} and "
                        f"step*height bytes)")
    return None


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
        self._declare_parameters()
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.stats = FrameStats()
        self._throttle = ros_utils.Throttle(5.0)
        self._state = "unconfigured"
        self._problem = ""
        self._estimator = None
        self._subs: list = []
        self._sync = None
        self._info_cache = ros_utils.CameraInfoCache()
        self._pending_images: dict[str, object] = {}  # newest image waiting for its info
        self._pending_lock = threading.Lock()
        self._lidar_points = None  # latest [N,3] float32 in the lidar frame
        self._lidar_cloud = None   # (points [N,3], frame_id, stamp ns) of the latest cloud
        self._tf = None            # TfSource, made when a scale policy needs TF
        self._transform_sources: dict[str, str] = {}  # what -> source last logged
        self._last_stamp_ns: int | None = None
        self._pubs: dict = {}
        self._qos_problems: list[str] = []

        # one-slot queue + inference worker
        self._slot: _Frame | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._worker: threading.Thread | None = None
        self._publish_lock = threading.Lock()

        self._io_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._message_filters = ros_utils.import_message_filters()

        # /diagnostics and ~/status are ordinary publishers: they report in every state,
        # including "unconfigured because the model failed to load".
        self._status_type = interfaces.message_type("DepthStatus")
        self._status_pub = None
        if self._status_type is not None:
            self._status_pub = self.create_publisher(self._status_type, "~/status",
                                                     ros_utils.output_qos(10))
        else:
            self.get_logger().info(f"~/status disabled: {interfaces.availability().reason}")
        self._setup_diagnostics()
        self._qos_timer = self.create_timer(self._settings.qos_check_period,
                                            self._check_qos, callback_group=self._diag_group)
        self._autostart_timer = None
        if self._settings.autostart:
            self._autostart_timer = self.create_timer(0.0, self._autostart,
                                                      callback_group=self._diag_group)

    # -- parameters ---------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description,
                                             read_only=spec.read_only)
            if spec.choices:
                descriptor.additional_constraints = f"one of {list(spec.choices)}"
            if spec.low is not None and isinstance(spec.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
            elif spec.low is not None and isinstance(spec.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(spec.low), to_value=int(spec.high), step=1)]
            if isinstance(spec.default, list):
                descriptor.type = ParameterType.PARAMETER_DOUBLE_ARRAY
            self.declare_parameter(spec.name, spec.default, descriptor)

    def _read_settings(self, overrides: dict | None = None) -> NodeSettings:
        values = {name: self.get_parameter(name).value for name in PARAMETER_NAMES}
        values.update(overrides or {})
        values["lidar_to_camera"] = tuple(float(v) for v in values["lidar_to_camera"])
        known = {f.name for f in fields(NodeSettings)}
        return NodeSettings(**{k: v for k, v in values.items() if k in known})

    def _validate_parameters(self, params) -> SetParametersResult:
        """Check every value; no side effects (rclpy already refuses read-only ones)."""
        specs = {s.name: s for s in PARAMETERS}
        for param in params:
            spec = specs.get(param.name)
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
        if self._sync is not None and new.sync_slop != old.sync_slop:
            self._sync.slop = new.sync_slop
        if new.qos_check_period != old.qos_check_period:
            self._qos_timer.timer_period_ns = int(new.qos_check_period * 1e9)
        if new.diagnostics_period != old.diagnostics_period and self._diag_timer is not None:
            self._diag_timer.timer_period_ns = int(new.diagnostics_period * 1e9)
        resubscribe = any(s.resubscribe and getattr(new, s.name) != getattr(old, s.name)
                          for s in PARAMETERS)
        if (new.scale_policy == "lidar_median") != (old.scale_policy == "lidar_median"):
            resubscribe = True
        if resubscribe and self._state == "active":
            self._destroy_subscriptions()
            self._create_subscriptions()
            self._check_qos()
        if self._state == "active":
            self._ensure_tf()

    def _apply_estimator_options(self, est, settings: NodeSettings) -> None:
        """Input size knobs: a new preprocessor for the same (already loaded) backend."""
        try:
            from depth_perception.runtime.processing import Preprocessor
            opts = settings.estimator_options()
            est.preprocessor = Preprocessor(est.metadata, short_side=opts["short_side"],
                                            max_pixels=opts["max_pixels"])
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
            self._publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self._problem = ""
        est = self._estimator
        self.warm_up()
        self.stats.backend = str(getattr(getattr(est, "backend", None), "name", ""))
        self.stats.precision = str(getattr(getattr(est, "backend", None), "precision", ""))
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        qos = ros_utils.output_qos(2)
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
        f = float(max(w, h))
        start = time.monotonic()
        try:
            est.estimate(np.zeros((h, w, 3), np.uint8),
                         Intrinsics(f, f, (w - 1) / 2, (h - 1) / 2, w, h))
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
        self._ensure_tf()
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
        if self._tf is not None:
            self._tf.close()
            self._tf = None
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
        return ros_utils.sensor_qos(reliable=self._settings.input_reliability == "reliable")

    def _create_subscriptions(self) -> None:
        from sensor_msgs.msg import CameraInfo, PointCloud2

        qos = self._input_qos()
        settings = self._settings
        mf = self._message_filters
        if mf is not None:
            image_sub = mf.Subscriber(self, self._image_type(), self._image_topic(),
                                      qos_profile=qos, callback_group=self._io_group)
            info_sub = mf.Subscriber(self, CameraInfo, "camera_info", qos_profile=qos,
                                     callback_group=self._io_group)
            self._sync = mf.ApproximateTimeSynchronizer([image_sub, info_sub], queue_size=5,
                                                        slop=settings.sync_slop)
            self._sync.registerCallback(self._on_pair)
            self._subs = [image_sub.sub, info_sub.sub]
        else:
            self._subs = [
                self.create_subscription(self._image_type(), self._image_topic(),
                                         self._on_image, qos, callback_group=self._io_group),
                self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                         callback_group=self._io_group),
            ]
        if settings.scale_policy == "lidar_median":
            self._subs.append(self.create_subscription(
                PointCloud2, settings.lidar_topic, self._on_lidar, qos,
                callback_group=self._io_group))

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._sync = None
        self._info_cache.clear()
        with self._pending_lock:
            self._pending_images.clear()

    def _on_camera_info(self, msg) -> None:
        self._info_cache.put(msg)
        with self._pending_lock:
            pending = self._pending_images.pop(msg.header.frame_id, None)
        if pending is not None:
            self._on_pair(pending, msg)

    def _on_image(self, msg) -> None:
        frame_id = msg.header.frame_id
        info = self._info_cache.get(frame_id)
        if info is None:
            # A camera's first CameraInfo often arrives just after its first image: keep
            # the newest image of this frame_id until one comes (an older waiting image is
            # rejected, never queued, so nothing lags).
            with self._pending_lock:
                older = self._pending_images.get(frame_id)
                self._pending_images[frame_id] = msg
            if older is not None:
                self.stats.frames_in += 1
                self._reject("no_camera_info", "no CameraInfo received yet for frame_id "
                             f"'{frame_id}' on {self.resolve_topic_name('camera_info')} "
                             f"(have: {self._info_cache.frames()})")
            return
        self._on_pair(msg, info)

    def _on_pair(self, image, info) -> None:
        with self._cond:
            self.stats.frames_in += 1
            self.stats.input_rate.tick()
            if self._slot is not None:
                self.stats.frames_dropped += 1
            self._slot = _Frame(image, info, time.monotonic())
            self._cond.notify()

    def _on_lidar(self, msg) -> None:
        try:
            points = conversions.cloud_to_numpy(msg, ("x", "y", "z"))
            self._lidar_cloud = (points, str(msg.header.frame_id),
                                 stamp_to_ns(msg.header.stamp))
            self._lidar_points = points
        except ValueError as exc:
            if self._throttle.ready("lidar"):
                self.get_logger().warning(f"LiDAR cloud ignored: {exc}")

    # -- transforms: TF first (use_tf), the parameters as fallback -----------------------
    def _ensure_tf(self) -> None:
        """Create the TF source when a scale policy needs a transform (kept afterwards)."""
        settings = self._settings
        if (self._tf is None and settings.use_tf
                and settings.scale_policy in ("lidar_median", "ground_plane")):
            from depth_perception.ros.tf_listener import TfSource

            self._tf = TfSource(self, callback_group=self._io_group)
            self.get_logger().info(f"TF source: {self._tf.describe()}")

    def _note_source(self, what: str, source: str) -> None:
        """Log which source a transform comes from, once (and again when it changes)."""
        if self._transform_sources.get(what) != source:
            self._transform_sources[what] = source
            self.get_logger().info(f"{what}: {source}")

    def _tf_lookup(self, target: str, source: str, stamp_ns, settings: NodeSettings):
        """(T [4,4], '') from TF, or (None, why not)."""
        if not settings.use_tf:
            return None, "use_tf is false"
        tf = self._tf
        if tf is None:
            return None, "no TF source"
        from depth_perception.data.tf import TransformError
        try:
            return tf.lookup(target, source, stamp_ns), ""
        except TransformError as exc:
            return None, str(exc)

    def _camera_from_lidar(self, camera_frame: str, lidar_frame: str, stamp_ns: int,
                           settings: NodeSettings) -> np.ndarray:
        """[4,4] lidar cloud frame -> image frame: TF at the cloud stamp (or its latest),
        else the ``lidar_to_camera`` parameter."""
        T, why = self._tf_lookup(camera_frame, lidar_frame, stamp_ns, settings)
        if T is not None:
            self._note_source("camera<-lidar transform",
                              f"from TF ('{lidar_frame}' -> '{camera_frame}')")
            return T
        self._note_source("camera<-lidar transform",
                          f"from parameter lidar_to_camera (TF: {why})")
        return np.asarray(settings.lidar_to_camera, dtype=np.float64).reshape(4, 4)

    def _apply_camera_pose(self, est, header, settings: NodeSettings) -> None:
        """Camera height and pitch of the ground_plane policy: TF (image frame in
        base_frame) when it has them, else camera_height / camera_pitch_deg."""
        from depth_perception.ros.tf_listener import camera_height_and_pitch

        policy = getattr(est, "scale_policy", None)
        if policy is None or not hasattr(policy, "camera_height"):
            return
        height, pitch = settings.camera_height, settings.camera_pitch_deg
        T, why = self._tf_lookup(settings.base_frame, header.frame_id,
                                 stamp_to_ns(header.stamp), settings)
        if T is not None:
            tf_height, tf_pitch = camera_height_and_pitch(T)
            if tf_height > 0:
                height, pitch = tf_height, tf_pitch
                self._note_source("camera height", f"from TF ('{header.frame_id}' in "
                                  f"'{settings.base_frame}': {height:.3f} m, pitch "
                                  f"{pitch:.1f} deg)")
            else:
                T, why = None, (f"'{header.frame_id}' is {tf_height:.3f} m above "
                                f"'{settings.base_frame}', not above it")
        if T is None:
            self._note_source("camera height", f"from parameters camera_height "
                              f"({height} m) / camera_pitch_deg (TF: {why})")
        policy.camera_height = float(height)
        if hasattr(policy, "pitch_deg"):
            policy.pitch_deg = float(pitch)

    # -- inference worker ---------------------------------------------------------------
    def _start_worker(self) -> None:
        with self._cond:
            self._stop = False
            self._slot = None
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
                self._cond.wait_for(lambda: self._stop or self._slot is not None)
                if self._stop:
                    return
                frame, self._slot = self._slot, None
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
            self._reject("camera_info", f"CameraInfo is {intrinsics.width}x{intrinsics.height} "
                         f"but the image is {rgb.shape[1]}x{rgb.shape[0]} "
                         f"(frame_id '{header.frame_id}')")
            return False
        reference = None
        cloud = self._lidar_cloud
        if settings.scale_policy == "lidar_median" and cloud is not None:
            points, lidar_frame, lidar_stamp_ns = cloud
            T = self._camera_from_lidar(header.frame_id, lidar_frame, lidar_stamp_ns,
                                        settings)
            reference = ros_utils.lidar_depth_image(points, T, intrinsics)
        elif settings.scale_policy == "ground_plane":
            self._apply_camera_pose(est, header, settings)
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
        self._publish_status(header)
        return True

    def _publish(self, header, depth, intrinsics, rgb, lo, hi, settings: NodeSettings) -> None:
        pubs = self._pubs
        if not pubs:
            return
        with self._publish_lock:
            pubs["depth"].publish(conversions.depth_to_image(depth, header,
                                                             settings.output_encoding))
            pubs["info"].publish(conversions.intrinsics_to_camera_info(intrinsics, header))
            if pubs["points"].get_subscription_count() > 0:
                pubs["points"].publish(conversions.depth_to_cloud(
                    depth, intrinsics, header, rgb=rgb if settings.point_rgb else None,
                    stride=settings.point_stride,
                    max_range=settings.point_max_range or math.inf,
                    organized=settings.publish_organized_cloud))
            if pubs["colorized"].get_subscription_count() > 0:
                bgr = colorize_depth(depth, lo, hi, settings.colormap)
                pubs["colorized"].publish(conversions.numpy_to_image(bgr, "bgr8", header))

    # -- diagnostics, status, QoS -------------------------------------------------------
    def _setup_diagnostics(self) -> None:
        self._diag_timer = None
        self._updater = None
        du = ros_utils.import_diagnostic_updater()
        if du is not None:
            self._updater = du.Updater(self, period=self._settings.diagnostics_period)
            self._updater.setHardwareID(self.get_fully_qualified_name())
            self._updater.add(f"{self.get_name()}: depth", self._diagnostic_task)
            self._diag_timer = self.create_timer(self._settings.diagnostics_period,
                                                 self._publish_status_tick,
                                                 callback_group=self._diag_group)
            return
        from diagnostic_msgs.msg import DiagnosticArray

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                               ros_utils.output_qos(10))
        self._diag_timer = self.create_timer(self._settings.diagnostics_period,
                                             self._publish_diagnostics,
                                             callback_group=self._diag_group)

    def _diagnostic_task(self, stat):
        level, message, values = ros_utils.diagnostic_values(self.stats, self._state,
                                                             self._problem)
        stat.summary(level, message)
        for key, value in values + [("qos_problems", "; ".join(self._qos_problems))]:
            stat.add(key, value)
        return stat

    def _publish_status_tick(self) -> None:
        self._publish_status(None)

    def _publish_diagnostics(self) -> None:
        if self._updater is not None:
            self._updater.force_update()
            return
        level, message, values = ros_utils.diagnostic_values(self.stats, self._state,
                                                             self._problem)
        values.append(("qos_problems", "; ".join(self._qos_problems)))
        self._diag_pub.publish(ros_utils.diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: depth",
            self.get_fully_qualified_name(), level, message, values))
        self._publish_status(None)

    def _publish_status(self, header) -> None:
        if self._status_pub is None:
            return
        s = self.stats
        msg = self._status_type()
        if header is not None:
            msg.header.stamp = header.stamp
            msg.header.frame_id = header.frame_id
        else:
            msg.header.stamp = self.get_clock().now().to_msg()
        with s.lock:
            msg.state = self._state
            msg.message = self._problem
            msg.backend, msg.precision = s.backend, s.precision
            msg.model = self._settings.model
            msg.scale_source = s.last_scale_source
            msg.scale = float(s.last_scale)
            msg.inference_ms = float(s.last_inference_ms)
            msg.latency_ms = float(s.last_latency_ms)
            msg.input_hz = float(s.input_rate.rate())
            msg.output_hz = float(s.output_rate.rate())
            msg.frames_in, msg.frames_out = s.frames_in, s.frames_out
            msg.frames_dropped, msg.frames_bad = s.frames_dropped, sum(s.bad.values())
        self._status_pub.publish(msg)

    def _check_qos(self) -> None:
        """Warn when a topic has publishers whose QoS can never match our subscription."""
        if self._state != "active":
            return
        qos = self._input_qos()
        problems = []
        for topic in (self._image_topic(), "camera_info"):
            problems += ros_utils.incompatible_publishers(
                self, self.resolve_topic_name(topic), qos)
        self._qos_problems = problems
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
