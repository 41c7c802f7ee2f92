"""A distorted camera through the depth node over real DDS: the node rectifies the image
before the model, and the published depth, cloud and CameraInfo describe the rectified
camera (D = 0, K = P of the input), checked by decoding the cloud the sensor_msgs_py way
and back-projecting with the published K (x = (u - cx) z / fx)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from depth_perception import conversions  # noqa: E402
from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.rectify import Calibration, distortion_maps  # noqa: E402
from support.rostools import RosHarness, header, image_msg, stamp_ns  # noqa: E402

from test_node import META, make_factory, start_node  # noqa: E402

pytestmark = pytest.mark.ros

W, H = 64, 48
#: the rectified (pinhole) camera: P of the input
PIN = Intrinsics(fx=40.0, fy=40.0, cx=31.5, cy=23.5, width=W, height=H)
LENS = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0))

# sensor_msgs/PointField datatypes -> numpy (sensor_msgs_py.point_cloud2's table)
_POINTFIELD = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def read_points(cloud) -> np.ndarray:
    """sensor_msgs_py.point_cloud2.read_points_numpy where importable, else the same
    decoding: a structured dtype from the fields (names, datatypes, offsets) with
    itemsize point_step over the message bytes, endianness from is_bigendian."""
    try:
        from sensor_msgs_py import point_cloud2
        return point_cloud2.read_points_numpy(cloud, ("x", "y", "z"))
    except ImportError:
        pass
    order = ">" if cloud.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in cloud.fields],
                      "formats": [order + _POINTFIELD[f.datatype] for f in cloud.fields],
                      "offsets": [f.offset for f in cloud.fields],
                      "itemsize": cloud.point_step})
    rows = np.frombuffer(bytes(cloud.data), dtype, count=cloud.width * cloud.height)
    return np.stack([rows["x"], rows["y"], rows["z"]], axis=1).astype(np.float64)


def pinhole_scene() -> np.ndarray:
    """What the rectified camera sees: red grows with the column (depth 1 + 30 red/255)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.round(np.linspace(20, 150, W))[None, :].astype(np.uint8)
    rgb[..., 1] = 80
    return rgb


def distorted(rgb: np.ndarray) -> np.ndarray:
    import cv2

    mx, my = distortion_maps(LENS)
    return cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


def feed(ros, cal: Calibration, rgb: np.ndarray, until, t: int) -> int:
    """Publish (CameraInfo of ``cal``, ``rgb``) frames from stamp ``t`` on until the
    collector ``until`` has an output with that stamp (DDS may lose the first ones)."""
    from sensor_msgs.msg import CameraInfo, Image

    image_pub, info_pub = ros.publisher(Image, "/image"), ros.publisher(CameraInfo, "/camera_info")
    ros.wait_matched(image_pub)
    ros.wait_matched(info_pub)
    for _ in range(100):
        info_pub.publish(conversions.calibration_to_camera_info(cal, header(t)))
        image_pub.publish(image_msg(rgb, t))
        try:
            until.wait(lambda ms: any(stamp_ns(m) == t for m in ms), timeout=0.5)
            return t
        except AssertionError:
            t += 50_000_000
    raise AssertionError(f"no output on {until.topic}")


def pick(out, t: int):
    return next(m for m in out.wait(lambda ms: any(stamp_ns(m) == t for m in ms))
                if stamp_ns(m) == t)


def run_one(ros, cal: Calibration = LENS, **params):
    """Start the node, feed the distorted frame (a camera of calibration ``cal``) until
    depth, CameraInfo and cloud of one stamp arrive; returns (depth [H,W], CameraInfo,
    cloud)."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    node = start_node(ros, META, **params)
    depth_out = ros.collect(Image, "/depth/image")
    info_out = ros.collect(CameraInfo, "/depth/camera_info")
    points_out = ros.collect(PointCloud2, "/points")
    ros.wait_subscribed(points_out)
    t = feed(ros, cal, distorted(pinhole_scene()), points_out, 1_800_000_000_000_000_000)
    assert node.stats.bad["camera_info"] == 0
    return conversions.image_to_depth(pick(depth_out, t)), pick(info_out, t), pick(points_out, t)


def test_distorted_input_gives_the_rectified_camera_and_its_cloud(ros):
    depth, info, cloud = run_one(ros)
    # 1. the depth CameraInfo is the rectified camera: D = 0, R = I, K = P[:3,:3] = input P
    assert list(info.d) == [0.0] * 5 and info.distortion_model == "plumb_bob"
    np.testing.assert_allclose(np.reshape(info.r, (3, 3)), np.eye(3))
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), PIN.K)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], PIN.K)
    # 2. the model saw the rectified image: depth follows the pinhole scene's columns
    #    (1 + 30 * red / 255), also near the edges where the raw image is 5+ px off
    expected = 1.0 + 30.0 * pinhole_scene()[..., 0].astype(np.float32) / 255.0
    inner = (slice(4, H - 4), slice(4, W - 4))
    # (within 0.15 m, under one column step of 0.235 m; the raw image is 3+ columns off
    # near the edges; the rest is uint8 rounding through two remaps and the model resize)
    np.testing.assert_allclose(depth[inner], expected[inner], rtol=0, atol=0.15)
    # 3. the cloud, decoded as sensor_msgs_py does, back-projects with the published K
    fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
    xyz = read_points(cloud).reshape(cloud.height, cloud.width, 3)
    assert (cloud.height, cloud.width) == (H, W)
    u = np.arange(W)[None, :].repeat(H, 0)
    v = np.arange(H)[:, None].repeat(W, 1)
    z = xyz[..., 2]
    ok = np.isfinite(z)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(z[ok], depth[ok], rtol=1e-6)
    np.testing.assert_allclose(xyz[..., 0][ok], ((u - cx) * z / fx)[ok], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xyz[..., 1][ok], ((v - cy) * z / fy)[ok], rtol=1e-5, atol=1e-5)
    # a left-column point lies left of the optical axis (x < 0), a bottom one below (y > 0)
    assert xyz[H // 2, 2, 0] < 0 < xyz[H - 3, W // 2, 1]


def test_ignoring_the_distortion_puts_edge_depth_in_the_wrong_place(ros):
    depth, info, _ = run_one(ros, input_image="ignore_distortion")
    expected = 1.0 + 30.0 * pinhole_scene()[..., 0].astype(np.float32) / 255.0
    # a barrel lens squeezes the edges toward the centre: column 4's depth is what the
    # pinhole camera sees several columns further out
    err = np.abs(depth[H // 2, 4] - expected[H // 2, 4])
    assert err > 0.5


def test_image_rect_input_uses_p(ros):
    """input_image=rectified: described by P (here K differs from P), no second rectification."""
    from sensor_msgs.msg import CameraInfo, Image

    start_node(ros, META, input_image="rectified")
    info_out = ros.collect(CameraInfo, "/depth/camera_info")
    depth_out = ros.collect(Image, "/depth/image")
    ros.wait_subscribed(depth_out)
    cal = Calibration(W, H, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0),
                      (55.0, 0.0, 30.0, 0.0, 55.0, 22.0, 0.0, 0.0, 1.0),
                      P=tuple(np.hstack([PIN.K, np.zeros((3, 1))]).reshape(-1)))
    t = feed(ros, cal, pinhole_scene(), depth_out, 1_900_000_000_000_000_000)
    np.testing.assert_allclose(np.reshape(pick(info_out, t).k, (3, 3)), PIN.K)
    depth = conversions.image_to_depth(pick(depth_out, t))
    expected = 1.0 + 30.0 * pinhole_scene()[..., 0].astype(np.float32) / 255.0
    # not warped again (the model resize 64x48 -> 56x42 -> back costs < 0.08 m)
    np.testing.assert_allclose(depth, expected, rtol=0, atol=0.08)


def test_coloured_cloud_takes_the_rectified_colours(ros):
    """point_rgb: the model input is resampled straight from the raw image, so the node
    rectifies the colours at full size for the cloud: each point's colour is the pinhole
    scene's at its pixel. At the centre row, column 4 (x = -0.6875) sees through the lens
    the rectified x_u with x_u (1 - 0.3 x_u^2) = -0.6875, x_u = -0.922, u = -5.4: beyond
    the left edge, red 20 in the raw image; the rectified colour is the pinhole red there,
    20 + 130 * 4 / 63 = 28.3."""
    _, _, cloud = run_one(ros, point_rgb=True)
    names = [f.name for f in cloud.fields]
    assert "rgb" in names
    field = cloud.fields[names.index("rgb")]
    rows = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.height * cloud.width,
                                                              cloud.point_step)
    packed = rows[:, field.offset:field.offset + 4].copy().view("<f4")[:, 0]
    rgb = conversions.unpack_rgb(packed).reshape(cloud.height, cloud.width, 3)
    scene = pinhole_scene().astype(int)
    inner = (slice(4, H - 4), slice(4, W - 4))
    assert np.abs(rgb[inner].astype(int) - scene[inner]).max() <= 3
    assert abs(int(rgb[H // 2, 4, 0]) - 28) <= 2
    assert abs(int(distorted(pinhole_scene())[H // 2, 4, 0]) - 20) <= 1   # the raw pixel


def test_rgb_image_rect_color_is_the_colour_in_the_depths_geometry(ros):
    """rgb/image_rect_color (rviz DepthCloud's colour): the distorted input rectified to
    the depth's camera, beside rgb/camera_info = depth/camera_info. Column 4 of the centre
    row: red 28 (rectified, see above), where the raw image has 20."""
    from sensor_msgs.msg import CameraInfo, Image

    start_node(ros, META)
    rgb_out = ros.collect(Image, "/rgb/image_rect_color")
    rgb_info_out = ros.collect(CameraInfo, "/rgb/camera_info")
    info_out = ros.collect(CameraInfo, "/depth/camera_info")
    for out in (rgb_out, rgb_info_out, info_out):
        ros.wait_subscribed(out)
    t = feed(ros, LENS, distorted(pinhole_scene()), rgb_out, 2_000_000_000_000_000_000)
    msg = pick(rgb_out, t)
    assert (msg.encoding, msg.header.frame_id) == ("rgb8", "camera_optical_frame")
    rgb = conversions.image_to_rgb(msg).astype(int)
    scene = pinhole_scene().astype(int)
    inner = (slice(4, H - 4), slice(4, W - 4))
    assert np.abs(rgb[inner] - scene[inner]).max() <= 3
    assert abs(rgb[H // 2, 4, 0] - 28) <= 2
    rgb_info, info = pick(rgb_info_out, t), pick(info_out, t)
    assert (list(rgb_info.k), list(rgb_info.p), list(rgb_info.d)) == (
        list(info.k), list(info.p), list(info.d))
    np.testing.assert_allclose(np.reshape(rgb_info.k, (3, 3)), PIN.K)


def depth_image_proc_xyz(depth: np.ndarray, info) -> np.ndarray:
    """depth_image_proc::convertDepth (point_cloud_xyz) for 32FC1 metres: image_geometry's
    fx() = P(0,0), cx() = P(0,2), fy() = P(1,1), cy() = P(1,2); Tx = P(0,3) unused;
    X = (u - cx) z / fx, Y = (v - cy) z / fy; NaN stays NaN. [H,W,3]."""
    cx, cy = np.float32(info.p[2]), np.float32(info.p[6])
    kx, ky = np.float32(1.0 / info.p[0]), np.float32(1.0 / info.p[5])
    u = np.arange(depth.shape[1], dtype=np.float32)[None, :]
    v = np.arange(depth.shape[0], dtype=np.float32)[:, None]
    return np.dstack([(u - cx) * depth * kx, (v - cy) * depth * ky, depth])


def test_right_camera_of_a_stereo_pair_keeps_tx_and_its_cloud_is_depth_image_procs(ros):
    """The right camera of a stereo pair (baseline B = 0.12 m): P[0,3] = Tx = -fx B =
    -40 * 0.12 = -4.8. image_proc rectifies with P[:3,:3] (Tx does not move a pixel), so
    the depth is that of the Tx = 0 camera; depth/camera_info carries Tx = -4.8 on (as
    image_geometry reads the input); the cloud is in the right camera's own frame, as
    depth_image_proc computes it from depth + depth/camera_info (Tx unused): the centre
    column's x is 0, not B."""
    right = Calibration.pinhole(PIN, "plumb_bob", (-0.3, 0.0, 0.0, 0.0, 0.0),
                                tx_ty=(-40.0 * 0.12, 0.0))
    depth, info, cloud = run_one(ros, right)
    P = np.reshape(info.p, (3, 4))
    assert P[0, 3] == pytest.approx(-4.8) and P[1, 3] == 0.0 and P[2, 3] == 0.0
    np.testing.assert_allclose(P[:, :3], PIN.K)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), PIN.K)
    assert not any(info.d)
    # the model saw the same rectified image as for the monocular lens
    expected = 1.0 + 30.0 * pinhole_scene()[..., 0].astype(np.float32) / 255.0
    inner = (slice(4, H - 4), slice(4, W - 4))
    np.testing.assert_allclose(depth[inner], expected[inner], rtol=0, atol=0.15)
    xyz = read_points(cloud).reshape(H, W, 3)
    ref = depth_image_proc_xyz(depth, info)
    ok = np.isfinite(ref[..., 2])
    assert ok.mean() > 0.9
    np.testing.assert_allclose(xyz[ok], ref[ok], rtol=1e-5, atol=1e-5)
    # pixel (31.5, 23.5) is the optical axis: between columns 31 and 32, x = -/+ z/80
    z = xyz[H // 2, 31, 2]
    assert xyz[H // 2, 31, 0] == pytest.approx(-0.5 * z / 40.0, abs=1e-5)
