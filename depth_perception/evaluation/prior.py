"""The image-blind prior: per-pixel median reference depth over bags.

A predictor that never looks at the image: for each pixel, the median of the reference
depth (ground truth, or LiDAR projected into the camera) over every frame of some bags.
It is the floor a depth model must beat; the pixels where it is wrong by more than 20 %
("structure pixels", :func:`depth_perception.metrics.structure_mask`) are the part of
the task that needs the image.

* :func:`prior_from_bags`: one prior from given bags (e.g. the training bags);
* :func:`leave_one_out_priors`: for each evaluated bag, the prior of the *other* ones
  (when only the evaluated bags are given).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from depth_perception.evaluation.ground_truth import LIDAR
from depth_perception.metrics import depth_prior

log = logging.getLogger(__name__)

#: the row name of the prior in reports
PRIOR_NAME = "prior (image-blind)"


def reference_depths(bag, reference: str = "/ground_truth/depth",
                     size: tuple[int, int] | None = None,
                     lidar_topic: str = "/lidar/points") -> np.ndarray:
    """[N,H,W] float32 reference depth of every frame of ``bag`` (NaN invalid).

    reference: ``lidar`` (LiDAR projected through TF) or a dense depth topic. size:
    (W, H) to resize to (nearest), None for the camera's size.
    """
    from depth_perception.data.bag import BagTopics
    from depth_perception.data.samples import BagSequence, SampleConfig

    lidar = reference == LIDAR
    topics = BagTopics(lidar=lidar_topic) if lidar else BagTopics(gt_depth=reference,
                                                                  lidar=lidar_topic)
    seq = BagSequence(Path(bag), SampleConfig(offsets=(), skip_static=False, with_lidar=lidar,
                                              with_gt=not lidar, size=size, topics=topics))
    maps = []
    for i in range(len(seq)):
        depth = seq[i].lidar_depth if lidar else seq.gt_depth(i)
        if depth is not None:
            maps.append(depth)
    if not maps:
        raise ValueError(f"bag {bag}: no reference depth on "
                         f"{'LiDAR ' + lidar_topic if lidar else reference} for the prior")
    return np.stack(maps).astype(np.float32)


def prior_from_bags(bags, reference: str = "/ground_truth/depth",
                    size: tuple[int, int] | None = None, min_depth: float = 0.1,
                    max_depth: float = 80.0, lidar_topic: str = "/lidar/points") -> np.ndarray:
    """[H,W] per-pixel median reference depth over every frame of ``bags``."""
    bags = [Path(b) for b in bags]
    if not bags:
        raise ValueError("depth prior: no bag given")
    stacks = [reference_depths(b, reference, size, lidar_topic) for b in bags]
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) > 1:
        raise ValueError(f"depth prior: bags {[str(b) for b in bags]} have different image "
                         f"sizes {sorted(shapes)}; give a common size")
    prior = depth_prior(np.concatenate(stacks), min_depth, max_depth)
    log.info("prior from %d bags (%d frames)", len(bags), sum(len(s) for s in stacks))
    return prior


def leave_one_out_priors(bags, reference: str = "/ground_truth/depth",
                         size: tuple[int, int] | None = None, min_depth: float = 0.1,
                         max_depth: float = 80.0,
                         lidar_topic: str = "/lidar/points") -> dict[str, np.ndarray]:
    """{bag path: [H,W] prior of the other bags}. Needs at least two bags."""
    bags = [Path(b) for b in bags]
    if len(bags) < 2:
        raise ValueError("leave-one-out prior: needs at least two bags (or give the bags "
                         "the prior is made from, e.g. the training bags)")
    stacks = {str(b): reference_depths(b, reference, size, lidar_topic) for b in bags}
    out = {}
    for b in stacks:
        others = [s for k, s in stacks.items() if k != b]
        if len({s.shape[1:] for s in others + [stacks[b]]}) > 1:
            raise ValueError("leave-one-out prior: the bags have different image sizes")
        out[b] = depth_prior(np.concatenate(others), min_depth, max_depth)
    return out


def fit_to(prior: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The prior resized (nearest) to ``shape`` (H, W) when it differs."""
    if prior.shape == tuple(shape):
        return prior
    import cv2

    return cv2.resize(prior, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
