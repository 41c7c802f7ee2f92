"""Camera geometry as trained: input size and focal policy, numbers worked by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from support.models_fixtures import FunctionBackend, constant_backend

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata
from depth_perception.runtime.estimator import DepthEstimator
from depth_perception.runtime.geometry import focal_px, plan_input
from depth_perception.runtime.processing import choose_input_size

#: trained at 224x70 with a focal length of 100 px at that size
TRAINED = ModelMetadata(size_multiple=14, train_height=70, train_width=224,
                        train_focal_px=100.0)


def camera(w, h, f):
    return Intrinsics(f, f, (w - 1) / 2, (h - 1) / 2, w, h)


def test_metadata_carries_training_geometry_and_refuses_half_of_it():
    back = ModelMetadata.from_json(TRAINED.to_json())
    assert (back.train_width, back.train_height, back.train_focal_px) == (224, 70, 100.0)
    old = json.loads(TRAINED.to_json())
    for key in ("train_height", "train_width", "train_focal_px"):
        old.pop(key)
    assert ModelMetadata.from_dict(old).train_focal_px == 0.0   # older files still load
    with pytest.raises(ValueError, match="train_height and train_width"):
        ModelMetadata(train_height=70)
    with pytest.raises(ValueError, match="train_focal_px needs"):
        ModelMetadata(train_focal_px=100.0)


def test_as_trained_matches_the_training_focal_length():
    # same field of view as training, larger: 320x96 with f = 100 * 320/224 = 142.86 px
    plan = plan_input(TRAINED, camera(320, 96, 100.0 * 320 / 224))
    assert plan.short_side == 70                 # 96 * 100 / 142.86 = 67.2 -> 5 * 14
    assert choose_input_size(320, 96, 14, plan.short_side) == (238, 70)
    assert not plan.canonical and "as_trained" in plan.reason
    # a 1280x720 camera with a 1000 px lens: 720 * 100/1000 = 72 -> 70 (not 518)
    assert plan_input(TRAINED, camera(1280, 720, 1000.0)).short_side == 70
    # a long lens (f = 400 px on 320x96): 96 * 100 / 400 = 24 -> 28
    assert plan_input(TRAINED, camera(320, 96, 400.0)).short_side == 28
    # explicit short side overrides, and the reason says the focal length is off
    # (input focal 142.86 * 140/96 = 208.3 px, 108% above the training 100 px)
    plan = plan_input(TRAINED, camera(320, 96, 142.86), short_side=140)
    assert plan.short_side == 140 and "+108%" in plan.reason


def test_models_without_training_geometry_keep_518():
    bare = ModelMetadata(size_multiple=14)
    plan = plan_input(bare, camera(1280, 720, 1000.0))
    assert plan.short_side == 518 and "records no training geometry" in plan.reason
    with pytest.raises(ValueError, match="train_focal_px"):
        plan_input(bare, camera(1280, 720, 1000.0), focal_policy="canonical")
    size_only = ModelMetadata(size_multiple=14, train_height=70, train_width=224)
    assert plan_input(size_only, camera(1280, 720, 1000.0)).short_side == 70
    with pytest.raises(ValueError, match="focal_policy must be one of"):
        plan_input(TRAINED, camera(320, 96, 100.0), focal_policy="metric3d")


def test_canonical_rescales_depth_by_input_over_training_focal():
    """A model that outputs 10 m everywhere, run canonically at the training short side
    (70) on a 320x96 camera with f = 200 px: the input focal is 200 * 70/96 = 145.83 px,
    so depth = 10 * 145.83 / 100 = 14.58 m; as_trained leaves 10 m."""
    K = camera(320, 96, 200.0)
    rgb = np.zeros((96, 320, 3), np.uint8)
    canonical = DepthEstimator(constant_backend(10.0, TRAINED), TRAINED,
                               focal_policy="canonical")
    result = canonical.estimate(rgb, K)
    assert result.prepared.model_size == (238, 70)
    f_in = focal_px(result.prepared.intrinsics_model)
    assert f_in == pytest.approx(200.0 * 70 / 96, rel=0.01)
    assert np.nanmedian(result.depth) == pytest.approx(10.0 * f_in / 100.0, rel=1e-5)
    assert canonical.input_plan.canonical and "canonical" in canonical.input_plan.reason
    plain = DepthEstimator(constant_backend(10.0, TRAINED), TRAINED)
    assert np.nanmedian(plain.estimate(rgb, K).depth) == pytest.approx(10.0)
    assert plain.input_plan.short_side == 42     # 96 * 100 / 200 = 48 -> 3 * 14


def test_estimator_plans_once_per_camera_geometry():
    sizes = []
    backend = FunctionBackend(lambda x: sizes.append(x.shape[2:]) or
                              np.full((1, 1, *x.shape[2:]), 5.0, np.float32), TRAINED)
    est = DepthEstimator(backend, TRAINED)
    est.estimate(np.zeros((96, 320, 3), np.uint8), camera(320, 96, 100.0 * 320 / 224))
    est.estimate(np.zeros((720, 1280, 3), np.uint8), camera(1280, 720, 1000.0))
    assert sizes == [(70, 238), (70, 126)]
    est.set_input_options(short_side=140)
    est.estimate(np.zeros((96, 320, 3), np.uint8), camera(320, 96, 142.86))
    assert sizes[-1] == (140, 462)
