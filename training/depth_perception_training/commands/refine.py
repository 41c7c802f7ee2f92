"""``depth-perception refine --bag B | --images DIR --model M --out DIR [key=value ...]``."""
from __future__ import annotations

import argparse

from depth_perception_training.commands import (add_config_arguments, add_dry_run_argument,
                                                print_config)

HELP = ("test-time refinement (Re-Depth Anything) or a Marigold teacher over a bag or an "
        "image folder; writes pseudo labels a student trains on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bag", help="rosbag2 folder (camera, optionally LiDAR for alignment)")
    src.add_argument("--images", help="folder of image files")
    parser.add_argument("--model", default=None,
                        help="depth model: this package's DINOv2+DPT checkpoint folder or a "
                             "Depth Anything (hub id or local folder). Re-Depth refines it; "
                             "with --config marigold it is the metric teacher labels may be "
                             "aligned to")
    parser.add_argument("--out", help="label folder (manifest.json + labels/); required "
                                      "unless --dry-run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace labels already in --out")
    add_config_arguments(parser, "refine config: a path or a shipped name (redepth, marigold)",
                         "e.g. redepth.steps=200 redepth.ensemble=3 caption.prompt='a street' "
                         "guidance.model=/models/sd15 device=cuda", default="redepth")
    add_dry_run_argument(parser, "the refinement of one image (redepth: its caption, then "
                                 "the refinement steps; marigold: one ensemble member)",
                         per_image=True)


def run(args: argparse.Namespace) -> int:
    from depth_perception_training.refine.config import load_refine_config

    cfg = load_refine_config(args.config, args.overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    if args.dry_run:
        from depth_perception_training.dry_run import print_report
        from depth_perception_training.dry_run_refine import dry_run_refine

        print_report(dry_run_refine(cfg, args.config, args.model, args.frame_size,
                                    args.dry_run_steps))
        return 0
    if (args.bag is None) == (args.images is None) or not args.out:
        raise ValueError("refine: give --bag or --images, and --out (or --dry-run)")
    from depth_perception_training.refine.labels import PseudoLabels
    from depth_perception_training.refine.run import run_refine

    out = run_refine(cfg, args.out, bag=args.bag, images=args.images, model=args.model,
                     overwrite=args.overwrite)
    labels = PseudoLabels(out)
    print(f"{len(labels)} {labels.kind} pseudo labels ({labels.source}, encoding "
          f"{labels.encoding}) in {out}")
    return 0
