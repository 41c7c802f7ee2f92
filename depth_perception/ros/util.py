"""Helpers of the ROS nodes that are neither QoS (:mod:`.qos`) nor diagnostics
(:mod:`.diagnostics`): optional imports of ROS packages missing from PyPI, the sparse
LiDAR reference of the scale policies and the colourised depth image.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)


# -- optional packages ------------------------------------------------------------------
def optional_import(name: str):
    """The module ``name`` or None when it is not installed (logged at debug level)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("optional module %s not available: %s", name, exc)
        return None


def import_diagnostic_updater():
    """``diagnostic_updater`` (a ROS 2 installation) or None (pip-only ROS 2)."""
    return optional_import("diagnostic_updater")
