"""The package's own ROS 2 messages (msg/), when they are built.

``depth_perception.msg`` is generated from ``msg/*.msg`` by rosidl: colcon builds it
with a sourced ROS 2; on pip-only machines ``scripts/build_interfaces.sh`` builds it
against the PyPI wheels (``./setup.sh`` runs it). The node and tools must keep working
without it, so they ask here instead of importing it:

    status_type = interfaces.message_type("DepthStatus")
    if status_type is None:
        log.info(interfaces.availability().reason)

Importing this module imports nothing from ROS.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

#: Messages defined in msg/.
MESSAGES = ("DepthStatus", "FrameMetrics")

BUILD_HINT = ("build them with `scripts/build_interfaces.sh` (pip-only ROS 2; ./setup.sh "
              "runs it) or `colcon build --packages-select depth_perception` and source "
              "install/setup.bash (ROS 2 installation)")


@dataclass(frozen=True)
class Availability:
    """Whether ``depth_perception.msg`` imports; ``reason`` says why not and how to fix."""

    available: bool
    reason: str = ""
    module: object = None


def _import_messages():
    try:
        return importlib.import_module("depth_perception.msg")
    except ImportError:
        # Built after depth_perception was imported (e.g. by a test or a long-running
        # tool): look for the prefix's directory again (depth_perception.pkg files).
        import pkgutil

        import depth_perception

        depth_perception.__path__ = pkgutil.extend_path(depth_perception.__path__,
                                                        "depth_perception")
        return importlib.import_module("depth_perception.msg")


@lru_cache(maxsize=1)
def availability() -> Availability:
    """Try once to import the generated messages (cached; ``availability.cache_clear()``
    to look again after a build)."""
    try:
        module = _import_messages()
        for name in MESSAGES:
            getattr(module, name)
    except ImportError as exc:
        return Availability(False, f"depth_perception messages are not built ({exc}); "
                                   f"{BUILD_HINT}")
    except AttributeError as exc:
        return Availability(False, f"depth_perception.msg is out of date ({exc}); rebuild: "
                                   f"{BUILD_HINT}")
    except OSError as exc:  # a typesupport library that does not load
        return Availability(False, f"depth_perception messages are built but their "
                                   f"libraries do not load ({exc}); rebuild: {BUILD_HINT}")
    return Availability(True, "", module)


def message_type(name: str):
    """The generated message class ``name`` (e.g. 'DepthStatus'), or None if not built.

    ValueError for a name that msg/ does not define.
    """
    if name not in MESSAGES:
        raise ValueError(f"unknown depth_perception message '{name}'; msg/ defines "
                         f"{list(MESSAGES)}")
    found = availability()
    return getattr(found.module, name) if found.available else None


def require(name: str):
    """Like :func:`message_type` but RuntimeError (with the build hint) if not built."""
    cls = message_type(name)
    if cls is None:
        raise RuntimeError(availability().reason)
    return cls
