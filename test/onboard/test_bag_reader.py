"""BagReader on hand-made mcap and sqlite3 bags, damaged bags, and the TF buffer."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from support.bagtools import (CAM_IN_BASE, INTRINSICS, LIDAR_IN_BASE, BagBuilder, frame_image,
                      make_drive_bag)
from depth_perception.data.bag import BagReader, BagTopics
from depth_perception.data.tf import (TfBuffer, TransformError, invert_transform,
                                      make_transform, matrix_to_quat, quat_slerp,
                                      quat_to_matrix)

POINTS = np.array([[11.0, -0.8, -0.5], [11.0, -0.8, 0.0], [5.0, 2.0, -1.0]], np.float32)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {st: make_drive_bag(root / st, st, n=6, lidar_points=POINTS, condition="night")
            for st in ("mcap", "sqlite3")}


def _storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


# -- reading ------------------------------------------------------------------------------
def test_mcap_and_sqlite3_read_back_identically(bags):
    a, b = BagReader(bags["mcap"]), BagReader(bags["sqlite3"])
    assert a.damage is None and b.damage is None
    for key in ("image", "camera_info", "lidar", "odom", "gt_depth", "tf_static"):
        np.testing.assert_array_equal(a.stamps(key), b.stamps(key))
    assert a.count("image") == 6 and a.count("odom") == 12 and a.count("tf_static") == 1
    for i in range(6):
        np.testing.assert_array_equal(a.image(i), b.image(i))
        np.testing.assert_array_equal(a.cloud(i), b.cloud(i))
        np.testing.assert_array_equal(a.gt_depth(i), b.gt_depth(i))
        assert a.camera_info(i) == b.camera_info(i) == INTRINSICS
    for i in range(12):
        oa, ob = a.odometry(i), b.odometry(i)
        np.testing.assert_array_equal(oa.T, ob.T)
        assert oa.speed == ob.speed == pytest.approx(2.0)
    # content is what was written
    np.testing.assert_array_equal(a.image(3), frame_image(3))
    np.testing.assert_allclose(a.cloud(2), POINTS)
    assert a.stamps("image")[1] - a.stamps("image")[0] == 100_000_000
    assert a.frame_id("camera_info") == "camera_optical_frame" and a.frame_id("lidar") == "lidar"
    assert a.odometry(3).T[0, 3] == pytest.approx(0.3)  # 1.5 periods at 2 m/s, 10 Hz


def test_condition_from_metadata_custom_data(bags, tmp_path):
    assert BagReader(bags["mcap"]).condition == "night"
    assert BagReader(bags["sqlite3"]).condition == "night"
    plain = make_drive_bag(tmp_path / "plain", "mcap", n=2, condition=None)
    assert BagReader(plain).condition is None


def test_tf_buffer_from_bag(bags):
    tf = BagReader(bags["sqlite3"]).tf_buffer()
    t = int(BagReader(bags["sqlite3"]).stamps("image")[2])
    np.testing.assert_allclose(tf.lookup("base_link", "camera_optical_frame", t), CAM_IN_BASE,
                               atol=1e-12)
    T_odom_lidar = tf.lookup("odom", "lidar", t)   # base at x = 0.4 at frame 2
    np.testing.assert_allclose(T_odom_lidar[:3, 3], [0.4, 0.0, 2.0], atol=1e-9)


def test_tf_on_topic_instead_of_odom(tmp_path):
    bag = make_drive_bag(tmp_path / "tfbag", "mcap", n=3, odom_in_tf=True)
    r = BagReader(bag)
    assert not r.has("odom") and r.count("tf") == 6
    T = r.tf_buffer().lookup("odom", "base_link", int(r.stamps("image")[1]))
    assert T[0, 3] == pytest.approx(0.2)


def test_compressed_image_topic_is_found_and_decodes(tmp_path):
    bag = make_drive_bag(tmp_path / "comp", "sqlite3", n=2, compressed=True)
    r = BagReader(bag)
    assert r.topic_name("image") == "/camera/image_raw/compressed"
    np.testing.assert_array_equal(r.image(1), frame_image(1))  # png: lossless


def test_reader_survives_pickling(bags):
    r = pickle.loads(pickle.dumps(BagReader(bags["mcap"])))
    np.testing.assert_array_equal(r.image(4), frame_image(4))


def test_custom_message_types_are_registered(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg

    b = BagBuilder(tmp_path / "unused")
    ts = b.ts
    ts.register(get_types_from_msg("std_msgs/Header header\nfloat32 confidence\n",
                                   "depth_test_msgs/msg/Quality"))
    Q = ts.types["depth_test_msgs/msg/Quality"]
    for storage, plugin in (("mcap", StoragePlugin.MCAP), ("sqlite3", StoragePlugin.SQLITE3)):
        path = tmp_path / storage
        with Writer(path, version=9, storage_plugin=plugin) as w:
            c = w.add_connection("/quality", "depth_test_msgs/msg/Quality", typestore=ts)
            w.write(c, 5, ts.serialize_cdr(Q(header=b.header(5, "cam"), confidence=0.75),
                                           "depth_test_msgs/msg/Quality"))
        r = BagReader(path, BagTopics(gt_depth="/quality"))
        assert "depth_test_msgs/msg/Quality" in r.typestore.types
        assert r.message("gt_depth", 0).confidence == pytest.approx(0.75)


# -- bad input ----------------------------------------------------------------------------
def test_missing_topic_names_bag_topic_and_available(bags):
    r = BagReader(bags["mcap"], BagTopics(image="/front/image"))
    with pytest.raises(ValueError) as err:
        r.image(0)
    text = str(err.value)
    assert str(bags["mcap"]) in text and "'/front/image'" in text
    assert "/camera/image_raw" in text and "/lidar/points" in text  # what it does have


def test_not_a_bag(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BagReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no metadata.yaml"):
        BagReader(tmp_path / "empty")


@pytest.mark.parametrize("keep", [4, 20, 60])
def test_mcap_cut_before_any_message_is_explained(bags, tmp_path, keep):
    """Cut inside the magic, the header record, or the first chunk's records: nothing to
    recover, the error names the file and the repair tools."""
    bag = tmp_path / "cut"
    shutil.copytree(bags["mcap"], bag)
    f = _storage_file(bag)
    f.write_bytes(f.read_bytes()[:keep])
    with pytest.raises(ValueError) as err:
        BagReader(bag)
    text = str(err.value)
    assert str(bag) in text and f.name in text and "mcap" in text
    assert "reindex" in text and "no complete message" in text


MCAP_N = 20


@pytest.fixture(scope="module")
def long_mcap(tmp_path_factory):
    """MCAP_N 192x256 rgb8 frames (147 kB each: rosbags closes a chunk every ~1 MiB, so
    the bag has several chunks) and a camera info, uncompressed and zstd chunks."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader

    root = tmp_path_factory.mktemp("long")
    out = {}
    for compression in ("none", "zstd"):
        b = BagBuilder(root / compression, "mcap")
        b.camera_info(10**9, INTRINSICS)
        for k in range(MCAP_N):
            b.image(10**9 + k * 10**8, np.tile(frame_image(k), (2, 2, 1)))
        if compression == "zstd":  # same messages, chunks compressed by the writer
            from rosbags.rosbag2 import StoragePlugin, Writer

            w = Writer(root / compression, version=9, storage_plugin=StoragePlugin.MCAP)
            w.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            with w:
                conns = {}
                for topic, msgtype, stamp, msg in b._msgs:
                    if topic not in conns:
                        conns[topic] = w.add_connection(topic, msgtype, typestore=b.ts)
                    w.write(conns[topic], stamp, b.ts.serialize_cdr(msg, msgtype))
        else:
            b.write()
        with Reader(root / compression) as r:
            raws = [bytes(raw) for c, _, raw in r.messages() if c.topic == "/camera/image_raw"]
        out[compression] = (root / compression, raws)
    return out


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("fraction", [0.6, 0.9])
def test_truncated_mcap_keeps_messages_before_the_cut(long_mcap, tmp_path, caplog,
                                                      compression, fraction):
    good_path, raws = long_mcap[compression]
    f_good = _storage_file(good_path)
    assert len(raws) == MCAP_N
    bag = tmp_path / "cut"
    shutil.copytree(good_path, bag)
    f = _storage_file(bag)
    data = f_good.read_bytes()
    cut = int(len(data) * fraction)
    f.write_bytes(data[:cut])
    with caplog.at_level("WARNING", logger="depth_perception.data.bag"):
        r = BagReader(bag)
    n = r.count("image")
    assert 0 < n < MCAP_N
    if compression == "none":
        # every message whose record lies wholly before the cut, also in the cut chunk
        ends = [data.index(raw) + len(raw) for raw in raws]
        assert n == sum(end <= cut for end in ends)
        assert n == int(fraction * MCAP_N) or n == int(fraction * MCAP_N) - 1  # ~147 kB each
    assert r.damage is not None and f.name in r.damage and f"{n + 1} messages" in r.damage
    assert any(f.name in rec.getMessage() and f"{n + 1} messages" in rec.getMessage()
               and "recovered" in rec.getMessage() for rec in caplog.records)
    good = BagReader(good_path)
    assert good.damage is None and good.count("image") == MCAP_N
    np.testing.assert_array_equal(r.stamps("image"), good.stamps("image")[:n])
    for i in range(n):
        a, b = r.message("image", i), good.message("image", i)
        assert bytes(a.data) == bytes(b.data) == raws[i][-len(a.data):]
        assert (a.header.stamp.sec, a.header.stamp.nanosec) == (b.header.stamp.sec,
                                                                b.header.stamp.nanosec)
        np.testing.assert_array_equal(r.image(i), np.tile(frame_image(i), (2, 2, 1)))
    assert r.camera_info(0) == INTRINSICS
    with pytest.raises(IndexError, match=f"has {n} messages"):
        r.message("image", n)
    # DataLoader workers get a pickled reader: it reads the cut file again
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.image(n - 1), good.image(n - 1))


def test_truncated_mcap_keeps_custom_types(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg

    b = BagBuilder(tmp_path / "unused")
    ts = b.ts
    ts.register(get_types_from_msg("std_msgs/Header header\nfloat32 confidence\n",
                                   "depth_test_msgs/msg/Quality"))
    Q = ts.types["depth_test_msgs/msg/Quality"]
    path = tmp_path / "q"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/quality", "depth_test_msgs/msg/Quality", typestore=ts)
        for k in range(3):
            w.write(c, 5 + k, ts.serialize_cdr(Q(header=b.header(5 + k, "cam"),
                                                 confidence=0.25 * k),
                                               "depth_test_msgs/msg/Quality"))
    f = _storage_file(path)
    data = f.read_bytes()
    last = ts.serialize_cdr(Q(header=b.header(7, "cam"), confidence=0.5),
                            "depth_test_msgs/msg/Quality")
    f.write_bytes(data[:data.index(last) + len(last) - 1])  # the third message is cut
    r = BagReader(path, BagTopics(gt_depth="/quality"))
    assert r.count("gt_depth") == 2 and "2 messages" in r.damage
    r = pickle.loads(pickle.dumps(r))
    assert r.message("gt_depth", 1).confidence == pytest.approx(0.25)
    np.testing.assert_array_equal(r.stamps("gt_depth"), [5, 6])


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_sqlite3_keeps_rows_before_the_damage(bags, tmp_path, fraction):
    bag = tmp_path / "cut"
    shutil.copytree(bags["sqlite3"], bag)
    f = _storage_file(bag)
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * fraction)])
    r = BagReader(bag)
    assert r.damage is not None and f.name in r.damage and "salvaged" in r.damage
    n = r.count("image")
    assert 1 <= n < 6
    good = BagReader(bags["sqlite3"])
    np.testing.assert_array_equal(r.stamps("image"), good.stamps("image")[:n])
    for i in range(n):
        np.testing.assert_array_equal(r.image(i), frame_image(i))
    assert r.camera_info(0) == INTRINSICS


def test_sqlite3_with_a_damaged_page_keeps_earlier_rows(bags, tmp_path):
    bag = tmp_path / "garbage"
    shutil.copytree(bags["sqlite3"], bag)
    f = _storage_file(bag)
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8192] = b"\xff" * 8192
    f.write_bytes(bytes(data))
    r = BagReader(bag)
    assert r.damage is not None and str(bag) in r.damage
    n = r.count("image")
    assert 1 <= n < 6
    np.testing.assert_array_equal(r.image(0), frame_image(0))


def test_garbage_file_is_named(bags, tmp_path):
    for storage in ("mcap", "sqlite3"):
        bag = tmp_path / storage
        shutil.copytree(bags[storage], bag)
        f = _storage_file(bag)
        f.write_bytes(b"this is not a bag" * 10)
        with pytest.raises(ValueError, match=f"{bag}.*{f.name}|{f.name}"):
            BagReader(bag)


def test_zero_k_camera_info_names_bag_and_topic(tmp_path):
    bag = make_drive_bag(tmp_path / "zk", "mcap", n=2, camera_info_k=np.zeros(9))
    with pytest.raises(ValueError) as err:
        BagReader(bag).camera_info(0)
    text = str(err.value)
    assert str(bag) in text and "'/camera/camera_info'" in text and "not calibrated" in text


def test_unknown_encoding_names_bag_topic_and_encoding(tmp_path):
    b = BagBuilder(tmp_path / "enc", "sqlite3")
    b.image(1000, frame_image(0))
    b._msgs[-1][3].encoding = "yuv422"
    b.write()
    with pytest.raises(ValueError) as err:
        BagReader(tmp_path / "enc").image(0)
    text = str(err.value)
    assert "enc" in text and "'/camera/image_raw'" in text and "'yuv422'" in text
    assert "expected one of" in text


# -- TF buffer ----------------------------------------------------------------------------
def test_quaternion_helpers():
    q = np.array([0.1, -0.3, 0.5, 0.8])
    q /= np.linalg.norm(q)
    R = quat_to_matrix(q)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(R), q, atol=1e-12)
    # 90 deg about z (xyzw): x axis -> y axis
    qz = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    np.testing.assert_allclose(quat_to_matrix(qz) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    half = quat_slerp([0, 0, 0, 1], qz, 0.5)  # 45 deg about z
    np.testing.assert_allclose(half, [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-12)
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        quat_to_matrix([0, 0, 0, 0])


def test_make_transform_takes_a_quaternion_or_a_matrix():
    """One make_transform for the TF buffer and the synthetic street: 90 deg about z
    with t = (1, 2, 3) maps x = (1, 0, 0) to (1, 3, 3), the same from its quaternion
    and its matrix; the synthetic street uses this one."""
    from depth_perception.data import tf as data_tf
    from depth_perception.synth import layout, street

    Rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    qz = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    for rotation in (qz, Rz):
        T = make_transform((1.0, 2.0, 3.0), rotation)
        np.testing.assert_allclose(T @ [1, 0, 0, 1], [1, 3, 3, 1], atol=1e-12)
        np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_array_equal(make_transform((4, 5, 6))[:3, 3], [4, 5, 6])
    for bad in (dict(translation=(1, 2)), dict(rotation=np.eye(4)), dict(rotation=(0, 0, 1))):
        with pytest.raises(ValueError, match="make_transform"):
            make_transform(**bad)
    assert layout.make_transform is street.make_transform is data_tf.make_transform


def test_tf_chain_interpolation_and_errors():
    tf = TfBuffer()
    tf.add_static("base_link", "camera_optical_frame", CAM_IN_BASE)
    tf.add_static("base_link", "lidar", LIDAR_IN_BASE)
    yaw90 = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    tf.add_dynamic("odom", "base_link", 0, make_transform((0, 0, 0)))
    tf.add_dynamic("odom", "base_link", 1_000_000_000, make_transform((10, 0, 0), yaw90))
    # half way: base at x=5 with a 45 degree yaw
    T = tf.lookup("odom", "base_link", 500_000_000)
    np.testing.assert_allclose(T[:3, 3], [5, 0, 0])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [np.sqrt(0.5), np.sqrt(0.5), 0],
                               atol=1e-12)
    # a lidar point 10 m ahead of the lidar is 9 m in front of the camera (z optical),
    # 0.5 m above it (y optical = -0.5): camera at (1, 0, 1.5), lidar at (0, 0, 2) in base
    T_cl = tf.lookup("camera_optical_frame", "lidar", 0)
    np.testing.assert_allclose(T_cl @ [10, 0, 0, 1], [0, -0.5, 9, 1], atol=1e-12)
    # chain through the dynamic edge: the camera at t=1 s looks along +y of odom
    T_oc = tf.lookup("odom", "camera_optical_frame", 1_000_000_000)
    np.testing.assert_allclose(T_oc[:3, 3], [10, 1, 1.5], atol=1e-12)
    np.testing.assert_allclose(T_oc[:3, 2], [0, 1, 0], atol=1e-12)  # optical z = odom +y
    np.testing.assert_allclose(tf.lookup("camera_optical_frame", "odom", 1_000_000_000),
                               invert_transform(T_oc), atol=1e-12)
    with pytest.raises(TransformError, match="extrapolation.*from 0.000000000 to 1.0"):
        tf.lookup("odom", "lidar", 2_000_000_000)
    with pytest.raises(TransformError, match="'radar' is unknown.*base_link->lidar"):
        tf.lookup("odom", "radar", 0)
    tf.add_static("map", "world", np.eye(4))
    with pytest.raises(TransformError, match="'world' -> 'lidar'.*not connected"):
        tf.lookup("lidar", "world", 0)
    with pytest.raises(ValueError, match="already has parent"):
        tf.add_static("map", "lidar", np.eye(4))
