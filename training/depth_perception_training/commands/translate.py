"""``depth-perception translate --config FILE [key=value ...]``."""
from __future__ import annotations

import argparse

from depth_perception_training.commands import (add_config_arguments, add_dry_run_argument,
                                                print_config)

HELP = ("translate day-clear frames of rosbags into night/rain/snow (gdt: SSD's diffusion "
        "translation; paired; photometric), resumable and shardable with Accelerate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "translate YAML (config/translate/gdt.yaml, paired.yaml, "
                                 "photometric.yaml, gdt_tiny.yaml, or a path)",
                         "OmegaConf dotlist overrides, e.g. source.bags=[/data/day1] "
                         "output_dir=runs/gdt conditions=[night]")
    add_dry_run_argument(parser, "one GDT translation of one frame, one stage at a time "
                                 "(caption, control depth, diffusion)", per_image=True)
    parser.epilog = ("A rerun with the same output_dir continues where a previous run "
                     "stopped. Several processes: accelerate launch ... -m "
                     "depth_perception.cli translate --config ...")


def run(args: argparse.Namespace) -> int:
    from depth_perception_training.translate.config import load_translate_config

    cfg = load_translate_config(args.config, args.overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    import logging

    from depth_perception_training.translate.run import run_translate

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("diffusers", "transformers", "accelerate"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.dry_run:
        from depth_perception_training.dry_run import print_report
        from depth_perception_training.dry_run_translate import dry_run_translate

        print_report(dry_run_translate(cfg, args.config, args.frame_size, args.dry_run_steps))
        return 0
    result = run_translate(cfg)
    print(f"process {result.rank}/{result.world}: {result.frames} frames, translated "
          f"{result.translated}, skipped {result.skipped} (done before), rejected "
          f"{result.rejected} by the consistency check")
    if result.records is not None:
        accepted = sum(r["accepted"] for r in result.records)
        print(f"manifest: {cfg.output_dir}/manifest.jsonl ({len(result.records)} samples, "
              f"{accepted} accepted)")
        for path, counts in (result.bags or {}).items():
            print(f"bag: {path} ({counts['replaced']} images, {counts['dropped']} left out)")
    return 0
