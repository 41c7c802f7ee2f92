"""Which depth streams temporal fusion steadies: stand-in streams on a recorded drive.

    .venv/bin/python bench/bench_fusion_streams.py --bag BAG [--thresholds 0.1,0.2]
        [--motion 1,0.65,0.3] [--noise 0.02,0.05,0.1] [--record]

Each stand-in is the bag's ground-truth depth ``z`` made into what a weaker model
predicts, ``(s z + (1 - s) c) (1 + n)``:

* ``s`` (``--motion``) its motion scale: the stream regresses towards a typical depth
  ``c`` (the median ground truth of the drive), so its depth of a static point changes
  by ``s`` metres for every metre the point comes nearer (what
  ``bench_motion_scale.py`` measures of a model; the ground truth's is 1);
* ``n`` (``--noise``) per-pixel, per-frame noise, normal with that standard deviation
  and drawn afresh each frame.

Each stream is scored by ``evaluate`` with the node's temporal fusion (``--temporal-fusion``
at each ``--thresholds`` value, 8 frames): TAE and abs_rel against LiDAR, single-frame
and fused. A stand-in has no image, so only the ground truth of the bag matters.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Onboard package"
TITLE = "Which depth streams temporal fusion steadies: bench_fusion_streams"


class StandIn:
    """An estimator that returns frame k's ground truth, shrunk towards ``typical`` by
    its motion scale and with fresh per-pixel noise (see the module docstring)."""

    def __init__(self, truths: list, typical: float, motion: float, noise: float,
                 seed: int = 3):
        self.truths, self.typical = truths, typical
        self.motion, self.noise = motion, noise
        self.rng = np.random.default_rng(seed)
        self.k = 0

    def estimate(self, rgb, intrinsics, rectifier=None):
        z = self.truths[self.k]
        self.k += 1
        depth = np.where(np.isfinite(z), self.motion * z + (1 - self.motion) * self.typical,
                         np.inf).astype(np.float32)
        depth *= 1 + self.noise * self.rng.standard_normal(z.shape).astype(np.float32)
        return _Result(depth)


class _Result:
    def __init__(self, depth):
        self.depth = depth


def measure(args) -> int:
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.evaluation.offline import EvaluateConfig, evaluate, fused_name

    truth = BagSequence(args.bag, SampleConfig(offsets=(), skip_static=False,
                                               with_lidar=False))
    truths = [truth[k].gt_depth for k in range(len(truth))]
    valid = np.concatenate([z[np.isfinite(z) & (z > 0) & (z < 80)] for z in truths])
    typical = float(np.median(valid))
    print(f"{Path(args.bag).name}: {len(truths)} frames, typical depth c = {typical:.2f} m "
          f"(median ground truth); fusion over 8 frames")
    print(f"{'threshold':>9s} {'motion':>6s} {'noise':>5s}   {'TAE single -> fused':>26s}"
          f"   {'abs_rel single -> fused':>30s}")
    for threshold in _floats(args.thresholds):
        for motion in _floats(args.motion):
            for noise in _floats(args.noise):
                name = "stand-in"
                config = EvaluateConfig(temporal_fusion=True, fusion_threshold=threshold)
                stream = StandIn(truths, typical, motion, noise)
                res = evaluate([args.bag], config, estimators={name: stream}).to_dict()
                single, fused = res["models"][name], res["models"][fused_name(name)]
                ta, tb = (m["temporal"]["all"]["tae"] for m in (single, fused))
                ra, rb = (m["all"]["abs_rel"] for m in (single, fused))
                print(f"{threshold:9.2f} {motion:6.2f} {noise:5.2f}   {ta:.4f} -> {tb:.4f} "
                      f"({tb / ta:.2f}x)   {ra:.4f} -> {rb:.4f} ({(rb / ra - 1) * 100:+5.1f} %)",
                      flush=True)
    return 0


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", required=True, help="a drive with /ground_truth/depth "
                        "(e.g. a demo's bags/day-clear)")
    parser.add_argument("--thresholds", default="0.1,0.2",
                        help="fusion_threshold values (default 0.1,0.2; the node's is 0.1)")
    parser.add_argument("--motion", default="1,0.65,0.3", help="motion scales s")
    parser.add_argument("--noise", default="0.02,0.05,0.1",
                        help="per-pixel noise standard deviations n")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


if __name__ == "__main__":
    raise SystemExit(main())
