"""``depth-perception synth OUT``: write synthetic driving bags, one per condition."""
from __future__ import annotations

HELP = "render a synthetic street drive into rosbag2 folders, one per condition"


def add_arguments(parser) -> None:
    parser.add_argument("out", help="output folder; bags are written to OUT/<condition>")
    parser.add_argument("--frames", type=int, default=30,
                        help="camera frames per bag at 10 Hz (default: 30)")
    parser.add_argument("--size", default="640x192",
                        help="camera image WIDTHxHEIGHT (default: 640x192)")
    parser.add_argument("--conditions", default="day-clear,night,rain",
                        help="comma-separated conditions out of day-clear, night, rain, snow "
                             "(default: day-clear,night,rain)")
    parser.add_argument("--seed", type=int, default=0,
                        help="scene seed: same seed, same bags (default: 0)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="rosbag2 storage plugin (default: mcap)")
    parser.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                        help="camera images as raw rgb8 Image on /camera/image_raw, or "
                             "CompressedImage on /camera/image_raw/compressed (default: raw)")
    parser.add_argument("--speed", type=float, default=None,
                        help="vehicle speed in m/s (default: 10)")
    parser.add_argument("--vary", action="store_true",
                        help="draw the rig and street from the seed (SynthConfig.varied): "
                             "camera height and pitch, speed, weave within the lane, lead cars, "
                             "oncoming cars, cross streets, parked cars")
    parser.add_argument("--distortion", default=None, metavar="MODEL:COEFFS",
                        help="lens distortion of the camera, e.g. plumb_bob:-0.3,0.08 "
                             "(k1,k2,p1,p2,k3), equidistant:0.1,0.01 (k1..k4) or "
                             "rational_polynomial:k1,k2,p1,p2,k3,k4,k5,k6 (missing = 0): the "
                             "image is what that lens records, the CameraInfo says so; ground "
                             "truth stays in the rectified (pinhole) camera")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing bags of the same names")


def run(args) -> int:
    import time
    from dataclasses import replace

    from depth_perception.rectify import parse_distortion
    from depth_perception.synth import SynthConfig, make_synthetic_bags, parse_size

    size = parse_size(args.size)
    distortion = parse_distortion(args.distortion) if args.distortion else None
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    config = (SynthConfig.varied(args.seed, size=size) if args.vary
              else SynthConfig(size=size, seed=args.seed))
    if args.speed is not None:
        config = replace(config, speed=args.speed)
    start = time.perf_counter()
    paths = make_synthetic_bags(args.out, frames=args.frames, size=size,
                                conditions=conditions, seed=args.seed,
                                storage=args.storage, overwrite=args.overwrite,
                                config=config, image_format=args.image_format,
                                distortion=distortion)
    elapsed = time.perf_counter() - start
    for path in paths:
        print(path)
    print(f"{len(paths)} bag(s), {args.frames} frames at {size[0]}x{size[1]}, "
          f"{args.storage}, in {elapsed:.1f} s")
    return 0
