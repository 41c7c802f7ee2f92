"""``depth-perception train TASK --config FILE [options] [key=value ...]``."""
from __future__ import annotations

import argparse

from depth_perception_training.commands import (add_config_arguments, add_dry_run_argument,
                                                print_config)

HELP = ("train a depth model (teacher: self-supervised monodepth2-family training from rosbags; "
        "student: SSD distillation on translated frames)")

#: task -> one-line description
TASKS = {
    "teacher": "self-supervised day-clear teacher (photometric + smoothness + velocity loss)",
    "student": "SSD student: distillation from a frozen teacher on translated frames "
               "(teacher loss, semantic loss)",
    "pose": "pretrain a pose backbone on bags with odometry/TF as supervision (saves a "
            "transformers folder for a strengthened pose net)",
    "metricgold": "MetricGold: fine-tune a Stable Diffusion UNet (Marigold objective) on "
                  "log-scaled metric depth from ground truth (synthetic drives)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="task", metavar="TASK")
    sub.required = True
    for task, help_text in TASKS.items():
        p = sub.add_parser(task, help=help_text, description=help_text,
                           epilog="Overrides go after the options, e.g. "
                                  "train teacher --config config/train/teacher_tiny.yaml "
                                  "trainer.max_steps=200 output_dir=runs/x")
        add_config_arguments(p, "experiment YAML (e.g. config/train/ssd_teacher.yaml); it may "
                                "name a base_config it extends",
                             "OmegaConf dotlist overrides, e.g. data.bags=[a,b] "
                             "trainer.max_steps=200 output_dir=runs/x")
        add_dry_run_argument(p, "one optimisation step at the recipe's batch on a "
                                "synthetic drive")
        p.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint of output_dir (same as "
                            "trainer.resume=auto; trainer.resume=PATH picks a checkpoint)")


def run(args: argparse.Namespace) -> int:
    from depth_perception_training.train.config import load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("trainer.resume=auto")
    cfg = load_config(args.config, overrides)
    if cfg.task != args.task:
        raise ValueError(f"{args.config} configures task '{cfg.task}', not '{args.task}'")
    if args.print_config:
        print_config(cfg)
        return 0

    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("accelerate").setLevel(logging.WARNING)   # per-file save messages
    if args.dry_run:
        from depth_perception_training.dry_run import print_report
        from depth_perception_training.dry_run_train import dry_run_train

        print_report(dry_run_train(cfg, args.config)[0])
        return 0
    from accelerate import PartialState

    if args.task == "pose":
        from depth_perception_training.train.pose import train_pose

        out = train_pose(cfg)
        if PartialState().is_main_process:
            r = out["result"]
            print(f"trained {r.step} steps, {r.nan_skips} non-finite steps skipped")
            if out["validation"]:
                v = out["validation"]
                print(f"validation: translation error {v['translation_error_m']:.3f} m "
                      f"(standing still: {v['still_translation_m']:.3f} m), rotation error "
                      f"{v['rotation_error_deg']:.3f} deg ({v['pairs']} pairs)")
            print(f"pose backbone: {out['backbone']} (model.pose.strengthened=true "
                  f"model.pose.pretrained={out['backbone']})")
        return 0

    if args.task == "metricgold":
        from depth_perception_training.train.metricgold import train_metricgold

        result = train_metricgold(cfg)
        if PartialState().is_main_process:
            print(f"trained {result.step} steps, {result.nan_skips} non-finite steps skipped")
            if result.validation:
                v, p = result.validation["all"], result.validation.get("prior")
                print(f"validation: abs_rel {v['abs_rel']:.4f} rmse {v['rmse']:.3f} a1 "
                      f"{v['a1']:.3f}" + (f" (image-blind prior abs_rel {p['abs_rel']:.4f})"
                                          if p else ""))
            print(f"model: {result.export_dir} (refine method: metricgold, "
                  f"metricgold.model={result.export_dir})")
        return 0

    if args.task == "student":
        from depth_perception_training.train.student import train_student as train
    else:
        from depth_perception_training.train.teacher import train_teacher as train
    result = train(cfg)

    if PartialState().is_main_process:
        print(f"trained {result.step} steps ({result.epoch} epochs), "
              f"{result.nan_skips} non-finite steps skipped")
        if result.validation:
            v = result.validation["all"]
            print(f"validation: abs_rel {v['abs_rel']:.4f} rmse {v['rmse']:.3f} "
                  f"a1 {v['a1']:.3f} scale_ratio {v['scale_ratio']:.3f} "
                  f"({v['n_images']} images)")
        if result.last_checkpoint:
            print(f"checkpoint: {result.last_checkpoint}")
        if result.export_dir:
            print(f"model: {result.export_dir}")
        for key, value in (getattr(result, "deployable", None) or {}).items():
            print(f"{key}: {value}")
    return 0
