"""``depth-perception replay BAG``: play a rosbag2 live (no ``ros2 bag play`` needed)."""
from __future__ import annotations

HELP = ("publish a rosbag2's topics live with their recorded timing (and /clock with "
        "--clock), for machines without `ros2 bag play`")


def add_arguments(parser) -> None:
    parser.add_argument("bag", help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor (default 1.0; 2.0 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="play only these topics (default: all)")
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock (rosgraph_msgs/Clock) with the bag time; run "
                             "the consumers with use_sim_time:=true")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="wait until these topics have a subscriber before playing")
    parser.add_argument("--wait-timeout", type=float, default=60.0,
                        help="seconds to wait for --wait-for subscribers (default 60)")


def run(args) -> int:
    from depth_perception.ros.replay import play

    if not args.rate > 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    return play(args)


def main(argv: list[str] | None = None) -> int:
    """Console entry (``depth_replay``): the same as ``depth-perception replay``."""
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser(prog="depth_replay", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"depth_replay: error: {exc}", file=sys.stderr)
        return 2
