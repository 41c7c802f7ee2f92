"""DepthDataset: tensors, flip geometry, shared colour jitter, cache across epochs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.bagtools import make_drive_bag
from depth_perception_training.augment import (AugmentConfig, Augmenter, AugmentParams,
                                           adjust_brightness, adjust_contrast, adjust_hue,
                                           adjust_saturation)
from depth_perception_training.dataset import DepthDataset, flip_K, flip_pose
from depth_perception.data.samples import SampleConfig
from depth_perception.data.tf import make_transform

LIDAR = np.array([[11.0, -0.8, -0.5], [6.0, 2.0, -1.0]], np.float32)  # -> (72,48) z10, (24,58) z5
NO_COLOUR = dict(jitter_p=0.0, noise_p=0.0)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    return [make_drive_bag(root / "a", "mcap", n=5, lidar_points=LIDAR),
            make_drive_bag(root / "b", "sqlite3", n=4, lidar_points=LIDAR, condition="night",
                           with_gt=False)]


def test_item_shapes_and_dtypes(bags):
    ds = DepthDataset(bags, SampleConfig(size=(64, 48)), augment=AugmentConfig())
    assert len(ds) == 3 + 2
    for i in range(len(ds)):
        x = ds[i]
        assert x["image"].shape == x["image_aug"].shape == (3, 48, 64)
        assert x["context"].shape == x["context_aug"].shape == (2, 3, 48, 64)
        assert x["K"].shape == (3, 3) and x["T_src_tgt"].shape == (2, 4, 4)
        assert x["distance"].shape == (2,) and x["offsets"].tolist() == [-1, 1]
        assert x["lidar_depth"].shape == x["gt_depth"].shape == (1, 48, 64)
        for key in ("image", "image_aug", "context", "context_aug", "K", "T_src_tgt",
                    "distance", "lidar_depth", "gt_depth"):
            assert x[key].dtype == torch.float32, key
        assert x["offsets"].dtype == torch.int64 and x["index"] == i
        for key in ("image", "image_aug", "context", "context_aug"):
            assert 0.0 <= float(x[key].min()) and float(x[key].max()) <= 1.0
        assert torch.allclose(x["distance"], torch.tensor([0.2, 0.2]))
        lidar = x["lidar_depth"][0]
        assert int(torch.isfinite(lidar).sum()) >= 1
    assert ds[0]["condition"] == "day-clear" and ds[4]["condition"] == "night"
    assert torch.isnan(ds[4]["gt_depth"]).all()                     # bag b has no GT
    assert torch.all(ds[0]["gt_depth"] == 10.0)
    # K at 64x48 of the 128x96 camera: fx = 50, cx = 0.5 * 64.5 - 0.5 = 31.75
    K = ds[0]["K"]
    assert float(K[0, 0]) == 50.0 and float(K[0, 2]) == 31.75 and float(K[1, 2]) == 23.75


def test_without_augmentation_aug_equals_input(bags):
    x = DepthDataset(bags[0], SampleConfig())[1]
    assert torch.equal(x["image"], x["image_aug"]) and torch.equal(x["context"], x["context_aug"])


def test_flip_keeps_geometry(bags):
    cfg = SampleConfig()
    plain = DepthDataset(bags[0], cfg)[0]
    flipped = DepthDataset(bags[0], cfg, augment=AugmentConfig(flip_p=1.0, **NO_COLOUR))[0]
    W = 128
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["image_aug"], plain["image"].flip(-1))
    assert torch.equal(flipped["context"], plain["context"].flip(-1))
    assert torch.equal(flipped["lidar_depth"].nan_to_num(-1), plain["lidar_depth"].flip(-1)
                       .nan_to_num(-1))
    K, Kf = plain["K"].double().numpy(), flipped["K"].double().numpy()
    assert Kf[0, 2] == W - 1 - K[0, 2] == 63.0
    # the LiDAR point at (72, 48) lands at (W-1-72, 48) = (55, 48) after the flip, and the
    # flipped K projects the mirrored 3-D point there
    assert float(flipped["lidar_depth"][0, 48, 55]) == pytest.approx(10.0)
    P = np.array([0.8, 0.0, 10.0])
    uv = K @ P / P[2]
    uvf = Kf @ (np.diag([-1.0, 1, 1]) @ P) / P[2]
    assert uvf[0] == pytest.approx(W - 1 - uv[0]) and uvf[1] == pytest.approx(uv[1])
    T, Tf = plain["T_src_tgt"].double().numpy(), flipped["T_src_tgt"].double().numpy()
    np.testing.assert_allclose(Tf, flip_pose(T), atol=1e-6)
    assert torch.equal(flipped["distance"], plain["distance"])


def _warp_pixel(u, v, depth, K, T):
    """Target pixel with depth -> source pixel (back-project, transform, project)."""
    X = depth * np.linalg.inv(K) @ [u, v, 1.0]
    Xs = T[:3, :3] @ X + T[:3, 3]
    p = K @ Xs
    return p[:2] / p[2]


def test_flipped_warp_lands_on_mirrored_pixel():
    """With a rotating, sideways-moving camera: warp in the flipped frame = flip of the warp."""
    W = 128
    K = np.array([[100.0, 0, 60.3], [0, 90.0, 47.0], [0, 0, 1]])
    yaw = [0, np.sin(0.1), 0, np.cos(0.1)]                # 11.5 deg about optical y
    T = make_transform((0.3, -0.1, -0.5), yaw)
    Kf, Tf = flip_K(K, W), flip_pose(T)
    for u, v, d in ((10.0, 20.0, 5.0), (100.0, 70.0, 12.0), (64.0, 48.0, 3.0)):
        us, vs = _warp_pixel(u, v, d, K, T)
        uf, vf = _warp_pixel(W - 1 - u, v, d, Kf, Tf)
        assert uf == pytest.approx(W - 1 - us) and vf == pytest.approx(vs)
    # a wrong flip (no S on the pose) does not: the test can fail
    uf_bad, _ = _warp_pixel(W - 1 - 10.0, 20.0, 5.0, Kf, T)
    assert abs(uf_bad - (W - 1 - _warp_pixel(10.0, 20.0, 5.0, K, T)[0])) > 1.0


def test_same_colour_jitter_on_target_and_context(tmp_path):
    # identical frames (uniform grey + dot): with jitter and no noise, the augmented
    # target and context frames stay identical while differing from the input
    bag = make_drive_bag(tmp_path / "same", "mcap", n=3, background=90, dot=(40, 30))
    ds = DepthDataset(bag, SampleConfig(),
                      augment=AugmentConfig(jitter_p=1.0, noise_p=0.0, flip_p=0.0))
    x = ds[0]
    assert torch.equal(x["context"][0], x["image"])
    assert not torch.allclose(x["image_aug"], x["image"], atol=1e-3)
    assert torch.allclose(x["context_aug"][0], x["image_aug"], atol=1e-6)
    assert torch.allclose(x["context_aug"][1], x["image_aug"], atol=1e-6)


def test_augmentation_is_seeded(bags):
    aug = AugmentConfig(flip_p=0.5, jitter_p=1.0, noise_p=1.0)
    a = DepthDataset(bags[0], SampleConfig(), augment=aug, seed=3)
    b = DepthDataset(bags[0], SampleConfig(), augment=aug, seed=3)
    assert torch.equal(a[1]["image_aug"], b[1]["image_aug"])
    first = a[1]["image_aug"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[1]["image_aug"], first)


def test_second_epoch_decodes_nothing(bags, tmp_path):
    ds = DepthDataset(bags, SampleConfig(size=(64, 48)), cache_dir=tmp_path / "cache")
    for i in range(len(ds)):
        ds[i]
    first = ds.decode_count
    assert first > 0
    ds.set_epoch(1)
    for i in range(len(ds)):
        ds[i]
    assert ds.decode_count == first
    again = DepthDataset(bags, SampleConfig(size=(64, 48)), cache_dir=tmp_path / "cache")
    for i in range(len(again)):
        again[i]
    assert again.decode_count == 0


def test_dataloader_with_workers(bags, tmp_path):
    ds = DepthDataset(bags, SampleConfig(size=(64, 48)), augment=AugmentConfig(),
                      cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == len(ds)
    assert batches[0]["context"].shape == (2, 2, 3, 48, 64)
    assert batches[-1]["condition"] == ["night"]
    assert torch.equal(batches[0]["image"][1], ds[1]["image"])


def test_empty_and_bad_inputs(tmp_path, bags):
    with pytest.raises(ValueError, match="no bags"):
        DepthDataset([], SampleConfig())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DepthDataset(tmp_path / "missing", SampleConfig())
    with pytest.raises(IndexError, match="out of range"):
        DepthDataset(bags[0], SampleConfig())[99]


# -- augmentation primitives (hand-worked numbers) ---------------------------------------
def test_colour_primitives():
    img = np.array([[[0.2, 0.4, 0.6], [1.0, 0.0, 0.0]]], np.float32)     # [1,2,3]
    np.testing.assert_allclose(adjust_brightness(img, 1.5), [[[0.3, 0.6, 0.9], [1, 0, 0]]],
                               atol=1e-6)
    gray = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    np.testing.assert_allclose(adjust_saturation(img, 0.0), np.repeat(gray[..., None], 3, -1),
                               atol=1e-6)
    np.testing.assert_allclose(adjust_contrast(img, 0.0), np.full_like(img, gray.mean()),
                               atol=1e-6)
    # +1/3 turn: red -> green, and a full turn changes nothing
    np.testing.assert_allclose(adjust_hue(img, 1 / 3)[0, 1], [0, 1, 0], atol=1e-4)
    np.testing.assert_allclose(adjust_hue(img, 1.0), img, atol=1e-4)


def test_augmenter_probabilities_and_ranges():
    aug = Augmenter(AugmentConfig())
    rng = np.random.default_rng(0)
    params = [aug.sample(rng) for _ in range(2000)]
    assert 0.45 < np.mean([p.flip for p in params]) < 0.55
    assert 0.45 < np.mean([bool(p.jitter) for p in params]) < 0.55
    sigmas = [p.noise_sigma for p in params if p.noise_sigma > 0]
    assert 0.45 < len(sigmas) / 2000 < 0.55 and 0.005 <= min(sigmas) and max(sigmas) <= 0.05
    for p in params:
        for name, value in p.jitter:
            bound = 0.1 if name == "hue" else 0.2
            centre = 0.0 if name == "hue" else 1.0
            assert abs(value - centre) <= bound
    noisy = Augmenter.apply_colour(np.full((64, 64, 3), 0.5, np.float32),
                                   AugmentParams(noise_sigma=0.02), rng)
    assert noisy.std() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
