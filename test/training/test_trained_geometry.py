"""Camera geometry as trained, on a tiny teacher trained here (224x64, synthetic bags).

* ``evaluate`` with default options on a 320x96 bag scores within 2% of the same model
  run at its training size (short side 64), and far better than the old default (518);
* ``focal_policy='canonical'``: the same synthetic scene rendered with two focal lengths
  gives metric depths within 3% of each other.
"""
from __future__ import annotations

import numpy as np
import pytest

# training a tiny teacher takes about a minute on an idle 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TRAIN_STEPS = 120


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model folder, {name: bag}) - the demo's tiny teacher, trained on a 320x96
    day-clear bag at 224x64, and evaluation renders of the same street."""
    from depth_perception.synth import SynthConfig, make_synthetic_bags
    from depth_perception_training.demo import DemoConfig, train_tiny_teacher

    root = tmp_path_factory.mktemp("geometry")
    train_bag = make_synthetic_bags(root / "train", frames=20, size=(320, 96),
                                    conditions=("day-clear",), seed=0)[0]
    model, _ = train_tiny_teacher(DemoConfig(out=root, train_steps=TRAIN_STEPS, pose_steps=2,
                                             train_size=(224, 64)), [train_bag])
    bags = {"320x96": make_synthetic_bags(root / "eval", frames=8, size=(320, 96),
                                          conditions=("day-clear",), seed=3)[0]}
    for name, factor in (("f0.58", 0.58), ("f0.75", 0.75)):
        bags[name] = make_synthetic_bags(root / name, frames=8, size=(320, 96),
                                         conditions=("day-clear",), seed=3,
                                         config=SynthConfig(focal_factor=factor))[0]
    return model, bags


def abs_rel(model, bag, **options) -> float:
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate

    results = evaluate([bag], EvaluateConfig(reference="/ground_truth/depth"),
                       models=[ModelSpec(str(model), "torch", "m", options)])
    return float(np.mean([f.metrics["abs_rel"] for f in results.models["m"].frames]))


def depth_scale(model, bag, **options) -> float:
    """Median over frames of median(predicted / true depth): the metric scale."""
    from depth_perception.data.bag import BagReader
    from depth_perception.runtime.estimator import DepthEstimator

    ratios = []
    with DepthEstimator.load(str(model), backend="torch", **options) as est, \
            BagReader(bag) as reader:
        for i in range(reader.count("image")):
            pred = est.estimate(reader.image(i), reader.camera_info(i)).depth
            gt = reader.gt_depth(reader.nearest("gt_depth", int(reader.stamps("image")[i]))[0])
            ok = np.isfinite(pred) & np.isfinite(gt) & (gt > 1.0) & (gt < 40.0)
            ratios.append(np.median(pred[ok] / gt[ok]))
    return float(np.median(ratios))


def test_default_input_is_the_training_geometry(trained, capsys):
    from depth_perception.metadata import ModelMetadata

    model, bags = trained
    meta = ModelMetadata.load(f"{model}/metadata.json")
    assert (meta.train_width, meta.train_height) == (224, 64)
    # the synthetic camera: f = 0.58 * 320 = 185.6 px, resized to 224x64 (fx 0.7x, fy 0.667x)
    assert meta.train_focal_px == pytest.approx(0.5 * (185.6 * 0.7 + 185.6 * 64 / 96), rel=1e-3)
    # the default input for the 320x96 camera: its focal length matches the training one
    # within half a size step (the network takes multiples of 32)
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.synth import SynthConfig

    camera = SynthConfig(size=(320, 96)).intrinsics
    with DepthEstimator.load(str(model), backend="torch") as est:
        size = est.estimate(np.zeros((96, 320, 3), np.uint8), camera).prepared.model_size
    f_input = 185.6 * size[1] / 96
    assert abs(f_input - meta.train_focal_px) <= 185.6 * 32 / 96 / 2 + 1e-6, size
    default = abs_rel(model, bags["320x96"])
    at_training = abs_rel(model, bags["320x96"], short_side=64)
    old_default = abs_rel(model, bags["320x96"], short_side=518)
    print(f"abs_rel default {default:.4f}, at training size {at_training:.4f}, "
          f"at short side 518 {old_default:.4f}")
    assert abs(default - at_training) <= 0.02 * at_training
    assert abs(old_default - at_training) > 0.02 * at_training   # the sizes can differ


def test_canonical_focal_policy_serves_two_lenses(trained):
    model, bags = trained
    canonical = {k: depth_scale(model, bags[k], focal_policy="canonical")
                 for k in ("f0.58", "f0.75")}
    fixed = {k: depth_scale(model, bags[k], short_side=64) for k in ("f0.58", "f0.75")}
    print(f"depth / truth, canonical: {canonical}; same input size, no correction: {fixed}")
    # Measured 1.4% with the demo's conv teacher (teacher_tiny.yaml, velocity weight 1.0;
    # 3.5% with its earlier weight 0.1, 1.3% with the DINOv2+DPT tiny teacher)
    assert canonical["f0.75"] == pytest.approx(canonical["f0.58"], rel=0.03)
    # without the correction the longer lens reads nearer: the test can fail
    assert fixed["f0.75"] < 0.97 * fixed["f0.58"]
