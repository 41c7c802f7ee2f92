"""Fixtures of the ROS tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf2_msgs_built():
    """tf2_msgs importable in the venv: built by scripts/build_interfaces.sh if needed."""
    try:
        import tf2_msgs.msg  # noqa: F401
        return
    except ImportError:
        pass
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: tf2_msgs cannot be built (apt install cmake)")
    venv = Path(sys.prefix)
    proc = subprocess.run(["bash", str(ROOT / "scripts/build_interfaces.sh")],
                          env={**os.environ, "VENV": str(venv)}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import importlib
    import site

    site.main()  # pick up the new .pth in this interpreter
    importlib.invalidate_caches()
    import tf2_msgs.msg  # noqa: F401
