"""Evaluation protocols of the papers, as named presets of ``depth-perception evaluate``.

A :class:`Protocol` fixes everything that decides a published number besides the model:
which reference pixels count (depth range, image crop), how the prediction is treated
(median scaling, clamp), and how the LiDAR reference image is made from a scan
(:data:`depth_perception.data.projection.LIDAR_RULES`). Each preset names the reference
code it follows; ``test/onboard/test_protocols.py`` scores the same arrays with a
transcription of that code and compares.

=========================  ============================================================
preset                     reference
=========================  ============================================================
``kitti-eigen``            monodepth2 ``evaluate_depth.py`` ``--eval_split eigen``
                           (``--eval_mono``): Garg crop, 1e-3 < gt < 80 m, per-image
                           median scaling, prediction clamped to [1e-3, 80]; reference
                           from ``kitti_utils.generate_depth_map(..., cam=2,
                           vel_depth=True)`` as ``export_gt_depth.py`` calls it
``kitti-eigen-metric``     the same with ``--disable_median_scaling`` (metric models)
``kitti-eigen-crop``       the same as ``kitti-eigen-metric`` with the crop of Eigen et
                           al. (2014) instead of Garg's (metric models are often
                           reported with it)
``kitti-eigen-benchmark``  monodepth2 ``--eval_split eigen_benchmark``: the annotated
                           depth maps (``/ground_truth/depth`` of an import with
                           ``proj_depth/``), every pixel with gt > 0 (no cap, no crop),
                           median scaling, clamp [1e-3, 80]
``md4all-nuscenes``        md4all ``evaluation/evaluator.py`` + ``utils/depth.py``
                           ``compute_depth_metrics`` (mode ``''``): 0.1 < gt < 80 m, no
                           crop, no median scaling, clamp [0.1, 80], per condition;
                           reference from the nuScenes devkit's
                           ``map_pointcloud_to_image`` (min_dist 1 m) drawn by
                           ``NuScenesDataset.generate_image_from_points``
``md4all-nuscenes-median`` the same with median scaling (md4all mode ``'_gt'``), whose
                           ``torch.median`` takes the lower middle value of an even count
=========================  ============================================================

Crops are fractions of the reference image (top, bottom, left, right), turned into pixel
rows and columns as monodepth2 does: ``np.array([t*H, b*H, l*W, r*W]).astype(np.int32)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Garg et al. (2016) crop, as in monodepth2 evaluate_depth.py
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
#: Eigen et al. (2014) crop, as in monodepth (v1) utils/evaluate_kitti.py --eigen_crop
EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)


@dataclass(frozen=True)
class Protocol:
    """What a published number depends on, besides the model.

    Reference pixels: finite, ``min_depth < gt < max_depth`` (``max_depth`` may be inf),
    inside ``crop``. Prediction: median-scaled when ``median_scaling``, then clamped to
    ``clamp``. LiDAR reference images follow ``lidar_rule``, with the scan moved to the
    image time through odometry only when ``motion_compensation``. ``median``: numpy's
    median or the lower middle value (``torch.median``) for median scaling.
    """

    name: str
    source: str
    min_depth: float
    max_depth: float
    clamp: tuple
    median_scaling: bool
    crop: tuple | None = None
    reference: str = "lidar"
    lidar_rule: str = "nearest"
    motion_compensation: bool = True
    median: str = "numpy"

    def crop_mask(self, shape) -> np.ndarray | None:
        """[H,W] bool of the crop for a reference image of ``shape`` (None: no crop)."""
        return crop_mask(shape, self.crop) if self.crop is not None else None


def crop_mask(shape, crop) -> np.ndarray:
    """[H,W] bool: rows ``int(t*H):int(b*H)``, columns ``int(l*W):int(r*W)``."""
    H, W = int(shape[0]), int(shape[1])
    t, b, l, r = np.array([crop[0] * H, crop[1] * H, crop[2] * W, crop[3] * W]).astype(np.int32)
    mask = np.zeros((H, W), dtype=bool)
    mask[t:b, l:r] = True
    return mask


_MONODEPTH2 = "nianticlabs/monodepth2 evaluate_depth.py, kitti_utils.py, export_gt_depth.py"
_MD4ALL = ("md4all/md4all evaluation/evaluator.py, utils/depth.py, data/nuscenes_dataset.py; "
           "nuscenes-devkit NuScenesExplorer.map_pointcloud_to_image")
_KITTI = dict(min_depth=1e-3, max_depth=80.0, clamp=(1e-3, 80.0), crop=GARG_CROP,
              lidar_rule="kitti", motion_compensation=False, source=_MONODEPTH2)
_NUSCENES = dict(min_depth=0.1, max_depth=80.0, clamp=(0.1, 80.0), lidar_rule="nuscenes",
                 motion_compensation=True, median="lower", source=_MD4ALL)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("kitti-eigen", median_scaling=True, **_KITTI),
    Protocol("kitti-eigen-metric", median_scaling=False, **_KITTI),
    Protocol("kitti-eigen-crop", median_scaling=False, **{**_KITTI, "crop": EIGEN_CROP}),
    Protocol("kitti-eigen-benchmark", median_scaling=True,
             **{**_KITTI, "min_depth": 0.0, "max_depth": float("inf"), "crop": None,
                "reference": "/ground_truth/depth"}),
    Protocol("md4all-nuscenes", median_scaling=False, **_NUSCENES),
    Protocol("md4all-nuscenes-median", median_scaling=True, **_NUSCENES),
)}


def get_protocol(name: str) -> Protocol:
    """The preset called ``name``; unknown names are refused with the list."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; expected one of "
                         f"{', '.join(PROTOCOLS)}") from None
