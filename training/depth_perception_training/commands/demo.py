"""``depth-perception demo``: synthetic bags -> tiny teacher -> depth node over DDS -> report."""
from __future__ import annotations

from depth_perception.camera import parse_size

HELP = ("run the whole pipeline on synthetic day-clear, night and rain bags: train a tiny "
        "teacher (or use --model), replay the bags through the depth node over DDS, "
        "evaluate online and offline, write the report (no camera, GPU or download)")


def add_arguments(parser) -> None:
    from depth_perception_training.demo import DemoConfig

    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--frames", type=int, default=20, help="frames per bag (default 20)")
    parser.add_argument("--size", default="320x96", help="camera size WxH (default 320x96)")
    parser.add_argument("--train-size", default="320x96",
                        help="network input WxH, multiples of 32 (default 320x96)")
    parser.add_argument("--train-steps", type=int, default=DemoConfig.train_steps,
                        help="tiny teacher training steps (default: teacher_tiny.yaml's, 600); "
                             "its learning-rate decay keeps its place in the run (half-way)")
    parser.add_argument("--train-scenes", type=int, default=6,
                        help="synthetic day-clear training drives of other streets (default 6)")
    parser.add_argument("--train-frames", type=int, default=60,
                        help="frames per training drive (default 60)")
    parser.add_argument("--pose-steps", type=int, default=None,
                        help="pose pretraining steps (default: pose_tiny.yaml's)")
    parser.add_argument("--student-steps", type=int, default=DemoConfig.student_steps,
                        help="SSD student distillation steps after the teacher (default "
                             f"{DemoConfig.student_steps}; 0: no student)")
    parser.add_argument("--model", default=None,
                        help="evaluate this model instead of training the tiny teacher")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rate", type=float, default=DemoConfig.rate,
                        help=f"replay rate (default {DemoConfig.rate}: the recorded timing; "
                             "frames the node drops are not scored online, and the report "
                             "says how many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distortion", default=None, metavar="MODEL:COEFFS",
                        help="lens of the evaluated drives (synth --distortion, e.g. "
                             "plumb_bob:-0.3): scored through the node's rectification "
                             "online and evaluate's offline")
    parser.add_argument("--offline-only", action="store_true",
                        help="skip the replay over DDS (no rclpy needed)")


def run(args) -> int:
    from depth_perception_training.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, frames=args.frames, size=parse_size(args.size),
                     train_size=parse_size(args.train_size), train_steps=args.train_steps,
                     train_scenes=args.train_scenes, train_frames=args.train_frames,
                     pose_steps=args.pose_steps,
                     model=args.model, backend=args.backend, seed=args.seed, rate=args.rate,
                     online=not args.offline_only, student_steps=args.student_steps,
                     distortion=args.distortion)
    result = run_demo(cfg)
    print(result.model_note)
    print()
    print(result.table)
    print()
    for cond, (scored, played, dropped) in result.replay.items():
        print(f"online at {cfg.rate}x, {cond}: {scored} of {played} replayed frames scored "
              f"({dropped} dropped by the depth node)")
    for cond, a in result.agreement.items():
        diff, tae = a["max_abs_rel_diff"], a["max_tae_diff"]
        print(f"online vs offline, {cond}: {a['pairs']} common frame pairs, max |d TAE| = "
              + ("n/a" if tae is None else f"{tae:.2e}")
              + f"; {a['frames']} common frames, max |d absRel| = "
              + ("n/a" if diff is None else f"{diff:.2e}"))
    print(f"report:  {result.report}")
    print(f"metrics: {result.metrics}")
    return 0
