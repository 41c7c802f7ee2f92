"""How far a depth stream moves with the camera between frames: its motion scale.

    .venv/bin/python bench/bench_motion_scale.py --model MODEL.onnx --bag BAG [--bag ...]
        [--prior-bag TRAIN_BAG ...] [--zmax 30] [--record]

For consecutive frames of each bag (camera poses from its TF and odometry, as
``evaluate`` reads them), ``depth_perception.evaluation.temporal.motion_scale`` of the
model's depth: 1 when its depth moves exactly as the scene does between the two
frames, 0 when a point's depth does not change as it comes nearer (median over the
pixels with depth 1 m to ``--zmax``). Per bag the mean over frame pairs, beside the
bag's ground-truth depth fed as a stream (the check: 1) and, with ``--prior-bag``, the
image-blind prior of those bags (per-pixel median LiDAR depth, as ``evaluate`` builds
it), a depth that never looks at the image.

A stream below 1 keeps part of its temporal alignment error (TAE) whatever a temporal
fusion averages: the depth the history carries with the true motion arrives nearer
than the new prediction.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Motion scale of depth streams: bench_motion_scale"


def bag_scales(bag, estimator, zmax: float, prior=None) -> tuple[str, list, list, list]:
    """(condition, per-pair scales of the model, of the bag's ground truth, of
    ``prior`` ([H,W] or None))."""
    from depth_perception.evaluation.offline import (EvaluateConfig, estimator_predictor,
                                                     open_sequence)
    from depth_perception.evaluation.prior import fit_to
    from depth_perception.evaluation.temporal import motion_scale

    seq = open_sequence(bag, EvaluateConfig())
    predict = estimator_predictor(estimator)
    model, truth, blind, last = [], [], [], None
    for i in range(len(seq)):
        sample = seq[i]
        depth = np.asarray(predict(sample).depth, np.float32)
        gt = sample.gt_depth
        fixed = None if prior is None else fit_to(prior, depth.shape)
        if last is not None and seq.poses[i] is not None and seq.poses[i - 1] is not None:
            T = seq.relative_pose(i - 1, i)                                  # T_{k-1<-k}
            model.append(motion_scale(last[0], depth, sample.intrinsics, T, zmax))
            if gt is not None and last[1] is not None:
                truth.append(motion_scale(last[1], gt, sample.intrinsics, T, zmax))
            if fixed is not None:
                blind.append(motion_scale(fixed, fixed, sample.intrinsics, T, zmax))
        last = (depth, gt)
    return seq[0].condition or "unknown", model, truth, blind


def _summary(values: list) -> str:
    v = np.array([x for x in values if x is not None])
    if v.size == 0:
        return "-"
    return f"{v.mean():.2f} ({v.min():.2f} to {v.max():.2f}, {v.size} pairs)"


def measure(args) -> int:
    import cv2

    from depth_perception.runtime.estimator import DepthEstimator

    cv2.setNumThreads(1)
    print(f"motion scale (1: the depth moves with the camera), pixels 1-{args.zmax:g} m, "
          f"model {Path(args.model).name}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    prior = None
    if args.prior_bag:
        from depth_perception.evaluation.prior import prior_from_bags

        prior = prior_from_bags(args.prior_bag, "lidar")
    print(f"{'bag':28s} {'condition':10s} {'model: mean (range, pairs)':>34s} "
          f"{'ground truth':>30s} {'image-blind prior':>30s}")
    with DepthEstimator.load(args.model, backend=args.backend) as estimator:
        for bag in args.bag:
            condition, model, truth, blind = bag_scales(bag, estimator, args.zmax, prior)
            print(f"{Path(bag).name[:28]:28s} {condition:10s} {_summary(model):>34s} "
                  f"{_summary(truth):>30s} {_summary(blind):>30s}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="depth model (ONNX file or folder)")
    parser.add_argument("--bag", action="append", required=True, help="bag (repeatable)")
    parser.add_argument("--prior-bag", action="append", default=[],
                        help="training bag of the image-blind prior (repeatable)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--zmax", type=float, default=30.0,
                        help="largest predicted depth compared [m] (default 30)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


if __name__ == "__main__":
    raise SystemExit(main())
