"""Writing rosbag2 recordings with ``rosbags``: the message builders and bag plumbing
that the synthetic drives (:mod:`depth_perception.synth.writer`) and the dataset
imports (:mod:`depth_perception.datasets`) share.

:class:`BagMessages` builds headers, TF, odometry; :func:`compressed_image` encodes
images as image_transport does; :func:`transient_local_qos` is the QoS of a latched
``/tf_static``; :func:`publish_bag` moves a complete bag from its hidden temporary
folder to its final name.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

#: camera image transport: raw sensor_msgs/Image rgb8, or CompressedImage on
#: ``<image topic>/compressed`` (image_transport's format string)
IMAGE_FORMATS = {"raw": None, "jpeg": "rgb8; jpeg compressed bgr8",
                 "png": "rgb8; png compressed bgr8"}
JPEG_QUALITY = 90
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"


class BagMessages:
    """Builds bag messages with a rosbags typestore (ROS 2 Kilted definitions).

    msg_types: {key: message type} that :meth:`serialize` looks keys up in.
    """

    def __init__(self, msg_types: dict[str, str]):
        self.msg_types = dict(msg_types)
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.T = self.typestore.types

    def serialize(self, msg, key: str) -> bytes:
        return bytes(self.typestore.serialize_cdr(msg, self.msg_types[key]))

    def header(self, stamp_ns: int, frame_id: str):
        from depth_perception.conversions import ns_to_stamp

        return self.T["std_msgs/msg/Header"](
            stamp=ns_to_stamp(stamp_ns, self.T["builtin_interfaces/msg/Time"]),
            frame_id=frame_id)

    def _pose_parts(self, T: np.ndarray):
        from depth_perception.data.tf import matrix_to_quat

        q = matrix_to_quat(T[:3, :3])
        V = self.T["geometry_msgs/msg/Vector3"]
        Q = self.T["geometry_msgs/msg/Quaternion"]
        return (V(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                Q(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))

    def tf(self, stamp_ns: int, edges) -> object:
        """edges: [(parent, child, [4,4] T_parent_child)] -> TFMessage."""
        TS = self.T["geometry_msgs/msg/TransformStamped"]
        transforms = []
        for parent, child, T in edges:
            v, q = self._pose_parts(np.asarray(T, np.float64))
            transforms.append(TS(header=self.header(stamp_ns, parent), child_frame_id=child,
                                 transform=self.T["geometry_msgs/msg/Transform"](
                                     translation=v, rotation=q)))
        return self.T["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def odometry(self, stamp_ns: int, T_odom_base: np.ndarray, speed: float,
                 yaw_rate: float, linear=None, angular=None, odom_frame: str = ODOM_FRAME,
                 base_frame: str = BASE_FRAME) -> object:
        """nav_msgs/Odometry of ``base_frame`` in ``odom_frame``; the twist (base frame) is
        ``linear`` / ``angular`` [3] when given, else (speed, 0, 0) / (0, 0, yaw_rate)."""
        v, q = self._pose_parts(T_odom_base)
        linear = (float(speed), 0.0, 0.0) if linear is None else [float(x) for x in linear]
        angular = (0.0, 0.0, float(yaw_rate)) if angular is None else [float(x) for x in angular]
        P = self.T["geometry_msgs/msg/Point"]
        V = self.T["geometry_msgs/msg/Vector3"]
        # Small fixed covariances: (x, y, z, roll, pitch, yaw) diagonal.
        pose_cov = np.diag([0.01, 0.01, 1e-4, 1e-4, 1e-4, 1e-3]).reshape(-1)
        twist_cov = np.diag([0.01, 0.01, 1e-4, 1e-4, 1e-4, 1e-3]).reshape(-1)
        pose = self.T["geometry_msgs/msg/PoseWithCovariance"](
            pose=self.T["geometry_msgs/msg/Pose"](position=P(x=v.x, y=v.y, z=v.z),
                                                  orientation=q),
            covariance=pose_cov)
        twist = self.T["geometry_msgs/msg/TwistWithCovariance"](
            twist=self.T["geometry_msgs/msg/Twist"](linear=V(x=linear[0], y=linear[1], z=linear[2]),
                                                    angular=V(x=angular[0], y=angular[1],
                                                              z=angular[2])),
            covariance=twist_cov)
        return self.T["nav_msgs/msg/Odometry"](header=self.header(stamp_ns, odom_frame),
                                               child_frame_id=base_frame, pose=pose,
                                               twist=twist)


def compressed_image(msgs: BagMessages, rgb: np.ndarray, header, image_format: str):
    """[H,W,3] uint8 RGB -> sensor_msgs/CompressedImage (OpenCV encoders, deterministic)."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    return msgs.T["sensor_msgs/msg/CompressedImage"](header=header,
                                                     format=IMAGE_FORMATS[image_format],
                                                     data=data.reshape(-1))


def transient_local_qos():
    """QoS a latched /tf_static is offered with (reliable, transient local, depth 1)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
               avoid_ros_namespace_conventions=False)


def partial_folder(target: Path, tag: str) -> Path:
    """Hidden temporary folder beside ``target`` where its bag is written first (the
    bag folder keeps its final name, which rosbags gives the storage files)."""
    target = Path(target)
    return target.parent / f".{tag}-partial-{os.getpid()}" / target.name


def check_overwrite(target: Path, overwrite: bool) -> bool:
    """True when ``target`` exists and may be replaced: it is refused unless
    ``overwrite`` (--overwrite), and only rosbag2 folders (with metadata.yaml) are."""
    target = Path(target)
    if not target.exists():
        return False
    if not overwrite:
        raise ValueError(f"bag folder {target} already exists; remove it or pass "
                         "overwrite=True (--overwrite)")
    if not (target / "metadata.yaml").is_file():
        raise ValueError(f"refusing to overwrite {target}: it exists but is not a rosbag2 "
                         "folder (no metadata.yaml)")
    return True


def publish_bag(tmp: Path, target: Path, overwrite: bool = False) -> Path:
    """Rename the complete bag ``tmp`` to ``target`` (an existing rosbag2 folder there is
    replaced only with ``overwrite``) and remove the emptied temporary parent."""
    tmp, target = Path(tmp), Path(target)
    if check_overwrite(target, overwrite):
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    discard_partial(tmp)
    return target


def discard_partial(tmp: Path) -> None:
    """Remove a temporary bag folder (if any) and its hidden parent once empty."""
    tmp = Path(tmp)
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.parent.rmdir()
    except OSError:
        pass
