"""Verbs the training subtree adds to ``depth-perception`` (entry point group
``depth_perception.commands``)."""
from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str,
                         overrides_help: str, default: str | None = None) -> None:
    """The layered-configuration arguments every training verb takes: ``--config`` (a YAML
    path or a shipped name; required unless ``default``), ``--print-config`` and the
    ``key=value`` overrides applied last."""
    parser.add_argument("--config", required=default is None, default=default,
                        help=config_help)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def print_config(cfg) -> None:
    """Print a resolved configuration (DictConfig or config dataclass) as YAML."""
    from omegaconf import OmegaConf

    from depth_perception_training.train.config import to_yaml

    print(to_yaml(cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)), end="")


def add_dry_run_argument(parser: argparse.ArgumentParser, what: str,
                         per_image: bool = False) -> None:
    """``--dry-run``: build the recipe's models with random weights at full size, run
    ``what`` once, print one JSON line (:mod:`depth_perception_training.dry_run`).
    ``per_image``: also ``--frame-size`` and ``--dry-run-steps`` (translate, refine)."""
    parser.add_argument("--dry-run", action="store_true",
                        help=f"build the recipe's models with random weights at their real "
                             f"size, run {what}, print params, FLOPs, peak memory and time "
                             "as one JSON line (no download, no data needed)")
    if per_image:
        parser.add_argument("--frame-size", default="1600x900", type=frame_size,
                            help="--dry-run: the frame WxH (default nuScenes' 1600x900)")
        parser.add_argument("--dry-run-steps", type=int, default=None,
                            help="--dry-run: diffusion / refinement steps to run (>= 2; "
                                 "default all); the rest are counted as the last one run")


def frame_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H), positive."""
    try:
        size = tuple(int(v) for v in str(text).lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 1600x900, got {text!r}")
    return size
