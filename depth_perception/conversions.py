"""ROS messages <-> numpy arrays, in one place.

Pure functions, duck-typed on message field names, so they accept both rclpy messages
(``sensor_msgs.msg.Image``...) and ``rosbags`` typestore messages read from bags.
Builders take ``msg_type``: ``None`` means the rclpy class (imported lazily), or pass a
``rosbags`` typestore class (``typestore.types['sensor_msgs/msg/Image']``) to build
messages for a bag writer. Every field is passed to the constructor as a keyword
(rosbags dataclasses need all of them).

Layouts: images are ``[H,W,C]`` (``[H,W]`` for single channel) in the encoding's native
dtype; depth is ``[H,W]`` float32 metres with NaN for invalid and the REP 117 meanings
of ``+inf`` (no return / beyond range) and ``-inf`` (too close). Millimetre conversions
go through :mod:`depth_perception.units`.

Point clouds follow depth_image_proc: organized clouds are ``H x W`` with NaN points and
``is_dense=False``; x, y, z float32 plus an optional ``rgb`` float32 whose bits are the
uint32 ``0x00RRGGBB``; ``point_step`` 16.
"""
from __future__ import annotations

import array
import functools
import logging
import sys

import cv2
import numpy as np

from depth_perception import buffers, units
from depth_perception.camera import Intrinsics, pixel_rays
from depth_perception.rectify import Calibration

log = logging.getLogger(__name__)

#: encoding -> (numpy dtype of one channel, number of channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")

#: PointField datatype constants (sensor_msgs/PointField) -> numpy dtype
POINTFIELD_DTYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16,
                     5: np.int32, 6: np.uint32, 7: np.float32, 8: np.float64}
FLOAT32 = 7

#: set to False to force the numpy path even when cv_bridge imports (tests, debugging)
USE_CV_BRIDGE = True


# -- helpers: message classes, headers, stamps -----------------------------------------
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int, msg_type=None):
    """Integer nanoseconds -> builtin_interfaces/Time (rclpy, or the ``msg_type`` class,
    e.g. rosbags'); refuses stamps outside 0 .. 2**31 s (int32 seconds)."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    if not 0 <= sec < 2**31:
        raise ValueError(f"stamp {stamp_ns} ns is outside builtin_interfaces/Time "
                         "(0 to 2**31 s, int32 seconds)")
    return _resolve(msg_type, "builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def _is_rosbags_type(msg_type) -> bool:
    return msg_type is not None and hasattr(msg_type, "__msgtype__")


def _rclpy_class(name: str):
    """'sensor_msgs/msg/Image' -> rclpy class (lazy import)."""
    package, _, cls = name.split("/")
    try:
        module = __import__(f"{package}.msg", fromlist=[cls])
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(
            f"building a {name} message needs the ROS 2 Python package '{package}' "
            "(pip install ros-" + package.replace("_", "-") + " or source a ROS 2 install), "
            "or pass msg_type= a rosbags typestore class") from err
    return getattr(module, cls)


def _field_class(msg_type, field: str):
    """Class of a nested message field of a rosbags message class (e.g. its Header)."""
    import dataclasses

    for f in dataclasses.fields(msg_type):
        if f.name == field:
            type_name = f.type if isinstance(f.type, str) else f.type.__name__
            type_name = type_name.split("[")[-1].rstrip("]")  # list[Foo] -> Foo
            module = sys.modules[msg_type.__module__]
            return getattr(module, type_name)
    raise ValueError(f"{msg_type.__msgtype__} has no field '{field}'")


def _resolve(msg_type, name: str):
    return _rclpy_class(name) if msg_type is None else msg_type


def _make_header(header, msg_type):
    """Header of the right flavour (rclpy or rosbags) for ``msg_type``."""
    rosbags = _is_rosbags_type(msg_type)
    header_cls = (_field_class(msg_type, "header") if rosbags
                  else _rclpy_class("std_msgs/msg/Header"))
    if isinstance(header, header_cls):
        return header
    time_cls = (_field_class(header_cls, "stamp") if rosbags
                else _rclpy_class("builtin_interfaces/msg/Time"))
    if header is None:
        return header_cls(stamp=time_cls(sec=0, nanosec=0), frame_id="")
    return header_cls(stamp=time_cls(sec=int(header.stamp.sec),
                                     nanosec=int(header.stamp.nanosec)),
                      frame_id=str(header.frame_id))


def _byte_field(payload, msg_type):
    """uint8[] field of ``payload``'s bytes (one copy): ndarray (rosbags), array('B')."""
    if _is_rosbags_type(msg_type):
        return np.frombuffer(payload, dtype=np.uint8).copy()
    (out := array.array("B")).frombytes(payload)
    return out


def _construct_with_data(cls, payload, msg_type, **fields):
    """Build a message with a large ``data`` field without per-element copies:
    rclpy's generated constructors rebuild ``data`` element by element (about 40 ms for a
    15 MB cloud); assigning an ``array('B')`` afterwards is a single memcpy.
    """
    if _is_rosbags_type(msg_type):
        return cls(**fields, data=_byte_field(payload, msg_type))
    msg = cls(**fields)
    _hand_over_data(msg, _byte_field(payload, msg_type))
    return msg


def _buffer(data) -> np.ndarray:
    """uint8[] field of any flavour (array.array, ndarray, bytes, list) -> 1-D uint8 view."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _describe(msg) -> str:
    header = getattr(msg, "header", None)
    frame = getattr(header, "frame_id", "") if header is not None else ""
    return f"frame_id '{frame}'" if frame else "message"


# -- Image -----------------------------------------------------------------------------
def _is_compressed(msg) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _check_layout(msg) -> tuple[np.dtype, int]:
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ValueError(f"image ({_describe(msg)}): unknown encoding '{encoding}', expected "
                         f"one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image ({_describe(msg)}, {encoding}): empty {width}x{height} image, "
                         "expected width and height > 0")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"image ({_describe(msg)}, {encoding}): step {step} is smaller than "
                         f"width*bytes_per_pixel = {width}*{channels * dtype.itemsize} = "
                         f"{row_bytes}")
    n = len(msg.data)
    if n != step * height:
        raise ValueError(f"image ({_describe(msg)}, {encoding} {width}x{height}): data has "
                         f"{n} bytes, expected step*height = {step}*{height} = {step * height}")
    return dtype, channels


@functools.lru_cache(maxsize=1)
def _cv_bridge():
    """One CvBridge, or None without cv_bridge. Looked up once: a failed import is not
    cached by Python, and searching sys.path again on every frame costs milliseconds."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def _cv_bridge_decode(msg):
    """cv_bridge path for rclpy messages when a ROS install provides it, else None."""
    if not USE_CV_BRIDGE or hasattr(type(msg), "__msgtype__"):
        return None
    bridge = _cv_bridge()
    if bridge is None:
        return None
    return np.array(bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"))


def image_to_numpy(msg, copy: bool = True) -> np.ndarray:
    """sensor_msgs/Image -> array in the encoding's native layout (native byte order).

    rgb8/bgr8 [H,W,3] uint8, rgba8/bgra8 [H,W,4] uint8, mono8 [H,W] uint8,
    16UC1 [H,W] uint16, 32FC1 [H,W] float32. Row padding (``step``) and ``is_bigendian``
    are honoured. ``copy=False``: a read-only view of the message's data where its layout
    allows (no row padding, native byte order), a copy otherwise.
    """
    dtype, channels = _check_layout(msg)
    out = _cv_bridge_decode(msg)
    if out is not None:
        return out
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    rows = _buffer(msg.data).reshape(height, step)[:, : width * channels * dtype.itemsize]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=False)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = pixels.reshape(shape)
    if not np.shares_memory(pixels, rows):     # an array of its own already (padding, order)
        return pixels
    out = pixels.copy() if copy else pixels.view()
    out.flags.writeable = copy
    return out


def _decode_compressed(msg, flags) -> np.ndarray:
    data = _buffer(msg.data)
    if data.size == 0:
        raise ValueError(f"compressed image ({_describe(msg)}, format '{msg.format}'): no data")
    out = cv2.imdecode(data, flags)
    if out is None:
        raise ValueError(f"compressed image ({_describe(msg)}, format '{msg.format}'): "
                         f"{data.size} bytes could not be decoded, expected a JPEG or PNG stream")
    return out


def image_to_rgb(msg, copy: bool = True) -> np.ndarray:
    """Image (colour or mono encoding) or CompressedImage (jpeg/png) -> [H,W,3] uint8 RGB.
    ``copy=False``: an rgb8 image comes back as a read-only view of the message's data
    when its layout allows (what the node reads and never writes)."""
    if _is_compressed(msg):
        fmt = str(msg.format)
        if "compresseddepth" in fmt.lower():
            raise ValueError(f"compressed image ({_describe(msg)}): format '{fmt}' is depth, "
                             "expected a colour image; use image_to_depth")
        bgr = _decode_compressed(msg, cv2.IMREAD_COLOR)  # OpenCV decodes to BGR
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    encoding = str(msg.encoding)
    if encoding in DEPTH_ENCODINGS:
        raise ValueError(f"image ({_describe(msg)}): encoding '{encoding}' is depth, expected a "
                         f"colour or mono encoding {COLOUR_ENCODINGS}; use image_to_depth")
    pixels = image_to_numpy(msg, copy=copy and encoding == "rgb8")
    if encoding == "rgb8":
        return pixels
    if encoding in ("bgr8", "8UC3"):
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.repeat(pixels[..., None], 3, axis=2)  # mono8 / 8UC1


def _compressed_depth(msg) -> np.ndarray:
    """compressedDepth (image_transport plugin): 12-byte header + PNG."""
    fmt = str(msg.format)
    data = _buffer(msg.data)
    if data.size <= 12:
        raise ValueError(f"compressed depth ({_describe(msg)}, format '{fmt}'): "
                         f"{data.size} bytes, expected a 12-byte header and a PNG")
    quant_a, quant_b = np.frombuffer(data[4:12].tobytes(), dtype="<f4")
    png = cv2.imdecode(data[12:], cv2.IMREAD_UNCHANGED)
    if png is None:
        raise ValueError(f"compressed depth ({_describe(msg)}, format '{fmt}'): PNG payload "
                         "could not be decoded")
    if fmt.split(";")[0].strip() == "32FC1":
        inv = png.astype(np.float32)
        with np.errstate(divide="ignore"):
            depth = np.float32(quant_a) / (inv - np.float32(quant_b))
        depth[png == 0] = np.nan
        return depth.astype(np.float32)
    return units.mm_to_metres(png.astype(np.uint16))


def image_to_depth(msg) -> np.ndarray:
    """32FC1 (metres) or 16UC1 (millimetres) Image -> [H,W] float32 metres.

    Invalid pixels (16UC1 zero, 32FC1 NaN or a non-positive finite value) become NaN;
    ``+inf``/``-inf`` keep their REP 117 meanings. CompressedImage in the
    ``compressedDepth`` format is decoded too.
    """
    if _is_compressed(msg):
        if "compresseddepth" not in str(msg.format).lower():
            raise ValueError(f"compressed image ({_describe(msg)}): format '{msg.format}' is "
                             "not depth, expected '16UC1; compressedDepth' or "
                             "'32FC1; compressedDepth'")
        return _compressed_depth(msg)
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        if encoding in ENCODINGS:
            raise ValueError(f"image ({_describe(msg)}): encoding '{encoding}' is not depth, "
                             f"expected one of {DEPTH_ENCODINGS}")
        _check_layout(msg)  # raises the unknown-encoding error
    pixels = image_to_numpy(msg)
    if encoding == "32FC1":
        depth = pixels.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            depth[np.isfinite(depth) & (depth <= 0)] = np.nan
        return depth
    return units.mm_to_metres(pixels)


def numpy_to_image(array_: np.ndarray, encoding: str, header, msg_type=None):
    """Array in the encoding's native layout -> sensor_msgs/Image (rclpy or ``msg_type``).

    ``[H,W,C]`` (or ``[H,W]`` for single channel) with the encoding's dtype; float64 is
    accepted for 32FC1. The message is little/native endian with no row padding.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"numpy_to_image: unknown encoding '{encoding}', expected one of "
                         f"{sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(array_)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "[H,W]" if channels == 1 else f"[H,W,{channels}]"
        raise ValueError(f"numpy_to_image: encoding '{encoding}' expects an array {want}, "
                         f"got shape {arr.shape}")
    if arr.dtype != dtype:
        if not (dtype == np.float32 and arr.dtype.kind == "f"):
            raise ValueError(f"numpy_to_image: encoding '{encoding}' expects dtype {dtype}, "
                             f"got {arr.dtype}")
        arr = arr.astype(dtype)
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"numpy_to_image: empty {width}x{height} array for '{encoding}'")
    arr = np.ascontiguousarray(arr)
    cls = _resolve(msg_type, "sensor_msgs/msg/Image")
    return _construct_with_data(   # the bytes of arr, copied once into the message
        cls, arr.reshape(-1).view(np.uint8), msg_type, header=_make_header(header, msg_type),
        height=int(height), width=int(width), encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"), step=int(width * channels * dtype.itemsize))


def depth_to_image(depth_m: np.ndarray, header, encoding: str = "32FC1", msg_type=None):
    """[H,W] metres -> Image: 32FC1 metres (NaN invalid, +inf beyond range) or 16UC1 mm."""
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth_to_image: expected depth [H,W], got shape {depth_m.shape}")
    if encoding == units.ENCODING_METRES:
        return numpy_to_image(depth_m.astype(np.float32, copy=False), encoding, header, msg_type)
    if encoding == units.ENCODING_MILLIMETRES:
        return numpy_to_image(units.metres_to_mm(depth_m), encoding, header, msg_type)
    raise ValueError(f"depth_to_image: encoding '{encoding}' not supported, expected "
                     f"'{units.ENCODING_METRES}' or '{units.ENCODING_MILLIMETRES}'")


# -- CameraInfo ------------------------------------------------------------------------
def camera_info_to_intrinsics(msg) -> Intrinsics:
    """CameraInfo -> the pinhole ``K`` of the published image (binning and ROI applied as
    image_geometry does; distortion ignored: see :func:`depth_perception.rectify.rectifier`).
    ValueError for an all-zero K (uncalibrated camera) or a zero image size."""
    cal = camera_info_to_calibration(msg)
    try:
        if cal.width <= 0 or cal.height <= 0 or len(cal.K) != 9 or not any(cal.K):
            raise ValueError(cal.problem())
        return cal.intrinsics("K")
    except ValueError as err:
        raise ValueError(f"CameraInfo ({_describe(msg)}): {err}") from err


def camera_info_to_calibration(msg) -> Calibration:
    """sensor_msgs/CameraInfo -> :class:`~depth_perception.rectify.Calibration` (all its
    calibration fields, unchecked: :func:`depth_perception.rectify.rectifier` says what is
    wrong with a bad one)."""
    r = getattr(msg, "roi", None)
    roi = (r.x_offset, r.y_offset, r.width, r.height) if r is not None else (0, 0, 0, 0)

    def values(field):
        return tuple(float(v) for v in np.asarray(field, np.float64).reshape(-1))
    return Calibration(int(msg.width), int(msg.height), str(msg.distortion_model),
                       values(msg.d), values(msg.k), values(msg.r), values(msg.p),
                       int(getattr(msg, "binning_x", 0)), int(getattr(msg, "binning_y", 0)),
                       tuple(int(v) for v in roi))


def intrinsics_to_camera_info(intrinsics: Intrinsics, header, msg_type=None, tx_ty=(0, 0)):
    """Intrinsics -> CameraInfo of a rectified camera: D = 0, R = I, P = [K | (Tx, Ty, 0)]."""
    cal = Calibration.pinhole(intrinsics, D=(0.0,) * 5, tx_ty=tx_ty)
    return calibration_to_camera_info(cal, header, msg_type)


def calibration_to_camera_info(cal: Calibration, header, msg_type=None):
    """Calibration -> CameraInfo (full resolution: binning and ROI are not written)."""
    cls = _resolve(msg_type, "sensor_msgs/msg/CameraInfo")
    if _is_rosbags_type(msg_type):
        roi = _field_class(msg_type, "roi")(x_offset=0, y_offset=0, height=0, width=0,
                                            do_rectify=False)
        d = np.asarray(cal.D, dtype=np.float64)
    else:
        roi = _rclpy_class("sensor_msgs/msg/RegionOfInterest")()
        d = [float(v) for v in cal.D]
    return cls(header=_make_header(header, msg_type), height=int(cal.height),
               width=int(cal.width), distortion_model=cal.distortion_model, d=d,
               k=np.asarray(cal.K, np.float64), r=np.asarray(cal.R, np.float64),
               p=np.asarray(cal.P, np.float64), binning_x=0, binning_y=0, roi=roi)


# -- PointCloud2 -----------------------------------------------------------------------
def _cloud_dtype(msg, names) -> np.dtype:
    available = {str(f.name): f for f in msg.fields}
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"PointCloud2 ({_describe(msg)}): no field(s) {missing}, the cloud "
                         f"has {list(available)}")
    order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for n in names:
        f = available[n]
        if int(f.datatype) not in POINTFIELD_DTYPES:
            raise ValueError(f"PointCloud2 ({_describe(msg)}): field '{n}' has unknown "
                             f"datatype {f.datatype}, expected 1..8")
        formats.append(np.dtype(POINTFIELD_DTYPES[int(f.datatype)]).newbyteorder(order))
        offsets.append(int(f.offset))
    return np.dtype({"names": list(names), "formats": formats, "offsets": offsets,
                     "itemsize": int(msg.point_step)})


def cloud_to_numpy(msg, fields=("x", "y", "z")) -> np.ndarray:
    """PointCloud2 -> [N,len(fields)] float32 (N = height*width, NaN points kept).

    Honours ``point_step``, ``row_step``, field offsets/datatypes and ``is_bigendian``.
    Float32 fields (including packed ``rgb``) keep their exact bits.
    """
    fields = tuple(fields)
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = _cloud_dtype(msg, fields)
    data = _buffer(msg.data)
    if height * width == 0:
        return np.zeros((0, len(fields)), dtype=np.float32)
    if row_step < width * point_step or data.size != row_step * height:
        raise ValueError(f"PointCloud2 ({_describe(msg)}): data has {data.size} bytes, expected "
                         f"row_step*height = {row_step}*{height} with row_step >= "
                         f"width*point_step = {width}*{point_step}")
    rows = data.reshape(height, row_step)[:, : width * point_step]
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return np.stack([points[n].astype(np.float32) for n in fields], axis=1)


def _alloc_byte_field(nbytes: int, msg_type):
    """A message ``uint8[]`` field of ``nbytes`` and a writable numpy view of it.

    Lets large payloads (clouds) be computed straight into the message's own memory:
    no intermediate buffer, no ``tobytes`` copy.
    """
    if _is_rosbags_type(msg_type):
        field = np.zeros(nbytes, dtype=np.uint8)
        return field, field
    field = array.array("B", [0]) * nbytes
    return field, np.frombuffer(field, dtype=np.uint8)


def _cloud_message(data_field, height: int, width: int, field_names, header, msg_type,
                   is_dense: bool, point_step: int):
    """PointCloud2 around an already filled ``data`` field of float32 fields."""
    cls = _resolve(msg_type, "sensor_msgs/msg/PointCloud2")
    if _is_rosbags_type(msg_type):
        field_cls = _field_class(msg_type, "fields")
    else:
        field_cls = _rclpy_class("sensor_msgs/msg/PointField")
    fields = [field_cls(name=str(name), offset=4 * i, datatype=FLOAT32, count=1)
              for i, name in enumerate(field_names)]
    fixed = dict(header=_make_header(header, msg_type), height=int(height), width=int(width),
                 fields=fields, is_bigendian=False, point_step=int(point_step),
                 row_step=int(point_step) * int(width), is_dense=bool(is_dense))
    if _is_rosbags_type(msg_type):
        return cls(**fixed, data=data_field)
    msg = cls(**fixed)
    _hand_over_data(msg, data_field)
    return msg


def _hand_over_data(msg, data_field) -> None:
    """Give an rclpy message its ``array('B')`` data without copying it.

    The generated setter keeps an ``array('B')`` as is only when field checks are on;
    otherwise it rebuilds it with ``array('B', value)`` (a full copy of a multi-MB cloud).
    The array is exactly what that copy would produce, so it is stored directly.
    """
    if getattr(msg, "_check_fields", True) or not hasattr(type(msg), "_data"):
        msg.data = data_field
    else:
        msg._data = data_field


def _make_cloud(buffer: np.ndarray, field_names, header, msg_type, is_dense: bool):
    """[h,w,n] float32 buffer -> PointCloud2 with the first len(field_names) float32 fields."""
    height, width, n = buffer.shape
    field, raw = _alloc_byte_field(buffer.size * 4, msg_type)
    raw.view("<f4").reshape(buffer.shape)[...] = buffer
    return _cloud_message(field, height, width, field_names, header, msg_type, is_dense,
                          point_step=4 * n)


def points_to_cloud(points: np.ndarray, field_names, header, msg_type=None):
    """[N,k] float32 points -> unorganized PointCloud2 (height 1) with k float32 fields.

    Three fields (x, y, z) are padded to a 16-byte ``point_step``.
    """
    points = np.asarray(points, dtype=np.float32)
    field_names = tuple(field_names)
    if points.ndim != 2 or points.shape[1] != len(field_names):
        raise ValueError(f"points_to_cloud: expected points [N,{len(field_names)}] for fields "
                         f"{field_names}, got shape {points.shape}")
    n, k = points.shape
    width = k + 1 if k == 3 else k
    buffer = np.zeros((1, n, width), dtype=np.float32)
    buffer[0, :, :k] = points
    dense = bool(np.isfinite(points[:, :3]).all()) if k >= 3 else True
    return _make_cloud(buffer, field_names, header, msg_type, is_dense=dense)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[...,3] uint8 RGB -> [...] float32 whose bits are the uint32 0x00RRGGBB."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    packed = ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
              | rgb[..., 2].astype(np.uint32))
    return packed.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """[...] float32 packed rgb -> [...,3] uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> s) & 0xFF for s in (16, 8, 0)], axis=-1).astype(np.uint8)


def depth_to_cloud(depth: np.ndarray, intrinsics: Intrinsics, header, rgb=None, stride: int = 1,
                   max_range: float = float("inf"), organized: bool = True, msg_type=None):
    """[H,W] z-depth metres -> PointCloud2 in the camera optical frame.

    Samples every ``stride``-th pixel (u, v in ORIGINAL pixel coordinates):
    X = (u - cx) z / fx, Y = (v - cy) z / fy, Z = z. Invalid depth (NaN, inf, <= 0) and
    depth beyond ``max_range`` (on z) become NaN points in an organized cloud
    (``ceil(H/stride) x ceil(W/stride)``, ``is_dense=False``) or are skipped
    (``organized=False``: height 1, ``is_dense=True``). ``rgb`` [H,W,3] uint8 adds a
    packed ``rgb`` field.

    The rays ``(u - cx) / fx``, ``(v - cy) / fy`` are computed once per (K, size,
    stride) (:func:`~depth_perception.camera.pixel_rays`). An organized rclpy cloud is
    written straight into its message's data field, a buffer reused from an earlier
    cloud that nothing refers to any more (:mod:`depth_perception.buffers`).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"depth_to_cloud: depth shape {depth.shape} does not match intrinsics "
                         f"{intrinsics.width}x{intrinsics.height} (expected [H,W])")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != depth.shape + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"depth_to_cloud: rgb must be [H,W,3] uint8 matching depth "
                             f"{depth.shape}, got {rgb.shape} {rgb.dtype}")
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"depth_to_cloud: stride must be >= 1, got {stride}")
    if not max_range > 0:
        raise ValueError(f"depth_to_cloud: max_range must be > 0, got {max_range}")
    # 1. strided samples, NaN where invalid; rays of those pixels (cached per geometry)
    z = units.nan_outside(depth[::stride, ::stride], max_range)      # [h,w]
    rays = pixel_rays(intrinsics, stride)
    names = ("x", "y", "z") + (("rgb",) if rgb is not None else ())
    fourth = pack_rgb(rgb[::stride, ::stride]) if rgb is not None else rays.zeros
    # 2. x = z * x/z, y = z * y/z, then (x, y, z, pad|rgb) interleaved in one pass:
    #    for an organized cloud straight into a (reused) message data field
    planes = (cv2.multiply(rays.x_per_z, z), cv2.multiply(rays.y_per_z, z), z, fourth)
    if organized:
        if _is_rosbags_type(msg_type):
            field, raw = _alloc_byte_field(z.size * 16, msg_type)
        else:
            field = buffers.reusable_bytes(z.size * 16)
            raw = np.frombuffer(field, dtype=np.uint8)
        target = raw.view("<f4").reshape(z.shape + (4,))                # [h,w,4]
        if cv2.merge(planes, dst=target).ctypes.data != target.ctypes.data:
            raise RuntimeError("cv2.merge did not write into the message buffer")
        del raw, target
        return _cloud_message(field, z.shape[0], z.shape[1], names, header, msg_type,
                              is_dense=False, point_step=16)
    buffer = cv2.merge(planes)                                        # [h,w,4]
    valid = ~np.isnan(z)
    return _make_cloud(buffer[valid][None], names, header, msg_type, is_dense=True)
