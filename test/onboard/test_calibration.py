"""INT8 calibration data side (no TensorRT needed): sampling, preprocessing, batching, cache."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception.runtime.calibration import (BagFrameReader, CalibrationConfig,
                                                 CalibrationSource, CalibratorCore,
                                                 frames_from_bags, spread_indices,
                                                 synthetic_frames)
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.processing import Preprocessor

MODEL_H, MODEL_W = 56, 98       # model input (differs from the camera: a real resize)
CAM_W, CAM_H = 168, 112


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    out = tmp_path_factory.mktemp("calib_bags")
    day = make_synthetic_bags(out / "a", frames=6, size=(CAM_W, CAM_H),
                              conditions=("day-clear",), seed=0)
    night = make_synthetic_bags(out / "b", frames=12, size=(CAM_W, CAM_H),
                                conditions=("night",), seed=1)
    return day + night


@pytest.fixture
def meta():
    return ModelMetadata(output_kind="metric_depth", input_height=MODEL_H, input_width=MODEL_W,
                         mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


# -- sampling ------------------------------------------------------------------------------

def test_spread_indices_hand_worked():
    # 8 over bags of 10 and 30: one each, then 6 by largest remainder of 6*9/38 = 1.42
    # and 6*29/38 = 4.58 -> 1 + 5 (remainder .58 wins) -> quotas 2 and 6, evenly spaced
    assert spread_indices([10, 30], 8) == [(0, 2), (0, 7), (1, 2), (1, 7), (1, 12),
                                           (1, 17), (1, 22), (1, 27)]
    # fewer frames than bags: proportional only, the small bag may get none
    assert spread_indices([1, 100], 1) == [(1, 50)]
    # an empty bag is skipped, the others still represented
    assert spread_indices([4, 0, 4], 2) == [(0, 2), (2, 2)]
    # asking for more than there is gives every frame once
    assert spread_indices([2, 1], 10) == [(0, 0), (0, 1), (1, 0)]


def test_spread_indices_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = list(rng.integers(0, 50, rng.integers(1, 6)))
        if sum(lengths) == 0:
            continue
        n = int(rng.integers(1, sum(lengths) + 1))
        pairs = spread_indices(lengths, n)
        assert len(pairs) == n and len(set(pairs)) == n
        assert all(0 <= i < lengths[b] for b, i in pairs)
        if n >= sum(1 for x in lengths if x):
            assert {b for b, _ in pairs} == {b for b, x in enumerate(lengths) if x}


def test_spread_indices_errors():
    with pytest.raises(ValueError, match="no frames"):
        spread_indices([0, 0], 3)
    with pytest.raises(ValueError, match=">= 1"):
        spread_indices([5], 0)


# -- frames from bags ----------------------------------------------------------------------

def test_frames_are_the_node_preprocessing_bit_exact(bags, meta):
    from depth_perception.data.bag import BagReader

    frames = frames_from_bags(bags, meta, 5)
    assert frames.shape == (5, 3, MODEL_H, MODEL_W) and frames.dtype == np.float32
    # recompute the expected ones independently: same indices, node Preprocessor
    pairs = spread_indices([6, 12], 5)
    assert sorted({b for b, _ in pairs}) == [0, 1]        # day and night both present
    pre = Preprocessor(meta)
    expected = []
    for b, i in pairs:
        reader = BagReader(bags[b])
        j, _ = reader.nearest("camera_info", int(reader.stamps("image")[i]))
        expected.append(pre.prepare(reader.image(i), reader.camera_info(j)).tensor[0])
        reader.close()
    np.testing.assert_array_equal(frames, np.stack(expected))
    # the normalisation really is the metadata's: undoing it gives [0, 1] pixel values
    pixels = frames * np.asarray(meta.std, np.float32)[:, None, None] + \
        np.asarray(meta.mean, np.float32)[:, None, None]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_frames_follow_a_given_preprocessor(bags, meta):
    pre = Preprocessor(meta, keep_aspect=True)   # the node's centre-crop option
    frames = frames_from_bags(bags[:1], meta, 1, preprocessor=pre)
    from depth_perception.data.bag import BagReader

    reader = BagReader(bags[0])
    i = spread_indices([6], 1)[0][1]
    expected = pre.prepare(reader.image(i), reader.camera_info(0)).tensor
    np.testing.assert_array_equal(frames, expected)
    assert not np.array_equal(frames, frames_from_bags(bags[:1], meta, 1))


def test_missing_bag_is_named(tmp_path, meta):
    with pytest.raises(FileNotFoundError, match="nope"):
        frames_from_bags([tmp_path / "nope"], meta, 3)
    with pytest.raises(FileNotFoundError, match="nope"):
        CalibrationSource(meta, tmp_path / "c.cache", [tmp_path / "nope"])


def test_no_bags_and_no_cache_is_refused(tmp_path, meta):
    with pytest.raises(ValueError, match="calib-bag"):
        CalibrationSource(meta, tmp_path / "c.cache", [])
    (tmp_path / "c.cache").write_bytes(b"a cache without its record")
    with pytest.raises(ValueError, match="none usable"):
        CalibrationSource(meta, tmp_path / "c.cache", [])


# -- batches and the calibrator protocol -----------------------------------------------------

def test_batches_and_cache_round_trip(bags, meta, tmp_path):
    cache = tmp_path / "calib" / "model.calib"
    source = CalibrationSource(meta, cache, bags, CalibrationConfig(n_frames=7, batch_size=3))
    core = CalibratorCore(source)
    assert core.get_batch_size() == 3
    assert core.read_calibration_cache() is None            # nothing cached yet
    batches = []
    while (batch := core.next_batch()) is not None:
        batches.append(batch)
    # 7 frames in batches of 3: two full batches, the last frame dropped
    assert [b.shape for b in batches] == [(3, 3, MODEL_H, MODEL_W)] * 2
    assert all(b.flags["C_CONTIGUOUS"] and b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), source.frames()[:6])
    # what TensorRT hands back is written as is
    table = b"TRT-100000-EntropyCalibration2\nimage: 3c010a14\n"
    core.write_calibration_cache(table)
    assert cache.read_bytes() == table

    # a second run reads the cache and never opens a bag
    reader = BagFrameReader()
    again = CalibrationSource(meta, cache, bags, CalibrationConfig(n_frames=7),
                              reader=reader)
    core2 = CalibratorCore(again)
    assert core2.read_calibration_cache() == table
    assert reader.opened == 0 and again._frames is None and core2.batches_served == 0


def test_cache_alone_needs_no_bags(meta, tmp_path):
    cache = tmp_path / "model.calib"
    table = b"TRT-100000-EntropyCalibration2\n"
    CalibrationSource(meta, cache, frames_loader=lambda: None).write_cache(table)

    class NoBags:
        def count(self, bag):
            raise AssertionError("bag opened")

        read = count

    source = CalibrationSource(meta, cache, [], reader=NoBags())
    assert CalibratorCore(source).read_calibration_cache() == table
    with pytest.raises(RuntimeError, match="no bags"):
        source.frames()


def test_cache_of_another_model_or_other_bags_is_not_reused(bags, tmp_path):
    import dataclasses

    meta = ModelMetadata(output_kind="metric_depth", input_height=MODEL_H,
                         input_width=MODEL_W, provenance={"weights_sha256": "1" * 64})
    cache = tmp_path / "model.calib"
    made = CalibrationSource(meta, cache, bags[:1], CalibrationConfig(n_frames=4))
    made.write_cache(b"table")
    assert CalibrationSource(meta, cache, bags[:1], CalibrationConfig(n_frames=4)).read_cache() \
        == b"table"
    # other weights, other input size, other normalisation: not reused, and with no
    # frames to calibrate on that is an error rather than a silently wrong engine
    for other in (dataclasses.replace(meta, provenance={"weights_sha256": "2" * 64}),
                  dataclasses.replace(meta, input_width=MODEL_W + 14),
                  dataclasses.replace(meta, mean=(0.4, 0.4, 0.4))):
        with pytest.raises(ValueError, match="no[ne]* usable"):
            CalibrationSource(other, cache, [])
        assert CalibrationSource(other, cache, bags[:1]).read_cache() is None
    # other bags or frame count: recalibrated
    assert CalibrationSource(meta, cache, bags, CalibrationConfig(n_frames=4)).read_cache() is None
    assert CalibrationSource(meta, cache, bags[:1], CalibrationConfig(n_frames=5)).read_cache() \
        is None


def test_frames_of_the_wrong_size_are_refused(meta, tmp_path):
    source = CalibrationSource(meta, tmp_path / "c", frames_loader=lambda: np.zeros(
        (2, 3, MODEL_H + 14, MODEL_W), np.float32))
    with pytest.raises(ValueError, match="model input is 56x98"):
        source.frames()


def test_synthetic_frames_deterministic(meta):
    a, b = synthetic_frames(meta, 3, seed=5), synthetic_frames(meta, 3, seed=5)
    assert a.shape == (3, 3, MODEL_H, MODEL_W)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic_frames(meta, 3, seed=6))
    assert not np.array_equal(a[0], a[1])               # frames differ from each other


def test_make_int8_calibrator_without_tensorrt_says_what_to_install(meta, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from depth_perception.runtime.calibration import make_int8_calibrator

    source = CalibrationSource(meta, tmp_path / "c",
                               frames_loader=lambda: synthetic_frames(meta, 2))
    with pytest.raises(RuntimeError, match="JetPack"):
        make_int8_calibrator(source)


def test_wrong_image_topic_is_named(bags, meta):
    with pytest.raises(ValueError, match="/front/image"):
        frames_from_bags(bags, meta, 3, reader=BagFrameReader(image_topic="/front/image"))
