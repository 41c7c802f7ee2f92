"""Message <-> numpy conversions, for rclpy messages and rosbags typestore messages."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception import conversions as conv
from depth_perception.camera import Intrinsics

ENCODING_SAMPLES = {
    "rgb8": (np.uint8, (4, 5, 3)),
    "bgr8": (np.uint8, (4, 5, 3)),
    "rgba8": (np.uint8, (4, 5, 4)),
    "bgra8": (np.uint8, (4, 5, 4)),
    "mono8": (np.uint8, (4, 5)),
    "16UC1": (np.uint16, (4, 5)),
    "32FC1": (np.float32, (4, 5)),
}


#: rclpy messages (the ROS-facing half: `-m ros` runs it on every ROS 2 release) and
#: rosbags messages
FLAVOURS = [pytest.param("rclpy", marks=pytest.mark.ros), "rosbags"]


@pytest.fixture(scope="module")
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _sample(encoding: str) -> np.ndarray:
    dtype, shape = ENCODING_SAMPLES[encoding]
    rng = np.random.default_rng(7)
    if dtype is np.float32:
        return rng.uniform(0.1, 90.0, size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _header(flavour, typestore, frame="camera_optical_frame", sec=12, nanosec=345):
    if flavour == "rclpy":
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)
    H = typestore.types["std_msgs/msg/Header"]
    T = typestore.types["builtin_interfaces/msg/Time"]
    return H(stamp=T(sec=sec, nanosec=nanosec), frame_id=frame)


def _through_wire(msg, flavour, typestore, name):
    """Serialize and deserialize: rclpy via rclpy.serialization, rosbags via CDR."""
    if flavour == "rclpy":
        from rclpy.serialization import deserialize_message, serialize_message

        return deserialize_message(serialize_message(msg), type(msg))
    return typestore.deserialize_cdr(typestore.serialize_cdr(msg, name), name)


def _msg_type(flavour, typestore, name):
    return None if flavour == "rclpy" else typestore.types[name]


@pytest.fixture(autouse=True)
def numpy_path(monkeypatch):
    monkeypatch.setattr(conv, "USE_CV_BRIDGE", False)


# -- stamps ------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stamp_round_trip_by_hand(flavour, typestore):
    """1_500_000_001 ns = 1 s + 500_000_001 ns; the largest int32 second still fits;
    negative stamps and seconds beyond int32 are refused."""
    cls = _msg_type(flavour, typestore, "builtin_interfaces/msg/Time")
    for ns, sec, nanosec in ((1_500_000_001, 1, 500_000_001), (0, 0, 0),
                             (999_999_999, 0, 999_999_999), (10**9, 1, 0),
                             ((2**31 - 1) * 10**9 + 7, 2**31 - 1, 7)):
        t = _through_wire(conv.ns_to_stamp(ns, cls), flavour, typestore,
                          "builtin_interfaces/msg/Time")
        assert (t.sec, t.nanosec) == (sec, nanosec)
        assert conv.stamp_to_ns(t) == ns
    for bad in (-1, -1_500_000_001, 2**31 * 10**9):
        with pytest.raises(ValueError, match="builtin_interfaces/Time"):
            conv.ns_to_stamp(bad, cls)


# -- images ------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("encoding", sorted(ENCODING_SAMPLES))
def test_image_round_trip_every_encoding(encoding, flavour, typestore):
    arr = _sample(encoding)
    msg = conv.numpy_to_image(arr, encoding, _header(flavour, typestore),
                              _msg_type(flavour, typestore, "sensor_msgs/msg/Image"))
    msg = _through_wire(msg, flavour, typestore, "sensor_msgs/msg/Image")
    assert msg.header.frame_id == "camera_optical_frame"
    assert conv.stamp_to_ns(msg.header.stamp) == 12_000_000_345
    assert msg.encoding == encoding
    back = conv.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.ros
def test_rclpy_image_bytes_read_back_with_rosbags(typestore):
    """An rclpy-built message serialized by rclpy is a valid rosbags message (bag replay)."""
    from rclpy.serialization import serialize_message

    arr = _sample("bgr8")
    a = conv.numpy_to_image(arr, "bgr8", _header("rclpy", typestore))
    b = typestore.deserialize_cdr(serialize_message(a), "sensor_msgs/msg/Image")
    assert (b.height, b.width, b.step, b.encoding) == (4, 5, 15, "bgr8")
    np.testing.assert_array_equal(conv.image_to_numpy(b), arr)
    np.testing.assert_array_equal(conv.image_to_rgb(b), arr[..., ::-1])


@pytest.mark.parametrize("encoding,channel_order", [
    ("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]), ("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_image_to_rgb_channel_order(encoding, channel_order, typestore):
    # pixel with R=200, G=100, B=50 stored in the encoding's channel order
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[1, 2] = (200, 100, 50)
    channels = 4 if encoding.endswith("a8") else 3
    native = np.full((2, 3, channels), 255, np.uint8)
    native[..., :3] = rgb[..., channel_order]
    msg = conv.numpy_to_image(native, encoding, None, typestore.types["sensor_msgs/msg/Image"])
    out = conv.image_to_rgb(msg)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert tuple(out[1, 2]) == (200, 100, 50)
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_mono8_to_rgb_repeats_the_channel():
    mono = np.array([[0, 17, 255]], np.uint8)
    out = conv.image_to_rgb(conv.numpy_to_image(mono, "mono8", None))
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, axis=2))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_step_padding_is_skipped(flavour, typestore):
    # 3 rows of 2 rgb8 pixels (6 bytes) padded to step 8 with 0xEE bytes
    arr = np.arange(18, dtype=np.uint8).reshape(3, 2, 3)
    padded = np.full((3, 8), 0xEE, np.uint8)
    padded[:, :6] = arr.reshape(3, 6)
    msg = conv.numpy_to_image(arr, "rgb8", _header(flavour, typestore),
                              _msg_type(flavour, typestore, "sensor_msgs/msg/Image"))
    msg.step = 8
    msg.data = conv._byte_field(padded.tobytes(),
                                _msg_type(flavour, typestore, "sensor_msgs/msg/Image"))
    np.testing.assert_array_equal(conv.image_to_numpy(msg), arr)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), arr)


@pytest.mark.parametrize("flavour", ["rclpy", "rosbags"])
def test_rgb_without_a_copy_is_a_read_only_view_where_the_layout_allows(flavour, typestore):
    """copy=False (the node's decode): rgb8 without padding is the message's own bytes,
    read-only; with padding, or another encoding, an array of its own as before."""
    arr = np.arange(18, dtype=np.uint8).reshape(3, 2, 3)
    kind = _msg_type(flavour, typestore, "sensor_msgs/msg/Image")
    msg = conv.numpy_to_image(arr, "rgb8", _header(flavour, typestore), kind)
    view = conv.image_to_rgb(msg, copy=False)
    np.testing.assert_array_equal(view, arr)
    assert np.shares_memory(view, conv._buffer(msg.data)) and not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0, 0] = 1
    own = conv.image_to_rgb(msg)                            # default: a copy
    assert not np.shares_memory(own, conv._buffer(msg.data)) and own.flags.writeable
    bgr = conv.numpy_to_image(arr, "bgr8", _header(flavour, typestore), kind)
    flipped = conv.image_to_rgb(bgr, copy=False)
    np.testing.assert_array_equal(flipped, arr[..., ::-1])
    assert not np.shares_memory(flipped, conv._buffer(bgr.data))
    padded = np.full((3, 8), 0xEE, np.uint8)
    padded[:, :6] = arr.reshape(3, 6)
    msg.step, msg.data = 8, conv._byte_field(padded.tobytes(), kind)
    out = conv.image_to_rgb(msg, copy=False)
    np.testing.assert_array_equal(out, arr)
    assert not np.shares_memory(out, conv._buffer(msg.data))


def test_bigendian_32fc1(typestore):
    depth = np.array([[1.5, 2.25], [np.nan, 40.0]], np.float32)
    msg = conv.numpy_to_image(depth, "32FC1", None, typestore.types["sensor_msgs/msg/Image"])
    msg.is_bigendian = 1
    msg.data = np.frombuffer(depth.astype(">f4").tobytes(), np.uint8).copy()
    out = conv.image_to_depth(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)
    # read as little endian it would be garbage: the flag matters
    msg.is_bigendian = 0
    assert not np.allclose(conv.image_to_numpy(msg)[0], depth[0])


def test_bigendian_16uc1_millimetres():
    mm = np.array([[1500, 0], [65535, 1]], np.uint16)
    msg = conv.numpy_to_image(mm, "16UC1", None)
    msg.is_bigendian = 1
    msg.data = conv._byte_field(mm.astype(">u2").tobytes(), None)
    out = conv.image_to_depth(msg)
    np.testing.assert_allclose(out, [[1.5, np.nan], [65.535, 0.001]], rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_depth_image_32fc1_and_16uc1(flavour, typestore):
    depth = np.array([[0.5, np.nan, np.inf], [1.2344, 70.0, 2.0]], np.float32)
    mt = _msg_type(flavour, typestore, "sensor_msgs/msg/Image")
    m32 = _through_wire(conv.depth_to_image(depth, _header(flavour, typestore), "32FC1", mt),
                        flavour, typestore, "sensor_msgs/msg/Image")
    assert m32.encoding == "32FC1"
    np.testing.assert_array_equal(conv.image_to_depth(m32), depth)   # NaN and +inf kept
    m16 = _through_wire(conv.depth_to_image(depth, _header(flavour, typestore), "16UC1", mt),
                        flavour, typestore, "sensor_msgs/msg/Image")
    assert m16.encoding == "16UC1"
    np.testing.assert_array_equal(conv.image_to_numpy(m16), [[500, 0, 0], [1234, 0, 2000]])
    # 70 m does not fit in uint16 millimetres -> invalid
    np.testing.assert_allclose(conv.image_to_depth(m16),
                               [[0.5, np.nan, np.nan], [1.234, np.nan, 2.0]], rtol=1e-6)


def test_32fc1_zero_depth_is_invalid():
    depth = np.array([[0.0, -1.0, -np.inf, 3.0]], np.float32)
    out = conv.image_to_depth(conv.depth_to_image(depth, None))
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1])
    assert out[0, 2] == -np.inf and out[0, 3] == 3.0


@pytest.mark.parametrize("fmt,ext,tol", [("jpeg", ".jpg", 12), ("png", ".png", 0),
                                         ("rgb8; jpeg compressed bgr8", ".jpg", 12)])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_compressed_image_decodes_to_rgb(fmt, ext, tol, flavour, typestore):
    import cv2

    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :8] = (220, 30, 30)      # red block left
    rgb[:, 16:] = (30, 30, 220)     # blue block right
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    if flavour == "rclpy":
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(header=_header("rclpy", typestore), format=fmt,
                              data=conv._byte_field(enc.tobytes(), None))
    else:
        C = typestore.types["sensor_msgs/msg/CompressedImage"]
        msg = C(header=_header("rosbags", typestore), format=fmt, data=enc.reshape(-1))
    out = conv.image_to_rgb(msg)
    assert out.shape == rgb.shape
    err = np.abs(out.astype(int) - rgb.astype(int))
    assert err.mean() <= tol / 4                            # JPEG: small loss near edges
    assert err[:, 2:6].max() <= tol and err[:, 18:22].max() <= tol
    assert out[8, 2, 0] > 150 and out[8, 2, 2] < 100       # left stays red (not swapped)


def test_compressed_depth_16uc1(typestore):
    import cv2

    mm = np.array([[1000, 0], [2500, 65535]], np.uint16)
    ok, png = cv2.imencode(".png", mm)
    header = np.zeros(12, np.uint8)
    C = typestore.types["sensor_msgs/msg/CompressedImage"]
    msg = C(header=_header("rosbags", typestore), format="16UC1; compressedDepth png",
            data=np.concatenate([header, png.reshape(-1)]))
    np.testing.assert_allclose(conv.image_to_depth(msg), [[1.0, np.nan], [2.5, 65.535]])


@pytest.mark.ros
def test_cv_bridge_path_matches_numpy_path(monkeypatch):
    pytest.importorskip("cv_bridge")
    arr = _sample("32FC1")
    msg = conv.numpy_to_image(arr, "32FC1", None)
    monkeypatch.setattr(conv, "USE_CV_BRIDGE", True)
    via_bridge = conv.image_to_numpy(msg)
    monkeypatch.setattr(conv, "USE_CV_BRIDGE", False)
    np.testing.assert_array_equal(via_bridge, conv.image_to_numpy(msg))


@pytest.mark.ros
def test_cv_bridge_is_used_for_rclpy_messages_when_importable(monkeypatch):
    """The dispatch: an rclpy message goes to CvBridge when it imports; rosbags never."""
    import sys
    import types

    calls = []

    class FakeBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding):
            calls.append(desired_encoding)
            return np.zeros((msg.height, msg.width), np.float32) + 7

    monkeypatch.setitem(sys.modules, "cv_bridge", types.SimpleNamespace(CvBridge=FakeBridge))
    monkeypatch.setattr(conv, "USE_CV_BRIDGE", True)
    conv._cv_bridge.cache_clear()            # the bridge is looked up once per process
    try:
        msg = conv.numpy_to_image(np.ones((2, 3), np.float32), "32FC1", None)
        assert (conv.image_to_numpy(msg) == 7).all() and calls == ["passthrough"]
        assert (conv.image_to_numpy(msg) == 7).all() and calls == ["passthrough"] * 2
        monkeypatch.setattr(conv, "USE_CV_BRIDGE", False)
        assert (conv.image_to_numpy(msg) == 1).all()
    finally:
        conv._cv_bridge.cache_clear()


# -- bad images --------------------------------------------------------------------------
def test_unknown_encoding_is_named(typestore):
    msg = conv.numpy_to_image(_sample("rgb8"), "rgb8", None)
    msg.encoding = "yuv422_yuy2"
    with pytest.raises(ValueError, match="unknown encoding 'yuv422_yuy2'.*expected one of"):
        conv.image_to_numpy(msg)
    with pytest.raises(ValueError, match="unknown encoding 'yuv422_yuy2'"):
        conv.image_to_rgb(msg)
    with pytest.raises(ValueError, match="unknown encoding 'nv12'"):
        conv.numpy_to_image(_sample("rgb8"), "nv12", None)


def test_bad_image_layouts():
    msg = conv.numpy_to_image(_sample("rgb8"), "rgb8", None)       # 4x5 rgb8, step 15
    msg.step = 14
    with pytest.raises(ValueError, match="step 14 is smaller than width"):
        conv.image_to_numpy(msg)
    msg.step = 15
    msg.data = conv._byte_field(bytes(59), None)
    with pytest.raises(ValueError, match="data has 59 bytes, expected step\\*height = 15\\*4"):
        conv.image_to_numpy(msg)
    msg.height = msg.width = 0
    with pytest.raises(ValueError, match="empty 0x0 image"):
        conv.image_to_numpy(msg)
    with pytest.raises(ValueError, match="expects dtype uint8"):
        conv.numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8", None)
    with pytest.raises(ValueError, match=r"expects an array \[H,W,3\]"):
        conv.numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8", None)


def test_depth_vs_colour_confusion_is_explained():
    with pytest.raises(ValueError, match="is depth.*use image_to_depth"):
        conv.image_to_rgb(conv.depth_to_image(np.ones((2, 2)), None))
    with pytest.raises(ValueError, match="'rgb8' is not depth"):
        conv.image_to_depth(conv.numpy_to_image(_sample("rgb8"), "rgb8", None))


def test_corrupt_compressed_image(typestore):
    C = typestore.types["sensor_msgs/msg/CompressedImage"]
    msg = C(header=_header("rosbags", typestore, frame="cam"), format="jpeg",
            data=np.arange(50, dtype=np.uint8))
    with pytest.raises(ValueError, match="frame_id 'cam', format 'jpeg'.*could not be decoded"):
        conv.image_to_rgb(msg)


# -- camera info -------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_camera_info_round_trip(flavour, typestore):
    intr = Intrinsics(fx=721.5, fy=719.25, cx=609.5, cy=172.75, width=1242, height=375)
    msg = conv.intrinsics_to_camera_info(
        intr, _header(flavour, typestore), _msg_type(flavour, typestore,
                                                     "sensor_msgs/msg/CameraInfo"))
    msg = _through_wire(msg, flavour, typestore, "sensor_msgs/msg/CameraInfo")
    assert conv.camera_info_to_intrinsics(msg) == intr
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], intr.K)


def test_camera_info_binning_and_roi(typestore):
    intr = Intrinsics(fx=400.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)
    msg = conv.intrinsics_to_camera_info(intr, None, typestore.types["sensor_msgs/msg/CameraInfo"])
    msg.binning_x = msg.binning_y = 2
    out = conv.camera_info_to_intrinsics(msg)
    assert (out.fx, out.cx, out.cy, out.width, out.height) == (200.0, 160.0, 120.0, 320, 240)
    msg.binning_x = msg.binning_y = 0
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 50, 200, 100
    out = conv.camera_info_to_intrinsics(msg)
    assert (out.cx, out.cy, out.width, out.height) == (220.0, 190.0, 200, 100)


def test_camera_info_zero_k_is_rejected(typestore):
    C = typestore.types["sensor_msgs/msg/CameraInfo"]
    msg = conv.intrinsics_to_camera_info(Intrinsics(1, 1, 1, 1, 4, 3),
                                         _header("rosbags", typestore, frame="front_cam"), C)
    msg.k = np.zeros(9)
    with pytest.raises(ValueError, match="frame_id 'front_cam'.*K is .*not calibrated"):
        conv.camera_info_to_intrinsics(msg)
    msg.k = np.eye(3).reshape(-1)
    msg.width = 0
    with pytest.raises(ValueError, match="image size 0x3"):
        conv.camera_info_to_intrinsics(msg)


# -- point clouds ------------------------------------------------------------------------
INTR = Intrinsics(fx=2.0, fy=4.0, cx=1.5, cy=1.0, width=4, height=3)


def _depth():
    d = np.array([[1.0, 2.0, 3.0, 4.0],
                  [5.0, np.nan, 7.0, 0.0],
                  [9.0, 10.0, np.inf, 12.0]], np.float32)
    return d


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_depth_to_cloud_matches_hand_backprojection(flavour, typestore):
    msg = conv.depth_to_cloud(_depth(), INTR, _header(flavour, typestore),
                              msg_type=_msg_type(flavour, typestore,
                                                 "sensor_msgs/msg/PointCloud2"))
    msg = _through_wire(msg, flavour, typestore, "sensor_msgs/msg/PointCloud2")
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (3, 4, 16, 64)
    assert msg.is_dense is False and msg.header.frame_id == "camera_optical_frame"
    pts = conv.cloud_to_numpy(msg).reshape(3, 4, 3)
    # pixel (u=0, v=0), z=1: X=(0-1.5)*1/2=-0.75, Y=(0-1)*1/4=-0.25
    np.testing.assert_allclose(pts[0, 0], [-0.75, -0.25, 1.0])
    # pixel (u=3, v=0), z=4: X=(3-1.5)*4/2=3, Y=(0-1)*4/4=-1
    np.testing.assert_allclose(pts[0, 3], [3.0, -1.0, 4.0])
    # pixel (u=1, v=2), z=10: X=(1-1.5)*10/2=-2.5, Y=(2-1)*10/4=2.5
    np.testing.assert_allclose(pts[2, 1], [-2.5, 2.5, 10.0])
    # NaN, zero and +inf depth are NaN points
    assert np.isnan(pts[1, 1]).all() and np.isnan(pts[1, 3]).all() and np.isnan(pts[2, 2]).all()
    np.testing.assert_allclose(pts[..., 2][np.isfinite(pts[..., 2])],
                               [1, 2, 3, 4, 5, 7, 9, 10, 12])


def test_depth_to_cloud_stride_uses_original_pixel_coordinates():
    msg = conv.depth_to_cloud(_depth(), INTR, None, stride=2)
    assert (msg.height, msg.width) == (2, 2)
    pts = conv.cloud_to_numpy(msg).reshape(2, 2, 3)
    # samples at (u,v) = (0,0), (2,0), (0,2), (2,2)
    np.testing.assert_allclose(pts[0, 1], [(2 - 1.5) * 3.0 / 2, (0 - 1) * 3.0 / 4, 3.0])
    np.testing.assert_allclose(pts[1, 0], [(0 - 1.5) * 9.0 / 2, (2 - 1) * 9.0 / 4, 9.0])
    assert np.isnan(pts[1, 1]).all()   # inf depth at (2,2)


def test_depth_to_cloud_max_range_and_skipping_nans(typestore):
    msg = conv.depth_to_cloud(_depth(), INTR, None, max_range=7.0)
    z = conv.cloud_to_numpy(msg)[:, 2].reshape(3, 4)
    assert np.isnan(z[2]).all() and z[1, 2] == 7.0 and np.isnan(z[1, 3])
    flat = conv.depth_to_cloud(_depth(), INTR, None, max_range=7.0, organized=False,
                               msg_type=typestore.types["sensor_msgs/msg/PointCloud2"])
    assert (flat.height, flat.width, flat.is_dense) == (1, 6, True)
    pts = conv.cloud_to_numpy(flat)
    np.testing.assert_allclose(pts[:, 2], [1, 2, 3, 4, 5, 7])
    np.testing.assert_allclose(pts[5], [(2 - 1.5) * 7 / 2, (1 - 1) * 7 / 4, 7.0])


def test_rgb_packing_is_bit_exact(typestore):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0, 0] = (0x12, 0x34, 0x56)
    rgb[2, 3] = (255, 0, 128)
    msg = conv.depth_to_cloud(_depth(), INTR, None, rgb=rgb,
                              msg_type=typestore.types["sensor_msgs/msg/PointCloud2"])
    msg = _through_wire(msg, "rosbags", typestore, "sensor_msgs/msg/PointCloud2")
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12] and msg.point_step == 16
    raw = np.frombuffer(msg.data.tobytes(), dtype="<u4").reshape(3, 4, 4)
    assert raw[0, 0, 3] == 0x00123456
    assert raw[2, 3, 3] == 0x00FF0080
    packed = conv.cloud_to_numpy(msg, ("rgb",))[:, 0]
    np.testing.assert_array_equal(conv.unpack_rgb(packed).reshape(3, 4, 3), rgb)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_points_to_cloud_round_trip(flavour, typestore):
    pts = np.array([[1, 2, 3, 0.5], [-4, 5.5, 6, 0.25]], np.float32)
    msg = conv.points_to_cloud(pts, ("x", "y", "z", "intensity"), _header(flavour, typestore),
                               _msg_type(flavour, typestore, "sensor_msgs/msg/PointCloud2"))
    msg = _through_wire(msg, flavour, typestore, "sensor_msgs/msg/PointCloud2")
    np.testing.assert_array_equal(conv.cloud_to_numpy(msg, ("x", "y", "z", "intensity")), pts)
    np.testing.assert_array_equal(conv.cloud_to_numpy(msg, ("intensity", "x")), pts[:, [3, 0]])


def test_cloud_offsets_datatypes_and_bigendian(typestore):
    """A foreign layout: point_step 20, z before x, float64 y, big endian, row padding."""
    P = typestore.types["sensor_msgs/msg/PointCloud2"]
    F = typestore.types["sensor_msgs/msg/PointField"]
    dt = np.dtype({"names": ["z", "x", "y"], "formats": [">f4", ">f4", ">f8"],
                   "offsets": [0, 4, 12], "itemsize": 20})
    pts = np.zeros(2, dtype=dt)
    pts["x"], pts["y"], pts["z"] = [1.5, -2.0], [3.25, 4.0], [10.0, 20.0]
    data = np.concatenate([np.frombuffer(pts.tobytes(), np.uint8), np.zeros(4, np.uint8)])
    msg = P(header=_header("rosbags", typestore), height=1, width=2,
            fields=[F(name="z", offset=0, datatype=7, count=1),
                    F(name="x", offset=4, datatype=7, count=1),
                    F(name="y", offset=12, datatype=8, count=1)],
            is_bigendian=True, point_step=20, row_step=44, data=data, is_dense=True)
    np.testing.assert_array_equal(conv.cloud_to_numpy(msg),
                                  [[1.5, 3.25, 10.0], [-2.0, 4.0, 20.0]])


def test_bad_clouds():
    with pytest.raises(ValueError, match=r"no field\(s\) \['intensity'\].*has \['x', 'y', 'z'\]"):
        conv.cloud_to_numpy(conv.points_to_cloud(np.zeros((2, 3)), "xyz", None),
                            ("x", "intensity"))
    msg = conv.points_to_cloud(np.zeros((2, 3)), "xyz", None)
    msg.data = conv._byte_field(bytes(20), None)
    with pytest.raises(ValueError, match="data has 20 bytes, expected row_step"):
        conv.cloud_to_numpy(msg)
    with pytest.raises(ValueError, match="does not match intrinsics 4x3"):
        conv.depth_to_cloud(np.ones((4, 4)), INTR, None)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv.depth_to_cloud(_depth(), INTR, None, stride=0)
    with pytest.raises(ValueError, match=r"rgb must be \[H,W,3\] uint8"):
        conv.depth_to_cloud(_depth(), INTR, None, rgb=np.zeros((3, 4, 3), np.float32))
