"""Warping real synthetic-bag frames with ground-truth depth and pose reproduces the target.

End-to-end check of the conventions shared by the data layer (Sample.T_src_tgt,
intrinsics through resize) and geometry.warp / losses.photometric_error: frame t+1 (and
t-1) warped into t with the ground-truth depth of t and the odometry pose gives near-zero
photometric error; the wrong sign of the translation does not.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

synth = pytest.importorskip("depth_perception.synth",
                            reason="depth_perception.synth not available yet")

from depth_perception_training import geometry, losses  # noqa: E402
from depth_perception.data.samples import BagSequence, SampleConfig  # noqa: E402

SIZE = (320, 96)  # (W, H); smaller renders resample too coarsely for a 3x3 SSIM


@pytest.fixture(scope="module")
def day_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    bags = synth.make_synthetic_bags(out, frames=8, size=SIZE, conditions=("day-clear",), seed=3)
    assert len(bags) == 1
    return bags[0]


def _t(image: np.ndarray) -> torch.Tensor:
    """[H,W,3] uint8 -> [1,3,H,W] float64 in [0,1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0


def _static_mask(depth_tgt: torch.Tensor, depth_src: torch.Tensor, K: torch.Tensor,
                 T: torch.Tensor, rel_tol: float = 0.03) -> torch.Tensor:
    """[1,1,H,W] bool: target pixels whose 3-D point, moved into the source camera, lands on
    a source pixel of the same ground-truth depth (excludes moving cars, occlusions, sky)."""
    pts = geometry.backproject(torch.nan_to_num(depth_tgt, nan=1.0), torch.linalg.inv(K))
    pix, z = geometry.project(pts, K, T, return_depth=True)
    src_at = torch.nn.functional.grid_sample(depth_src, pix, mode="nearest", align_corners=True)
    ok = torch.isfinite(depth_tgt) & torch.isfinite(src_at) & (z > 0)
    return ok & ((src_at - z).abs() < rel_tol * z)


@pytest.mark.parametrize("offset", [1, -1])
def test_ground_truth_warp_reproduces_target(day_bag, offset):
    seq = BagSequence(day_bag, SampleConfig(offsets=(-1, 1), size=SIZE, with_lidar=False))
    assert len(seq) >= 2
    checked = 0
    for k in range(min(len(seq), 3)):
        s = seq[k]
        assert s.gt_depth is not None and s.image.shape == (SIZE[1], SIZE[0], 3)
        K = torch.from_numpy(s.intrinsics.K)[None]
        T = torch.from_numpy(s.T_src_tgt[offset])[None]
        tgt, src = _t(s.image), _t(s.context[offset])
        depth = torch.from_numpy(s.gt_depth)[None, None].double()
        depth_src = torch.from_numpy(seq.gt_depth(s.index + offset))[None, None].double()
        assert np.linalg.norm(s.T_src_tgt[offset][:3, 3]) > 0.3  # the camera really moved

        static = _static_mask(depth, depth_src, K, T)
        sky_filled = torch.nan_to_num(depth, nan=1e4)  # sky: at infinity for the warp
        warped, valid = geometry.warp(src, sky_filled, K, T)
        keep = static & valid.bool()
        keep[..., :2, :] = keep[..., -2:, :] = False  # SSIM window touches the padding
        keep[..., :2] = keep[..., -2:] = False
        assert keep.float().mean() > 0.3

        pe = losses.photometric_error(warped, tgt)[keep].mean().item()
        pe_unwarped = losses.photometric_error(src, tgt)[keep].mean().item()
        T_bad = T.clone()
        T_bad[:, :3, 3] *= -1
        warped_bad, _ = geometry.warp(src, sky_filled, K, T_bad)
        pe_bad = losses.photometric_error(warped_bad, tgt)[keep].mean().item()

        assert pe < 0.05, (k, pe)
        assert (warped - tgt).abs().mean(1, keepdim=True)[keep].mean() < 0.02
        # Measured 0.19-0.25x not warping and 0.17-0.21x the wrong sign (resampling of the
        # textured car flanks close by); a sign or axis slip lands near 1x.
        assert pe < 0.3 * pe_unwarped, (k, pe, pe_unwarped)
        assert pe < 0.3 * pe_bad, (k, pe, pe_bad)
        checked += 1
    assert checked >= 2
