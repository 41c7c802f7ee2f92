"""Torch dataset over one or more bags (torch is imported inside, not at module import).

Each item is a dict (``n`` = number of context offsets, H x W the output size):

* ``image`` [3,H,W] float32 in [0,1]: the target, unaugmented (for the losses)
* ``image_aug`` [3,H,W]: the augmented target (network input)
* ``context`` / ``context_aug`` [n,3,H,W]: neighbours at ``offsets``
* ``K`` [3,3] float32, ``T_src_tgt`` [n,4,4] float32 (maps target-camera points into
  the source camera), ``distance`` [n] float32 metres, ``offsets`` [n] int64
* ``lidar_depth`` / ``gt_depth`` [1,H,W] float32 metres, NaN where none
* ``condition`` str, ``index`` int (dataset index)

A horizontal flip applies to every frame and depth map of the sample and keeps the
geometry right: ``cx' = W - 1 - cx`` and ``T' = S T S`` with ``S = diag(-1, 1, 1, 1)``.
The same colour jitter is applied to the target and its context frames. Randomness is
drawn from ``np.random.default_rng([seed, epoch, index])``: reproducible, and distinct
across DataLoader workers and epochs (call :meth:`DepthDataset.set_epoch`).
"""
from __future__ import annotations

import bisect
import logging
from pathlib import Path

import numpy as np

from depth_perception_training.augment import AugmentConfig, Augmenter, AugmentParams
from depth_perception.data.cache import FrameCache
from depth_perception.data.samples import BagSequence, Sample, SampleConfig

log = logging.getLogger(__name__)

FLIP_S = np.diag([-1.0, 1.0, 1.0, 1.0])


def flip_K(K: np.ndarray, width: int) -> np.ndarray:
    """[3,3] intrinsics of the horizontally flipped image: cx' = W - 1 - cx."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[0, 2] = width - 1 - K[0, 2]
    return K


def flip_pose(T: np.ndarray) -> np.ndarray:
    """[...,4,4] relative pose in the mirrored world: S T S, S = diag(-1, 1, 1, 1)."""
    return FLIP_S @ np.asarray(T, dtype=np.float64) @ FLIP_S


class DepthDataset:
    """``torch.utils.data.Dataset``-compatible (``__len__``/``__getitem__``) over bags.

    Args:
        bags: a bag directory or a list of them.
        config: how samples are chosen and prepared (shared by all bags).
        augment: an :class:`Augmenter`, an :class:`AugmentConfig`, or None (no
            augmentation: ``*_aug`` equal the unaugmented frames).
        cache_dir: decoded-frame cache directory; None disables the cache, ``"default"``
            uses ``$DEPTH_PERCEPTION_CACHE`` or ``~/.cache/depth_perception``.
        seed: base seed of the augmentation.
    """

    def __init__(self, bags, config: SampleConfig | None = None, augment=None,
                 cache_dir=None, seed: int = 0):
        if isinstance(bags, (str, Path)):
            bags = [bags]
        bags = [Path(b) for b in bags]
        if not bags:
            raise ValueError("DepthDataset: no bags given")
        self.config = config or SampleConfig()
        if isinstance(augment, AugmentConfig):
            augment = Augmenter(augment)
        self.augment: Augmenter | None = augment
        if cache_dir is None:
            self.cache = None
        else:
            self.cache = FrameCache(None if cache_dir == "default" else cache_dir)
        self.sequences = [BagSequence(b, self.config, cache=self.cache) for b in bags]
        self._ends = np.cumsum([len(s) for s in self.sequences]).tolist()
        self.seed = int(seed)
        self.epoch = 0
        if len(self) == 0:
            log.warning("DepthDataset: no usable samples in %s (dropped: %s)",
                        [str(b) for b in bags], [s.dropped for s in self.sequences])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def decode_count(self) -> int:
        """Frames decoded from bags so far (in this process)."""
        return sum(s.decode_count for s in self.sequences)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def locate(self, index: int) -> tuple[BagSequence, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"DepthDataset index {index} out of range ({len(self)} samples)")
        b = bisect.bisect_right(self._ends, index)
        start = self._ends[b - 1] if b > 0 else 0
        return self.sequences[b], index - start

    def sample(self, index: int) -> Sample:
        seq, k = self.locate(index)
        return seq[k]

    def __getitem__(self, index: int) -> dict:
        import torch

        s = self.sample(index)
        offsets = self.config.offsets
        W, H = s.intrinsics.width, s.intrinsics.height
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        params = self.augment.sample(rng) if self.augment is not None else AugmentParams()
        # 1. float frames [H,W,3] in [0,1]; depth maps [H,W] (NaN where none)
        image = s.image.astype(np.float32) / 255.0
        context = [s.context[o].astype(np.float32) / 255.0 for o in offsets]
        nan = np.full((H, W), np.nan, np.float32)
        lidar = s.lidar_depth if s.lidar_depth is not None else nan
        gt = s.gt_depth if s.gt_depth is not None else nan
        K = s.intrinsics.K
        T = np.stack([s.T_src_tgt[o] for o in offsets]) if offsets else np.zeros((0, 4, 4))
        # 2. flip everything together, geometry included
        if params.flip:
            image = image[:, ::-1]
            context = [c[:, ::-1] for c in context]
            lidar, gt = lidar[:, ::-1], gt[:, ::-1]
            K = flip_K(K, W)
            T = flip_pose(T)
        # 3. same colour jitter for target and context, noise per frame
        if params.identity_colour:
            image_aug, context_aug = image, context
        else:
            image_aug = Augmenter.apply_colour(image, params, rng)
            context_aug = [Augmenter.apply_colour(c, params, rng) for c in context]

        def chw(img):  # [H,W,3] -> [3,H,W]
            return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

        def stack(frames):  # list of [H,W,3] -> [n,3,H,W]
            if not frames:
                return torch.zeros((0, 3, H, W), dtype=torch.float32)
            return torch.stack([chw(f) for f in frames])

        return {
            "image": chw(image),
            "image_aug": chw(image_aug),
            "context": stack(context),
            "context_aug": stack(context_aug),
            "K": torch.from_numpy(K.astype(np.float32)),
            "T_src_tgt": torch.from_numpy(T.astype(np.float32)),
            "distance": torch.tensor([s.distance[o] for o in offsets], dtype=torch.float32),
            "offsets": torch.tensor(offsets, dtype=torch.int64),
            "lidar_depth": torch.from_numpy(np.ascontiguousarray(lidar, np.float32))[None],
            "gt_depth": torch.from_numpy(np.ascontiguousarray(gt, np.float32))[None],
            "condition": s.condition or "",
            "index": int(index),
        }
