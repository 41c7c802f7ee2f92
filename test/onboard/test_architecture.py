"""The shape of the code: layers, import directions, cycles, module size, packaging.

ARCHITECTURE.md draws what these tests hold the code to:

* ``depth_perception`` (onboard) never imports ``depth_perception_training``;
* inside the onboard package only ``depth_perception.ros`` imports rclpy;
* layers (:data:`LAYERS`, lowest first: base modules, data and models, runtime and
  synth, evaluation, ros, commands, training) never import a higher one;
* no import cycle in either package, counting imports inside functions too;
* no module over 600 lines (test modules included);
* importing the onboard package (models aside, which need torch by nature) pulls no
  torch, transformers, diffusers or accelerate, and neither does a depth node that runs
  an ONNX model.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"depth_perception": ROOT / "depth_perception",
            "depth_perception_training": ROOT / "training" / "depth_perception_training"}
TRAINING_DEPS = ("torch", "transformers", "diffusers", "accelerate")
#: onboard modules that are torch code by nature (the torch backend's model classes)
TORCH_MODULES = ("depth_perception.models.",)
MAX_LINES = 600


def _modules(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


ALL = {**_modules("depth_perception"), **_modules("depth_perception_training")}
#: modules that can be imported for inspection (``__main__`` runs the command line)
IMPORTABLE = [m for m in ALL if not m.endswith(".__main__")]


def _imports(module: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:      # `from pkg import submodule` names a module
                names.add(f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in ALL else prefix)
    return names


def _internal_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in ALL.items():
        deps = set()
        for name in _imports(module, path):
            # the most specific module of ours that the name refers to
            parts = name.split(".")
            while parts and ".".join(parts) not in ALL:
                parts.pop()
            if parts and ".".join(parts) != module:
                deps.add(".".join(parts))
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle_and_lazy_imports():
    # guard against a walker that can never find anything
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    deps = _internal_graph()["depth_perception.runtime.backends"]
    assert "depth_perception.runtime.backends.onnxruntime_backend" in deps  # inside a function


def test_no_import_cycles_in_either_package():
    assert _cycles(_internal_graph()) == []


def test_onboard_never_imports_training():
    offenders = {m: sorted(n for n in _imports(m, p) if n.startswith("depth_perception_training"))
                 for m, p in ALL.items() if not m.startswith("depth_perception_training")}
    assert {m: n for m, n in offenders.items() if n} == {}


#: the layers, lowest first: a module may import its own layer and the ones below,
#: never one above (imports inside functions count). A module belongs to the longest
#: prefix listed; "depth_perception" itself (its ``__init__``, and any new top-level
#: module until it is placed) is base.
LAYERS = (
    ("base", ("depth_perception", "depth_perception.camera", "depth_perception.units",
              "depth_perception.metadata", "depth_perception.conversions",
              "depth_perception.buffers", "depth_perception.cloud",
              "depth_perception.colorize", "depth_perception.metrics",
              "depth_perception.hub", "depth_perception.files",
              "depth_perception.rectify")),
    ("data, models", ("depth_perception.data", "depth_perception.models")),
    ("runtime, synth", ("depth_perception.runtime", "depth_perception.synth",
                        "depth_perception.datasets")),
    ("evaluation", ("depth_perception.evaluation",)),
    ("ros", ("depth_perception.ros",)),
    ("commands", ("depth_perception.commands", "depth_perception.cli",
                  "depth_perception.__main__")),
    ("training", ("depth_perception_training",)),
)
_RANK = {prefix: i for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}


def _layer(module: str) -> int:
    parts = module.split(".")
    return next(_RANK[p] for n in range(len(parts), 0, -1)
                if (p := ".".join(parts[:n])) in _RANK)


def _upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[_layer(a)][0]}) -> {b} ({LAYERS[_layer(b)][0]})"
                  for a, deps in graph.items() for b in deps if _layer(b) > _layer(a))


def test_no_import_goes_up_a_layer():
    # the check can fail: data importing the estimator would be an upward edge
    assert _upward_edges({"depth_perception.data.bag": {"depth_perception.runtime.estimator"},
                          "depth_perception.ros.replay": {"depth_perception.data.bag"}}) == [
        "depth_perception.data.bag (data, models) -> depth_perception.runtime.estimator "
        "(runtime, synth)"]
    assert [_layer(m) for m in ("depth_perception", "depth_perception.cloud",
                                "depth_perception.runtime.backends.base",
                                "depth_perception.cli", "depth_perception_training.tiny")] == \
        [0, 0, 2, 5, 6]
    assert _upward_edges(_internal_graph()) == []


def test_only_the_ros_folder_imports_rclpy():
    offenders = sorted(m for m, p in ALL.items()
                       if m.startswith("depth_perception.")
                       and not m.startswith("depth_perception.ros")
                       and any(n == "rclpy" or n.startswith("rclpy.") for n in _imports(m, p)))
    assert offenders == []
    assert any("rclpy" in n for n in _imports("depth_perception.ros.depth_node",
                                               ALL["depth_perception.ros.depth_node"]))


def test_no_module_over_600_lines():
    """Package modules, test modules and their helpers alike."""
    files = [*ALL.values(), *sorted((ROOT / "test").rglob("*.py"))]
    assert len(files) > len(ALL) + 50
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _callers(function: str) -> set[str]:
    """Modules of either package that call ``function`` (by name or as an attribute)."""
    found = set()
    for module, path in ALL.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name == function:
                    found.add(module)
    return found


#: helpers with one home: the only module (of either package) defining a top-level
#: function of that name
ONE_HOME = {"hub_offline": "depth_perception.hub",
            "make_transform": "depth_perception.data.tf",
            "invert_transform": "depth_perception.data.tf",
            "stamp_to_ns": "depth_perception.conversions",
            "ns_to_stamp": "depth_perception.conversions",
            "mark_out_of_range": "depth_perception.units",
            "camera_from_lidar": "depth_perception.data.projection"}


def test_shared_helpers_are_defined_once():
    found = {name: set() for name in ONE_HOME}
    for module, path in ALL.items():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef) and node.name in found:
                found[node.name].add(module)
    assert found == {name: {home} for name, home in ONE_HOME.items()}


def test_range_marking_is_applied_once_in_the_estimator():
    """REP 117 range marking (``units.mark_out_of_range``) happens in one layer: the
    estimator, with the model's range narrowed by its options (the node's min_depth /
    max_depth); nothing downstream marks the depth again."""
    assert _callers("mark_out_of_range") == {"depth_perception.runtime.estimator"}


def test_bench_scripts_leave_sys_path_alone():
    """Benches import the installed packages (shared models live in
    ``depth_perception_training.tiny``), never each other through sys.path."""
    benches = sorted((ROOT / "bench").glob("*.py"))
    assert len(benches) >= 3
    assert [p.name for p in benches if "sys.path" in p.read_text()] == []


_BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_every_onboard_module_imports_without_rclpy():
    mods = [m for m in IMPORTABLE if m.startswith("depth_perception") and
            not m.startswith(("depth_perception.ros", "depth_perception_training"))]
    code = _BLOCK.format(blocked=("rclpy",)) + textwrap.dedent(f"""
        import importlib
        for m in {mods!r}:
            importlib.import_module(m)
        print("imported", len({mods!r}))
    """)
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"imported {len(mods)}" in r.stdout


def test_onboard_modules_pull_no_training_dependencies():
    """Every onboard module imports with torch & co. blocked, except the model classes,
    which refuse with a message saying how to install torch; normally imported, none of
    them leaves torch & co. in sys.modules."""
    mods = [m for m in IMPORTABLE if m.startswith("depth_perception") and
            not m.startswith(("depth_perception_training",) + TORCH_MODULES)]
    code = _BLOCK.format(blocked=TRAINING_DEPS) + textwrap.dedent(f"""
        import importlib
        for m in {mods!r}:
            importlib.import_module(m)
        try:
            importlib.import_module("depth_perception.models.dpt_depth")
        except ImportError as exc:
            print("models refused:", exc)
        print("imported", len({mods!r}))
    """)
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"imported {len(mods)}" in r.stdout
    assert "models refused:" in r.stdout and "pip install" in r.stdout, r.stdout
    # without blocking: nothing heavy appears in sys.modules as a side effect
    code = textwrap.dedent(f"""
        import importlib, sys
        for m in {mods!r}:
            importlib.import_module(m)
        print(sorted({{k.split('.')[0] for k in sys.modules}} & set({TRAINING_DEPS!r})))
    """)
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.ros
def test_depth_node_on_an_onnx_model_imports_no_training_dependency(tmp_path):
    """The vehicle's entry point (``python -m depth_perception.ros.depth_node``) on an
    ONNX model, fed frames until it publishes depth: ``-X importtime`` lists every module
    the process imported, and torch, transformers, diffusers and accelerate are not among
    them."""
    from sensor_msgs.msg import CameraInfo, Image
    from support.models_fixtures import tiny_depth_anything_onnx
    from support.rostools import RosHarness, camera_info_msg, image_msg, stop_process

    from depth_perception.camera import Intrinsics

    onnx_path = tiny_depth_anything_onnx(tmp_path / "m.onnx", 56, 70)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "depth_perception.ros.depth_node",
         "--ros-args", "-p", f"model:={onnx_path}", "-p", "backend:=onnxruntime"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    K = Intrinsics(fx=60.0, fy=60.0, cx=40.0, cy=30.0, width=80, height=60)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    try:
        with RosHarness() as ros:
            depth = ros.collect(Image, "/depth/image")
            pub_img, pub_info = ros.publisher(Image, "/image"), ros.publisher(CameraInfo,
                                                                                "/camera_info")
            ros.wait_matched(pub_img, timeout=120)
            for k in range(200):               # until one depth image comes back
                stamp = 1_000_000_000 + k * 50_000_000
                pub_info.publish(camera_info_msg(K, stamp))
                pub_img.publish(image_msg(rgb, stamp))
                try:
                    depth.wait_count(1, timeout=0.5)
                    break
                except AssertionError:
                    continue
            assert depth.messages, "the node published no depth"
    finally:
        err = stop_process(proc)
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in err.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "rclpy" in imported   # the log is complete
    assert sorted(imported & set(TRAINING_DEPS)) == []
