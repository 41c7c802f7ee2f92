"""The depth node's parameters: ONE table that yields the declared ROS parameters
(``ParameterDescriptor`` with description, ranges, read_only) and the settings object.

Every default is written once, in :data:`PARAMETERS`; :class:`NodeSettings` is built
from the table, and ``config/robust_depth.yaml`` repeats the same values (a test checks
it key by key).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Callable

from depth_perception import units
from depth_perception.camera import parse_size
from depth_perception.cloud import CloudSettings
from depth_perception.rectify import INPUT_IMAGES
from depth_perception.runtime.geometry import FOCAL_POLICIES

if TYPE_CHECKING:
    from depth_perception.runtime.estimator import DepthEstimator

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

    @property
    def ros_default(self):
        """The value given to ``declare_parameter`` (tuples become lists)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default


PARAMETERS = (
    ParamSpec("cameras", ("",), "Camera namespaces served by this node with one model: for "
              "each camera C, subscribes C/image (or C/image/compressed) and C/camera_info "
              "and publishes C/depth/image, C/depth/camera_info, C/points, "
              "C/depth_colorized/image, C/rgb/image_rect_color, C/rgb/camera_info with "
              "that camera's stamps and frames; [''] = one camera on the node's own topics. "
              "Frames of several cameras ready together run as one batch where the model "
              "takes one", read_only=True),
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
    ParamSpec("lidar_to_camera", LIDAR_TO_OPTICAL, "4x4 row-major transform from the "
              "LiDAR frame to the camera optical frame (scale_policy 'lidar_median'). With "
              "use_tf, TF's transform from the cloud's frame_id to the image's frame_id "
              "takes precedence; this is the fallback while TF has none (and the value "
              "used when use_tf is false)"),
    ParamSpec("use_tf", True, "Take camera<-LiDAR (lidar_median) and the camera height and "
              "pitch (ground_plane) from TF (/tf, /tf_static) when TF has them; false: always "
              "use the parameters lidar_to_camera / camera_height / camera_pitch_deg"),
    ParamSpec("world_frame", "odom", "Fixed TF frame (odometry) through which a LiDAR "
              "scan is moved to the image time (scale_policy 'lidar_median', "
              "motion_compensation)"),
    ParamSpec("motion_compensation", True, "Move each LiDAR scan to the image time through "
              "world_frame when TF has that chain at both stamps (TF does not extrapolate: "
              "otherwise camera<-LiDAR at the scan time), as the data layer and the "
              "evaluator do"),
    ParamSpec("base_frame", "base_link", "TF frame on the road plane, z up (REP 105 "
              "base_link), for the camera height and pitch of scale_policy 'ground_plane'"),
    ParamSpec("min_depth", 0.0, "Depth below this is published as -inf (too close) [m]; "
              "0 = the model's min_depth", low=0.0, high=1000.0),
    ParamSpec("max_depth", 0.0, "Depth beyond this is published as +inf (out of range) [m]; "
              "0 = the model's max_depth", low=0.0, high=1000.0),
    ParamSpec("point_stride", 1, "Point cloud decimation: every n-th pixel in u and v",
              low=1, high=64),
    ParamSpec("point_max_range", 0.0, "Range cap of the cloud: points farther than this "
              "from the camera centre are left out [m] (match Nav2's obstacle_max_range); "
              "0 = no limit", low=0.0, high=1000.0),
    ParamSpec("point_sky_fraction", 0.95, "Sky cap of the cloud: depth at or beyond this "
              "fraction of max_depth (the model's when 0) is sky, where models saturate, "
              "and gives no point; 1 = only depth beyond max_depth (+inf)",
              low=0.5, high=1.0),
    ParamSpec("point_flying_jump", 0.1, "Flying-pixel removal: a pixel whose depth exceeds "
              "a 4-neighbour's by more than this fraction of it is left out of the cloud "
              "(blended silhouette pixels; the depth image keeps them); 0 = off",
              low=0.0, high=10.0),
    ParamSpec("point_voxel_size", 0.0, "Voxel downsampling of the cloud: one point (the "
              "centroid) per cube of this edge [m] in point_frame; 0 = off (a voxelised "
              "cloud is unorganized)", low=0.0, high=100.0),
    ParamSpec("point_frame", "", "TF frame of the published cloud (e.g. base_link, for "
              "Nav2 costmaps): points transformed by TF at the image stamp (an unorganized "
              "cloud); while TF lacks the transform no cloud is published (logged, "
              "counted in /diagnostics as cloud_tf_failures); '' = the camera frame"),
    ParamSpec("publish_organized_cloud", True, "Organized (H x W, NaN for invalid) cloud; "
              "false: only valid points (height 1)"),
    ParamSpec("point_rgb", False, "Add the packed rgb field to the point cloud"),
    ParamSpec("temporal_fusion", False, "Temporal fusion: carry the previous fused depth "
              "into the current camera with the ego-motion from TF (camera frame in "
              "world_frame at the two images' stamps) and average it with the new "
              "prediction where they agree (fusion_threshold), reset where they do not "
              "(moving objects, disocclusions); while TF lacks the motion the frame is "
              "published single-frame and counted in /diagnostics as fusion_resets_no_tf"),
    ParamSpec("fusion_threshold", 0.1, "Temporal fusion: largest relative difference "
              "between the new prediction and the carried depth that still counts as "
              "agreement", low=0.01, high=0.9),
    ParamSpec("fusion_max_age", 8, "Temporal fusion: frames in the running mean (then a "
              "new frame keeps the weight 1 / fusion_max_age)", low=2, high=1000),
    ParamSpec("confidence_source", "auto", "Per-pixel confidence published on "
              "confidence/image (32FC1, 0..1, beside confidence/camera_info): model (the "
              "model's uncertainty output, e.g. log_variance), temporal (the temporal "
              "fusion's agreement), auto (model when the model has one, else temporal when "
              "temporal_fusion is on, else none), none. The source in use is logged",
              choices=("auto", "model", "temporal", "none")),
    ParamSpec("point_min_confidence", 0.0, "Cloud filter: pixels whose confidence is below "
              "this give no point (0 = off; no effect without a confidence source)",
              low=0.0, high=1.0),
    ParamSpec("colormap", "turbo", "OpenCV colormap of depth_colorized/image", choices=COLORMAPS),
    ParamSpec("output_encoding", units.ENCODING_METRES, "depth encoding: 32FC1 metres "
              "(NaN invalid, +inf beyond range) or 16UC1 millimetres (0 invalid)",
              choices=OUTPUT_ENCODINGS),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image on 'image'; compressed: "
              "sensor_msgs/CompressedImage on 'image/compressed'", choices=IMAGE_TRANSPORTS,
              resubscribe=True),
    ParamSpec("input_image", "raw", "What the input image is: raw (a driver's image_raw: "
              "rectified with the CameraInfo's distortion_model, D, R and P before the model, "
              "as image_proc does; nothing to do when D is zero), rectified (image_rect: "
              "described by P, not rectified again), ignore_distortion (K on the raw "
              "image: wrong toward the edges of a distorted lens; for comparisons). Depth, "
              "cloud and depth/camera_info are always of the rectified camera (D = 0)",
              choices=INPUT_IMAGES),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the image and "
              "camera_info subscriptions: best_effort (sensor data; matches every camera) or "
              "reliable (never matches a best-effort camera: the node warns)",
              choices=("best_effort", "reliable"), resubscribe=True),
    ParamSpec("focal_policy", "as_trained", "Camera geometry of a metric model: as_trained "
              "(resize so the input's focal length in pixels equals the training one) or "
              "canonical (run at the input size and rescale depth by f_input / f_train, "
              "Metric3D's canonical camera)", choices=FOCAL_POLICIES),
    ParamSpec("input_short_side", 0, "Dynamic-size models: short side of the model input "
              "[px] (multiple of 14); 0 = as the model was trained (its metadata; 518 for "
              "models that do not record it)", low=0, high=4096),
    ParamSpec("input_max_pixels", 0, "Dynamic-size models: cap on model input pixels "
              "(0 = no cap)", low=0, high=16_777_216),
    ParamSpec("warmup_size", "", "Run one inference on a blank WxH frame (e.g. '1280x720', "
              "the camera's size) at configure, so the first camera frames do not wait for "
              "lazy initialisation (CUDA context, kernels, allocator); '' = the model's "
              "input size for fixed-size models, no warm-up for dynamic-size ones",
              read_only=True),
    ParamSpec("queue_size", 1, "Frames waiting for inference: 1 = only the newest (live "
              "cameras: no lag builds up); more absorbs bursts of frames (bag replay, "
              "evaluation) at the cost of up to that many frames of lag; the oldest waiting "
              "frames beyond it are dropped and counted", low=1, high=10_000),
    ParamSpec("camera_info_wait", 0.1, "How long an image waits for the CameraInfo with its "
              "stamp [s]; then it is paired with the newest valid CameraInfo of its frame "
              "(said once)", low=0.0, high=10.0),
    ParamSpec("qos_check_period", 5.0, "Period of the QoS compatibility check [s]",
              low=0.5, high=3600.0),
    ParamSpec("diagnostics_period", 1.0, "Period of /diagnostics and ~/status [s]",
              low=0.05, high=60.0),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
SPECS = {p.name: p for p in PARAMETERS}


def _estimator_options(self) -> dict:
    """Options of DepthEstimator.load: input size knobs, focal policy, output range."""
    return {"short_side": self.input_short_side or None,
            "max_pixels": self.input_max_pixels or None,
            "focal_policy": self.focal_policy,
            "min_depth": self.min_depth or None, "max_depth": self.max_depth or None}


def _cloud_settings(self, max_depth: float) -> CloudSettings:
    """The cloud filter for a frame whose depth range ends at ``max_depth`` [m]."""
    return CloudSettings(stride=self.point_stride,
                         max_range=self.point_max_range or math.inf,
                         # 1: only +inf (beyond max_depth) is sky; max_depth itself stays
                         sky_depth=self.point_sky_fraction * max_depth
                         if max_depth > 0 and self.point_sky_fraction < 1 else math.inf,
                         flying_jump=self.point_flying_jump, voxel_size=self.point_voxel_size,
                         organized=self.publish_organized_cloud,
                         min_confidence=self.point_min_confidence)


def _scale_params(self) -> dict:
    """Keyword arguments of make_scale_policy for ``scale_policy``."""
    return {"model": {}, "fixed": {"factor": self.scale_factor},
            "lidar_median": {},
            "ground_plane": {"camera_height": self.camera_height,
                             "pitch_deg": self.camera_pitch_deg}}[self.scale_policy]


#: The node's parameters as one immutable value, swapped atomically on a change; one
#: field per row of :data:`PARAMETERS`, with its default.
NodeSettings = make_dataclass(
    "NodeSettings",
    [(p.name, type(p.default), field(default=p.default)) for p in PARAMETERS],
    frozen=True,
    namespace={"estimator_options": _estimator_options, "scale_params": _scale_params,
               "cloud_settings": _cloud_settings,
               "__doc__": "The depth node's parameters (see PARAMETERS).",
               "__module__": __name__})


def settings_from_values(values: dict) -> NodeSettings:
    """NodeSettings from parameter values (lists become tuples; unknown names refused)."""
    unknown = sorted(set(values) - set(PARAMETER_NAMES))
    if unknown:
        raise ValueError(f"unknown depth node parameters {unknown}")
    values = {k: _array_value(SPECS[k], v) if isinstance(SPECS[k].default, tuple) else v
              for k, v in values.items()}
    return NodeSettings(**values)


def _array_value(spec: ParamSpec, value) -> tuple:
    """An array parameter as a tuple of its element type (str or float)."""
    kind = str if isinstance(spec.default[0], str) else float
    return tuple(kind(x) for x in value)


def camera_namespace_problem(cameras) -> str:
    """'' if ``cameras`` is a usable list of camera namespaces, else the reason."""
    cameras = list(cameras)
    if not cameras:
        return "cameras must name at least one camera namespace ([''] = the node's own topics)"
    names = [str(c).strip("/") for c in cameras]
    if len(set(names)) != len(names):
        return f"cameras must be distinct namespaces, got {cameras}"
    for camera, name in zip(cameras, names):
        if name and not all(part and (part[0].isalpha() or part[0] == "_")
                            and all(ch.isalnum() or ch == "_" for ch in part)
                            for part in name.split("/")):
            return (f"camera namespace {camera!r} is not a ROS namespace (letters, digits and "
                    "'_' in '/'-separated parts, each starting with a letter or '_')")
    return ""


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
        return f"input_short_side must be 0 (as trained) or >= 14 (one patch), got {value}"
    if spec.name == "input_max_pixels" and 0 < value < 14 * 14:
        return f"input_max_pixels must be 0 (no cap) or >= 196 (one patch), got {value}"
    if spec.name == "warmup_size" and value:
        try:
            parse_size(value)
        except ValueError:
            return f"warmup_size must be '' or WIDTHxHEIGHT (e.g. 1280x720), got {value!r}"
    if spec.name == "point_frame" and str(value) != str(value).strip("/ "):
        return f"point_frame must be a TF frame id without '/' or spaces, got {value!r}"
    if spec.name in ("base_frame", "world_frame") and not str(value).strip("/ "):
        return f"{spec.name} must name a TF frame, got an empty string"
    if spec.name == "cameras":
        return camera_namespace_problem(value)
    if spec.name == "lidar_to_camera":
        values = list(value)
        if len(values) != 16 or not all(math.isfinite(v) for v in values):
            return f"lidar_to_camera must be 16 finite numbers (4x4 row-major), got {values}"
    return ""


def descriptor(spec: ParamSpec):
    """The ``rcl_interfaces/ParameterDescriptor`` of one table row."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    d = ParameterDescriptor(name=spec.name, description=spec.description,
                            read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = f"one of {list(spec.choices)}"
    if spec.low is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(
            from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and isinstance(spec.default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                        step=1)]
    if isinstance(spec.default, tuple):
        d.type = (ParameterType.PARAMETER_STRING_ARRAY if isinstance(spec.default[0], str)
                  else ParameterType.PARAMETER_DOUBLE_ARRAY)
    return d


def declare_parameters(node) -> None:
    """Declare every row of the table on ``node``."""
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.ros_default, descriptor(spec))


#: what builds the estimator a depth node runs, from the node's settings (tests pass their
#: own; the default is :func:`default_estimator_factory`)
EstimatorFactory = Callable[[NodeSettings], "DepthEstimator"]


def default_estimator_factory(settings: NodeSettings) -> DepthEstimator:
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
