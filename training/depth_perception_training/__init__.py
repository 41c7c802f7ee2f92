"""depth_perception_training: the training subtree of depth_perception.

Runs on a CUDA workstation (and, at tiny scale, on a CPU): the self-supervised teacher
(:mod:`.train`), training geometry and losses (:mod:`.geometry`, :mod:`.losses`), the
torch dataset over the onboard data layer (:mod:`.dataset`), export from checkpoints
(:mod:`.export`), the demo, and the command-line verbs it adds to ``depth-perception``
(:mod:`.commands`). Configurations ship in ``config/`` inside this package.

Depends on :mod:`depth_perception`; nothing in ``depth_perception`` imports this package.
Importing it has no side effects (no torch until a submodule needs it).
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Shipped configurations: ``config/train/*.yaml``, ``config/accelerate/*.yaml``, ...
CONFIG_DIR = Path(__file__).resolve().parent / "config"


def resolve_config(path: str | Path, kind: str = "train") -> Path:
    """A configuration path as the user typed it -> an existing file.

    Tried in order: the path itself; the same path under the shipped ``config/``
    (``config/train/ssd_teacher.yaml`` and ``train/ssd_teacher.yaml`` both work from any folder);
    a bare name in ``config/<kind>/`` (``teacher_tiny`` or ``teacher_tiny.yaml``).
    """
    p = Path(path)
    if p.is_file():
        return p
    parts = p.parts[1:] if p.parts and p.parts[0] == "config" else p.parts
    candidates = [CONFIG_DIR.joinpath(*parts)] if parts else []
    name = p.name if p.suffix else p.name + ".yaml"
    candidates.append(CONFIG_DIR / kind / name)
    for c in candidates:
        if c.is_file():
            return c
    shipped = sorted(x.stem for x in (CONFIG_DIR / kind).glob("*.yaml"))
    raise FileNotFoundError(f"config '{path}' not found (neither as a path nor among the "
                            f"shipped {kind} configs: {', '.join(shipped)})")
