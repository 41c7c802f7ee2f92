"""The SSD student's test world: synthetic day-clear/night/rain bags of one drive, a
1-step tiny teacher trained on the day-clear bag, `paired` translations of it, and the
overrides of a 2-step student run on them (``from support.student_setup import ...``)."""
from __future__ import annotations

from pathlib import Path

SIZE = (128, 64)               # width, height: multiples of 32 (the tiny conv teacher)


def make_ssd_setup(root: Path) -> dict:
    """{"root", "bags": {condition: bag}, "teacher": run folder, "paired": translations}."""
    from depth_perception.synth import make_synthetic_bags
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import train_teacher
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    bags = dict(zip(("day-clear", "night", "rain"), make_synthetic_bags(
        root / "data", frames=10, size=SIZE, conditions=("day-clear", "night", "rain"), seed=3)))
    teacher = root / "teacher"
    train_teacher(load_config("teacher_tiny", [
        f"output_dir={teacher}", f"data.bags=[{bags['day-clear']}]", "trainer.max_steps=1",
        f"data.width={SIZE[0]}", f"data.height={SIZE[1]}", "data.batch_size=2",
        "trainer.val_every=-1", "trainer.checkpoint_every=0"]))
    translations = root / "paired"
    run_translate(load_translate_config("paired", [
        f"output_dir={translations}", f"source.bags=[{bags['day-clear']}]"]))
    return {"root": root, "bags": bags, "teacher": teacher, "paired": translations}


def student_overrides(setup: dict, out, *extra) -> list[str]:
    """``key=value`` overrides of a 2-step student run (no validation, checkpoints, ONNX)."""
    b = setup["bags"]
    return [f"output_dir={out}", f"data.bags=[{b['day-clear']}]",
            f"student.teacher={setup['teacher']}", f"student.translations=[{setup['paired']}]",
            f"data.width={SIZE[0]}", f"data.height={SIZE[1]}", "data.batch_size=2",
            "data.num_workers=0", "trainer.max_steps=2", "trainer.val_every=-1",
            "trainer.checkpoint_every=0", "trainer.progress=false", "trainer.log_every=1",
            "student.export_onnx=false", *extra]
