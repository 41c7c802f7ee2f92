"""Packaging: the executables pip installs and the ones colcon installs are the same,
the installed metadata matches the sources, and the training subtree's verbs join the
command line through entry points."""
from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pip_console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's CONSOLE_SCRIPTS (parsed, not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "CONSOLE_SCRIPTS":
            entries = ast.literal_eval(node.value)
            return {k.strip(): v.strip() for k, v in (e.split("=", 1) for e in entries)}
    raise AssertionError("setup.py defines no CONSOLE_SCRIPTS")


def colcon_executables() -> dict[str, str]:
    """name -> 'module:function' of the executables CMakeLists.txt installs."""
    text = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(_executables(.*?)\)", text, re.S).group(1)
    return dict(entry.split("=", 1) for entry in re.findall(r'"([^"]+)"', block))


def test_pip_and_colcon_install_the_same_executables():
    pip, colcon = pip_console_scripts(), colcon_executables()
    assert pip == colcon
    assert {"depth-perception", "depth_node", "evaluator_node", "depth_replay"} <= set(pip)
    for name, target in pip.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_every_folder_of_python_modules_is_a_package_pip_installs():
    """find_packages (setup.py) skips a folder without __init__.py: depth_perception/ros
    once lacked one, and a vehicle's `pip install .` could not start depth_node."""
    from setuptools import find_packages

    for top in ("depth_perception", "training/depth_perception_training"):
        base = ROOT / top
        folders = {p.parent for p in base.rglob("*.py") if "__pycache__" not in p.parts}
        missing = sorted(str(f.relative_to(ROOT)) for f in folders
                         if not (f / "__init__.py").is_file())
        assert missing == [], f"folders of modules without __init__.py: {missing}"
    found = set(find_packages(str(ROOT), include=["depth_perception", "depth_perception.*"]))
    want = {".".join(f.relative_to(ROOT).parts) for f in
            {p.parent for p in (ROOT / "depth_perception").rglob("*.py")
             if "__pycache__" not in p.parts}}
    assert want <= found and "depth_perception.ros" in found


def test_installed_metadata_matches_the_sources():
    """A stale install (old entry points) would make the executables run old code."""
    installed = {ep.name: ep.value for ep in distribution("depth_perception").entry_points
                 if ep.group == "console_scripts"}
    assert installed == pip_console_scripts()


def test_training_verbs_join_the_command_through_entry_points():
    from depth_perception.cli import PLUGIN_GROUP, _verbs

    plugins = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    assert {"train", "export", "demo"} <= set(plugins)
    assert all(v.startswith("depth_perception_training.") for v in plugins.values())
    verbs = _verbs()
    for name in ("synth", "evaluate", "replay", *plugins):      # onboard + plugins
        module = verbs[name]
        assert callable(module.run) and callable(module.add_arguments) and module.HELP


def test_training_package_ships_its_configs():
    import depth_perception_training as dpt

    assert (dpt.CONFIG_DIR / "train" / "teacher_tiny.yaml").is_file()
    assert dpt.resolve_config("config/train/teacher_tiny.yaml") == \
        dpt.resolve_config("teacher_tiny") == dpt.CONFIG_DIR / "train" / "teacher_tiny.yaml"
    assert (dpt.CONFIG_DIR / "accelerate" / "cpu_ddp.yaml").is_file()


def test_onboard_install_requires_no_training_dependency():
    requires = distribution("depth_perception").requires or []
    core = [r for r in requires if "extra ==" not in r]
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in core}
    assert not names & {"torch", "transformers", "diffusers", "accelerate"}, core
    assert {"numpy", "onnxruntime", "onnx", "rosbags"} <= names


@pytest.mark.slow
def test_what_a_vehicle_installs_runs_an_onnx_model_without_torch(tmp_path):
    """`pip install .` into a fresh venv (no extras, no training subtree): no torch,
    transformers, diffusers or accelerate arrive, and the onboard tools make a bag and
    score an ONNX model on it through onnxruntime."""
    from support.models_fixtures import tiny_depth_anything_onnx

    venv = tmp_path / "vehicle"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    found = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in "
                            "('torch', 'transformers', 'diffusers', 'accelerate', "
                            "'depth_perception_training') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=120)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
    onnx_path = tiny_depth_anything_onnx(tmp_path / "m.onnx", 56, 168)
    tool = venv / "bin" / "depth-perception"
    env = {**os.environ, "PYTHONPATH": ""}
    synth = subprocess.run([str(tool), "synth", str(tmp_path / "bags"), "--frames", "4",
                            "--size", "160x48", "--conditions", "day-clear"],
                           capture_output=True, text=True, timeout=600, env=env)
    assert synth.returncode == 0, synth.stderr[-3000:]
    bag = next((tmp_path / "bags").iterdir())
    ev = subprocess.run([str(tool), "evaluate", "--bag", str(bag), "--model", str(onnx_path),
                         "--gt", "/ground_truth/depth", "--out", str(tmp_path / "eval"),
                         "--no-plots"], capture_output=True, text=True, timeout=600, env=env)
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "onnxruntime" in json.dumps(metrics)
    # the training verbs are not there, and say nothing misleading
    train = subprocess.run([str(tool), "train", "teacher"], capture_output=True, text=True,
                           timeout=120, env=env)
    assert train.returncode != 0 and "invalid choice: 'train'" in train.stderr
