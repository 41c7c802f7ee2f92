"""Helpers to hand-make small rosbag2 files (mcap or sqlite3) in tests, with rosbags."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from depth_perception import conversions as conv
from depth_perception.camera import Intrinsics
from depth_perception.data.tf import make_transform, matrix_to_quat

#: optical frame axes in base_link: x_opt = -y_base, y_opt = -z_base, z_opt = x_base
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class BagBuilder:
    """Collects messages, writes them sorted by receive time on :meth:`write`."""

    def __init__(self, path: Path, storage: str = "mcap", condition: str | None = None):
        self.path = Path(path)
        self.storage = storage
        self.condition = condition
        self.ts = typestore()
        self.T = self.ts.types
        self._msgs: list[tuple[str, str, int, object]] = []  # topic, type, time, msg

    # -- message builders -------------------------------------------------------------
    def header(self, stamp_ns: int, frame_id: str):
        return self.T["std_msgs/msg/Header"](
            stamp=self.T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9),
                                                        nanosec=int(stamp_ns % 10**9)),
            frame_id=frame_id)

    def add(self, topic: str, msg, stamp_ns: int) -> None:
        self._msgs.append((topic, msg.__msgtype__, int(stamp_ns), msg))

    def image(self, stamp_ns, rgb, topic="/camera/image_raw", frame="camera_optical_frame",
              encoding="rgb8"):
        arr = rgb
        if encoding == "bgr8":
            arr = np.ascontiguousarray(rgb[..., ::-1])
        self.add(topic, conv.numpy_to_image(arr, encoding, self.header(stamp_ns, frame),
                                            self.T["sensor_msgs/msg/Image"]), stamp_ns)

    def compressed_image(self, stamp_ns, rgb, topic="/camera/image_raw/compressed",
                         frame="camera_optical_frame", fmt="png"):
        import cv2

        ok, enc = cv2.imencode("." + ("jpg" if fmt == "jpeg" else fmt),
                               cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        msg = self.T["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame), format=fmt, data=enc.reshape(-1))
        self.add(topic, msg, stamp_ns)

    def camera_info(self, stamp_ns, intr: Intrinsics, topic="/camera/camera_info",
                    frame="camera_optical_frame"):
        self.add(topic, conv.intrinsics_to_camera_info(
            intr, self.header(stamp_ns, frame), self.T["sensor_msgs/msg/CameraInfo"]), stamp_ns)

    def depth(self, stamp_ns, depth, topic="/ground_truth/depth", frame="camera_optical_frame"):
        self.add(topic, conv.depth_to_image(depth, self.header(stamp_ns, frame), "32FC1",
                                            self.T["sensor_msgs/msg/Image"]), stamp_ns)

    def cloud(self, stamp_ns, points, topic="/lidar/points", frame="lidar"):
        pts = np.asarray(points, np.float32)
        if pts.shape[1] == 3:
            pts = np.concatenate([pts, np.ones((len(pts), 1), np.float32)], axis=1)
        self.add(topic, conv.points_to_cloud(pts, ("x", "y", "z", "intensity"),
                                             self.header(stamp_ns, frame),
                                             self.T["sensor_msgs/msg/PointCloud2"]), stamp_ns)

    def _transform(self, T):
        T = np.asarray(T, np.float64)
        q = matrix_to_quat(T[:3, :3])
        V = self.T["geometry_msgs/msg/Vector3"]
        Q = self.T["geometry_msgs/msg/Quaternion"]
        return self.T["geometry_msgs/msg/Transform"](
            translation=V(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            rotation=Q(x=q[0], y=q[1], z=q[2], w=q[3]))

    def tf(self, stamp_ns, edges, static=False):
        """edges: [(parent, child, T_parent_child)] in one TFMessage."""
        TS = self.T["geometry_msgs/msg/TransformStamped"]
        msg = self.T["tf2_msgs/msg/TFMessage"](transforms=[
            TS(header=self.header(stamp_ns, parent), child_frame_id=child,
               transform=self._transform(T)) for parent, child, T in edges])
        self.add("/tf_static" if static else "/tf", msg, stamp_ns)

    def odom(self, stamp_ns, T_odom_base, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0),
             topic="/odom"):
        T = np.asarray(T_odom_base, np.float64)
        q = matrix_to_quat(T[:3, :3])
        P = self.T["geometry_msgs/msg/Point"]
        Q = self.T["geometry_msgs/msg/Quaternion"]
        V = self.T["geometry_msgs/msg/Vector3"]
        pose = self.T["geometry_msgs/msg/PoseWithCovariance"](
            pose=self.T["geometry_msgs/msg/Pose"](position=P(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                                  orientation=Q(x=q[0], y=q[1], z=q[2], w=q[3])),
            covariance=np.zeros(36))
        twist = self.T["geometry_msgs/msg/TwistWithCovariance"](
            twist=self.T["geometry_msgs/msg/Twist"](linear=V(x=linear[0], y=linear[1],
                                                             z=linear[2]),
                                                    angular=V(x=angular[0], y=angular[1],
                                                              z=angular[2])),
            covariance=np.zeros(36))
        msg = self.T["nav_msgs/msg/Odometry"](header=self.header(stamp_ns, "odom"),
                                              child_frame_id="base_link", pose=pose, twist=twist)
        self.add(topic, msg, stamp_ns)

    # -- writing ----------------------------------------------------------------------
    def write(self) -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(self.path, version=9, storage_plugin=plugin) as writer:
            if self.condition is not None:
                writer.set_custom_data("condition", self.condition)
            conns = {}
            for topic, msgtype, stamp, msg in sorted(self._msgs, key=lambda m: m[2]):
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=self.ts)
                writer.write(conns[topic], stamp, self.ts.serialize_cdr(msg, msgtype))
        return self.path


# ---------------------------------------------------------------------------------------
# a small drive: known rig, known motion, textured frames with a bright dot
# ---------------------------------------------------------------------------------------
CAM_IN_BASE = make_transform((1.0, 0.0, 1.5), matrix_to_quat(R_BASE_OPTICAL))
LIDAR_IN_BASE = make_transform((0.0, 0.0, 2.0))
INTRINSICS = Intrinsics(fx=100.0, fy=100.0, cx=64.0, cy=48.0, width=128, height=96)


def frame_image(k: int, width=128, height=96, dot=None, background=None) -> np.ndarray:
    """Deterministic textured RGB frame number k (uniform grey ``background`` instead
    when given); optional bright 3x3 dot centred on pixel (u, v)."""
    u = np.arange(width)[None, :]
    v = np.arange(height)[:, None]
    img = np.zeros((height, width, 3), np.uint8)
    if background is not None:
        img[:] = background
    else:
        img[..., 0] = (u * 2 + k * 3) % 200
        img[..., 1] = (v * 2 + k * 5) % 200
        img[..., 2] = ((u + v + k) % 16) * 8
    if dot is not None:
        du, dv = dot
        img[dv - 1:dv + 2, du - 1:du + 2] = 255
    return img


def make_drive_bag(path: Path, storage="mcap", n=8, fps=10.0, speed=2.0, t0_ns=10**9,
                   drop_frames=(), static_frames=(), lidar_points=None, lidar_offset_ns=0,
                   condition="day-clear", compressed=False, with_gt=True, dot=None,
                   intrinsics=INTRINSICS, odom_in_tf=False, camera_info_k=None,
                   background=None) -> Path:
    """A straight drive along +x at ``speed`` m/s (0 for ``static_frames``).

    Frames k (not in ``drop_frames``) at t0 + k/fps; odometry at every frame stamp and
    half way between; static TF base_link->camera_optical_frame and base_link->lidar;
    one LiDAR scan per frame (``lidar_points`` in the lidar frame) stamped
    ``lidar_offset_ns`` after the image; ground-truth depth of 10 m everywhere.
    """
    b = BagBuilder(path, storage, condition)
    period = int(round(1e9 / fps))
    b.tf(t0_ns, [("base_link", "camera_optical_frame", CAM_IN_BASE),
                 ("base_link", "lidar", LIDAR_IN_BASE)], static=True)
    x = 0.0
    xs = []
    for k in range(n + 1):
        xs.append(x)
        x += (0.0 if k in static_frames else speed) / fps
    for k in range(n):
        t = t0_ns + k * period
        v = 0.0 if k in static_frames else speed
        for dt, xx in ((0, xs[k]), (period // 2, (xs[k] + xs[k + 1]) / 2)):
            T = make_transform((xx, 0.0, 0.0))
            if odom_in_tf:
                b.tf(t + dt, [("odom", "base_link", T)])
            else:
                b.odom(t + dt, T, linear=(v, 0.0, 0.0))
        if k in drop_frames:
            continue
        img = frame_image(k, intrinsics.width, intrinsics.height, dot, background)
        if compressed:
            b.compressed_image(t, img)
        else:
            b.image(t, img)
        info = intrinsics
        b.camera_info(t, info)
        if camera_info_k is not None:
            b._msgs[-1][3].k = np.asarray(camera_info_k, np.float64)
        if lidar_points is not None:
            b.cloud(t + lidar_offset_ns, lidar_points)
        if with_gt:
            b.depth(t, np.full((intrinsics.height, intrinsics.width), 10.0, np.float32))
    return b.write()


def copy_bag_with_scaled_depth(src: Path, dst: Path, factor: float,
                               source_topic: str = "/ground_truth/depth",
                               topic: str = "/ground_truth/depth_scaled") -> Path:
    """Copy a bag (all messages, its condition) and add ``topic`` = source depth * factor."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from depth_perception import conversions
    from depth_perception.data.bag import read_bag_metadata

    ts = get_typestore(Stores.ROS2_KILTED)
    meta = read_bag_metadata(src)
    plugin = (StoragePlugin.MCAP if meta.get("storage_identifier") == "mcap"
              else StoragePlugin.SQLITE3)
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=plugin) as writer:
        for key, value in (meta.get("custom_data") or {}).items():
            writer.set_custom_data(key, value)
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=ts)
                 for c in reader.connections}
        Image = ts.types["sensor_msgs/msg/Image"]
        scaled = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=ts)
        for conn, t, raw in reader.messages():
            writer.write(conns[conn.id], t, raw)
            if conn.topic == source_topic:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                depth = conversions.image_to_depth(msg) * np.float32(factor)
                out = conversions.depth_to_image(depth, msg.header, "32FC1", Image)
                writer.write(scaled, t, ts.serialize_cdr(out, "sensor_msgs/msg/Image"))
    return dst
