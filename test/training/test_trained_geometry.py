"""Camera geometry as trained, checked with a model whose output is known.

The focal policies (:mod:`depth_perception.runtime.geometry`) decide at which size a
frame reaches a metric model and by how much its depth is rescaled. Their checks must
not depend on how a short training run landed, so the numbers come from
:class:`FlatRoadModel`: the depth a network trained at focal length ``F`` (px at its
input) infers for a flat road seen by a level camera ``h`` metres above it, from each
row's offset below the input's centre row: ``z = F h / dv``. The true depth of camera
row ``v`` is ``fy h / (v - cy)``, so depth / truth is worked by hand, with f_input the
camera's focal length at the model input (mean of fx and fy, as the policies use it) and
fy_input its vertical one:

* ``as_trained`` (default): no rescaling, depth / truth = F / fy_input; the policy puts
  f_input within half a size step of F;
* ``canonical``: depth x f_input / F, so depth / truth = f_input / fy_input, which is 1
  whatever the lens when the resize keeps square pixels;
* an explicit short side without correction: F / fy_input, so a longer lens reads nearer.

Only the training geometry comes from a real run: the tiny teacher (a few steps; its
quality is not looked at) must record the training size and focal length that the
policies read.
"""
from __future__ import annotations

import numpy as np
import pytest

CAMERA_HEIGHT = 1.5          # metres above the road
ROW_MARGIN = 16              # rows scored: at least this far below the horizon (camera px)


@pytest.fixture(scope="module")
def trained_metadata(tmp_path_factory):
    """Metadata of the demo's tiny teacher trained on a 320x96 day-clear bag at 224x64."""
    from depth_perception.metadata import ModelMetadata
    from depth_perception.synth import make_synthetic_bags
    from depth_perception_training.demo import DemoConfig, train_tiny_teacher

    root = tmp_path_factory.mktemp("geometry")
    bag = make_synthetic_bags(root / "train", frames=12, size=(320, 96),
                              conditions=("day-clear",), seed=0)[0]
    model, _ = train_tiny_teacher(DemoConfig(out=root, train_steps=2, pose_steps=2,
                                             train_size=(224, 64)), [bag])
    return model, ModelMetadata.load(f"{model}/metadata.json")


def flat_road_estimator(metadata, **options):
    """A :class:`DepthEstimator` on the torch backend running :class:`FlatRoadModel`
    with ``metadata``'s training geometry."""
    import torch

    from depth_perception.metadata import ModelMetadata
    from depth_perception.runtime.backends.torch_backend import TorchBackend
    from depth_perception.runtime.estimator import DepthEstimator

    class FlatRoadModel(torch.nn.Module):
        """image [B,3,H,W] -> depth [B,1,H,W]: F h / dv per row, dv = row centre's
        offset below the input's centre row (pixels); the far cap above it."""

        def __init__(self, focal: float, far: float):
            super().__init__()
            self.focal, self.far = focal, far

        def forward(self, image):
            b, _, h, w = image.shape
            dv = torch.arange(h, dtype=image.dtype) + 0.5 - h / 2
            depth = torch.where(dv > 0.25, self.focal * CAMERA_HEIGHT / dv.clamp(min=0.25),
                                torch.full_like(dv, self.far))
            return depth.view(1, 1, h, 1).expand(b, 1, h, w) + 0 * image[:, :1]

    meta = ModelMetadata.from_dict({**metadata.to_dict(), "provenance": {"source": "flat road"}})
    model = FlatRoadModel(meta.train_focal_px, meta.max_depth)
    return DepthEstimator(TorchBackend(model, meta, device="cpu"), meta, **options)


def camera(focal_factor: float, size=(384, 96)):
    """Square-pixel camera, principal point at the centre, f = focal_factor x width."""
    from depth_perception.camera import Intrinsics

    w, h = size
    return Intrinsics(focal_factor * w, focal_factor * w, (w - 1) / 2, (h - 1) / 2, w, h)


def depth_over_truth(estimator, cam):
    """(median of depth / true road depth over the rows scored, K at model input)."""
    result = estimator.estimate(np.zeros((cam.height, cam.width, 3), np.uint8), cam)
    rows = np.arange(cam.height)
    below = rows - cam.cy >= ROW_MARGIN
    truth = cam.fy * CAMERA_HEIGHT / (rows[below] - cam.cy)                 # [rows]
    ratio = result.depth[below] / truth[:, None]                             # [rows, W]
    assert np.isfinite(ratio).all()
    return float(np.median(ratio)), result.prepared.intrinsics_model


def test_training_geometry_is_recorded_and_chosen(trained_metadata):
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception.synth import SynthConfig

    model, meta = trained_metadata
    assert (meta.train_width, meta.train_height) == (224, 64)
    # the synthetic camera: f = 0.58 * 320 = 185.6 px, resized to 224x64 (fx 0.7x, fy 0.667x)
    assert meta.train_focal_px == pytest.approx(0.5 * (185.6 * 0.7 + 185.6 * 64 / 96), rel=1e-3)
    # the checkpoint's default input for the 320x96 camera: its focal length matches the
    # training one within half a size step (the network takes multiples of 32)
    cam = SynthConfig(size=(320, 96)).intrinsics
    with DepthEstimator.load(str(model), backend="torch") as est:
        size = est.estimate(np.zeros((96, 320, 3), np.uint8), cam).prepared.model_size
    f_input = 185.6 * size[1] / 96
    assert abs(f_input - meta.train_focal_px) <= 185.6 * 32 / 96 / 2 + 1e-6, size


def test_as_trained_feeds_the_training_focal_length(trained_metadata):
    from depth_perception.runtime.geometry import focal_px

    _, meta = trained_metadata
    cam = camera(0.58, (320, 96))
    default, k_in = depth_over_truth(flat_road_estimator(meta), cam)
    # 224x64, as trained: f_input = F = 126.8; no rescaling, depth / truth = F / fy_input
    # = 126.8 / 123.7 = 1.025 (the resize to a multiple of 32 stretches x by 5 %)
    assert (k_in.width, k_in.height) == (224, 64)
    assert focal_px(k_in) == pytest.approx(meta.train_focal_px, rel=1e-6)
    assert default == pytest.approx(meta.train_focal_px / k_in.fy, rel=0.01)
    # Depth Anything's 518 short side puts fy_input at 1001.8 px: depth 7.9x too near
    wrong, k_518 = depth_over_truth(flat_road_estimator(meta, short_side=518), cam)
    assert wrong == pytest.approx(meta.train_focal_px / k_518.fy, rel=0.01)
    assert wrong < 0.15


@pytest.mark.parametrize("focal_factor", [0.58, 0.75])
def test_canonical_focal_policy_is_exact_for_any_lens(trained_metadata, focal_factor):
    from depth_perception.runtime.geometry import focal_px

    _, meta = trained_metadata
    canonical, k_in = depth_over_truth(flat_road_estimator(meta, focal_policy="canonical"),
                                       camera(focal_factor))
    assert (k_in.width, k_in.height) == (256, 64)       # the training short side, square pixels
    # f_input 148.5 / 192.0 px against F 126.8: a correction of 1.17x / 1.51x is needed
    assert focal_px(k_in) == pytest.approx(focal_factor * 256)
    assert canonical == pytest.approx(1.0, rel=0.01)


def test_without_correction_the_longer_lens_reads_nearer(trained_metadata):
    _, meta = trained_metadata
    est = flat_road_estimator(meta, short_side=64)
    short_lens, _ = depth_over_truth(est, camera(0.58))
    long_lens, _ = depth_over_truth(est, camera(0.75))
    # both run at 256x64: depth / truth = F / fy_input, in the ratio of the focal lengths
    assert short_lens == pytest.approx(meta.train_focal_px / (0.58 * 256), rel=0.01)
    assert long_lens / short_lens == pytest.approx(0.58 / 0.75, rel=0.01)
