"""``depth-perception <verb>``: one command line tool for the whole package.

Verbs are the modules of :mod:`depth_perception.commands` (the onboard verbs) plus the
modules that installed packages declare in the entry point group
``depth_perception.commands`` (the training subtree adds ``train``, ``export``, ``demo``,
...). Each verb module defines ``HELP``, ``add_arguments(parser)`` and ``run(args)``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys
import threading
from importlib.metadata import entry_points

from depth_perception import __version__, commands

#: Entry point group through which other installed packages add verbs.
PLUGIN_GROUP = "depth_perception.commands"


def _verbs() -> dict:
    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        # a trailing underscore keeps a Python keyword out of the module name (import_)
        found[info.name.rstrip("_").replace("_", "-")] = module
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in found:
            continue                     # an onboard verb is never shadowed by a plugin
        try:
            found[ep.name] = ep.load()
        except ImportError as exc:      # a plugin whose dependencies are missing
            logging.getLogger(__name__).debug("verb %s unavailable: %s", ep.name, exc)
            found[ep.name] = _unavailable(ep, exc)
    return dict(sorted(found.items()))


class _unavailable:
    """Stand-in verb for a plugin that failed to import: says why when run."""

    def __init__(self, ep, exc: Exception):
        self.HELP = f"(unavailable: {exc})"
        self._message = (f"verb '{ep.name}' ({ep.value}) cannot be loaded: {exc}. Install the "
                         "training subtree and its dependencies: pip install ./training")

    def add_arguments(self, parser) -> None:
        parser.add_argument("rest", nargs="*")

    def run(self, args) -> int:
        raise RuntimeError(self._message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depth-perception",
        description="Metric monocular depth for robots and vehicles: data, training, "
        "evaluation, export and replay tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity (default: INFO)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name, module in _verbs().items():
        verb_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the verb is, so that it unwinds as on Ctrl-C."""


def _raise_terminated(signum, _frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run a verb. SIGINT and SIGTERM interrupt it (its ``finally`` blocks tidy up; ROS
    verbs such as ``replay`` stop by themselves and return 0): exit 130 and 143, the
    shell's 128 + signal number, without a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return int(args._run(args) or 0)
    except _Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        # Boundary errors are meant for the user: print the message, not a traceback.
        logging.getLogger("depth_perception").debug("error", exc_info=True)
        print(f"depth-perception {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
