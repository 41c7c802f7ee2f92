"""SSD's central claim at CPU scale: the student beats its teacher at night and in rain.

:func:`reproduce` runs the whole chain on synthetic bags and scores it on held-out
scenes (other seeds), metric (no median scaling), against dense ground truth:

1. synthetic drives: training scenes (day-clear, night, rain rendered from the same
   drive) and held-out scenes;
2. the tiny teacher (``teacher_tiny``) on the training scenes' day-clear bags;
3. translations of those day-clear bags with each translator (``paired``: the night /
   rain renderings of the same frames; ``photometric``: classical synthesis);
4. one student (``student_tiny``) per translator, from the teacher;
5. :func:`depth_perception.evaluation.offline.evaluate` of the teacher, each student
   (its exported ONNX) and the image-blind prior of the training bags on the held-out
   bags, per condition.

Used by ``bench/bench_student.py`` (full budget), the slow test (short budget) and the
demo. Steps already done in ``work`` (bags, runs with a model) are reused.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CONDITIONS = ("day-clear", "night", "rain")
GT_TOPIC = "/ground_truth/depth"


@dataclass
class ReproduceConfig:
    size: tuple = (320, 96)                 # width, height: teacher_tiny.yaml's
    train_seeds: tuple = (1, 2, 3, 4)
    test_seeds: tuple = (101,)
    train_frames: int = 40
    test_frames: int = 30
    teacher_steps: int | None = None        # None: teacher_tiny.yaml's
    student_steps: int = 150
    translators: tuple = ("paired", "photometric")
    student_seeds: tuple = (0,)             # one student per translator and seed
    #: students trained at once, each in its own process with the caller's torch thread
    #: count (2 on a 2-core machine with 1 thread each: the two translators side by side)
    student_workers: int = 1
    #: torch threads of the teacher's training, alone on the machine (None: the caller's)
    teacher_threads: int | None = None
    teacher_overrides: list = field(default_factory=list)
    student_overrides: list = field(default_factory=list)


def _synth(root: Path, seeds, frames: int, size) -> dict:
    """{seed: {condition: bag}}: one varied drive per seed (rig and street drawn from
    the seed), rendered in every condition (reused when complete)."""
    from depth_perception.synth import make_varied_drives

    bags = make_varied_drives(root, seeds, frames, tuple(size), conditions=CONDITIONS)
    return {seed: dict(zip(CONDITIONS, bags[i * len(CONDITIONS):(i + 1) * len(CONDITIONS)]))
            for i, seed in enumerate(seeds)}


def _has_model(run: Path) -> bool:
    return (run / "model" / "metadata.json").is_file()


def train_teacher_run(run: Path, day_bags, steps: int | None, overrides=()) -> float:
    """Train ``teacher_tiny`` into ``run`` (skipped when it has a model); seconds."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import train_teacher

    if _has_model(run):
        return 0.0
    started = time.perf_counter()
    steps = [f"trainer.max_steps={steps}"] if steps else []
    cfg = load_config("teacher_tiny", [f"output_dir={run}", *steps,
                                       "data.bags=[" + ",".join(map(str, day_bags)) + "]",
                                       "trainer.val_every=-1", "trainer.checkpoint_every=0",
                                       *overrides])
    train_teacher(cfg)
    return time.perf_counter() - started


def translate_run(out: Path, translator: str, day_bags) -> Path:
    """``depth-perception translate --config <translator>`` over ``day_bags`` into ``out``."""
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    if not (out / "manifest.jsonl").is_file():
        cfg = load_translate_config(translator, [
            f"output_dir={out}", "source.bags=[" + ",".join(map(str, day_bags)) + "]"])
        run_translate(cfg)
    return out


def train_student_run(run: Path, teacher: Path, translations: Path, day_bags, steps: int,
                      overrides=()) -> dict:
    """Train ``student_tiny`` into ``run``; returns steps/s and the teacher-forward share."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.export.deployable import export_deployable
    from depth_perception_training.train.student import build_student_trainer

    if _has_model(run) and (run / "timing.json").is_file():
        return json.loads((run / "timing.json").read_text())
    cfg = load_config("student_tiny", [
        f"output_dir={run}", f"trainer.max_steps={steps}", f"student.teacher={teacher}",
        f"student.translations=[{translations}]",
        "data.bags=[" + ",".join(map(str, day_bags)) + "]",
        "trainer.val_every=-1", "trainer.checkpoint_every=0", *overrides])
    trainer, objective = build_student_trainer(cfg)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    t = objective.timing
    timing = {"steps": int(t["calls"]), "seconds": seconds,
              "steps_per_s": t["calls"] / max(seconds, 1e-9),
              "teacher_share": t["teacher"] / max(t["total"], 1e-9)}
    export_deployable(run / "model", int(cfg.data.height), int(cfg.data.width), engine=False)
    (run / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    return timing


def score(models: dict, bags, prior_bags=()) -> dict:
    """{row name: {condition: {abs_rel, a1, frames}}} from the offline evaluation against
    the dense ground truth (0.1-80 m, no median scaling); ``models``: name -> model path;
    with ``prior_bags`` the image-blind prior of those bags is a row ("prior")."""
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.evaluation.prior import PRIOR_NAME

    config = EvaluateConfig(reference=GT_TOPIC, prior="bags" if prior_bags else "none",
                            prior_bags=tuple(str(b) for b in prior_bags))
    specs = [ModelSpec(str(path), name=name) for name, path in models.items()]
    results = evaluate(bags, config, models=specs)
    table = {}
    for name, res in results.models.items():
        table["prior" if name == PRIOR_NAME else name] = {
            g: {"abs_rel": v["abs_rel"], "a1": v.get("a1"), "frames": v["frames"]}
            for g, v in res.summary().items()}
    return table


def reproduce(work: str | Path, config: ReproduceConfig | None = None) -> dict:
    """Run steps 1-5 of the module doc in ``work``; returns the table and timings."""
    c = config or ReproduceConfig()
    work = Path(work)
    timings = {}
    # 1. Bags
    train = _synth(work / "data" / "train", c.train_seeds, c.train_frames, c.size)
    test = _synth(work / "data" / "test", c.test_seeds, c.test_frames, c.size)
    day_bags = [train[s]["day-clear"] for s in c.train_seeds]
    test_bags = [test[s][cond] for s in c.test_seeds for cond in CONDITIONS]
    # 2. Teacher
    teacher = work / "teacher"
    sized = [f"data.width={c.size[0]}", f"data.height={c.size[1]}"]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(c.teacher_threads or threads)
    try:
        timings["teacher_seconds"] = train_teacher_run(teacher, day_bags, c.teacher_steps,
                                                       [*sized, *c.teacher_overrides])
    finally:
        torch.set_num_threads(threads)
    # scored as deployed: the fixed-size ONNX the node would run
    if not (teacher / "model.onnx").is_file():
        from depth_perception_training.export.deployable import export_deployable

        export_deployable(teacher / "model", c.size[1], c.size[0], engine=False)
    # 3-4. Translations and students
    models = {"teacher": teacher / "model.onnx"}
    jobs = {}
    for name in c.translators:
        translations = translate_run(work / f"translate_{name}", name, day_bags)
        for seed in c.student_seeds:
            row = student_row(name, seed, c.student_seeds)
            run = work / (f"student_{name}" if row == f"student ({name})"
                          else f"student_{name}_seed{seed}")
            jobs[row] = (run, teacher, translations, day_bags, c.student_steps,
                         [*sized, f"seed={seed}", *c.student_overrides])
            models[row] = run / "model.onnx"
    students = _train_students(jobs, c.student_workers)
    # 5. Scores on the held-out scenes
    table = score(models, test_bags, prior_bags=day_bags)
    return {"table": table, "students": students, "timings": timings,
            "test_bags": [str(b) for b in test_bags]}


def _student_job(threads: int, args: tuple) -> dict:
    import torch

    torch.set_num_threads(threads)
    return train_student_run(*args)


def _train_students(jobs: dict, workers: int) -> dict:
    """{row: timing} of :func:`train_student_run` over ``jobs`` ({row: its arguments}),
    ``workers`` at once in spawned processes (1: here, one after the other). Spawned
    processes import the calling script again: a script calling this needs the usual
    ``if __name__ == "__main__":`` guard."""
    if workers <= 1 or len(jobs) <= 1:
        return {row: train_student_run(*args) for row, args in jobs.items()}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = torch.get_num_threads()
    with ProcessPoolExecutor(min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {row: pool.submit(_student_job, threads, args) for row, args in jobs.items()}
        return {row: f.result() for row, f in futures.items()}


def student_row(translator: str, seed: int, seeds=(0,)) -> str:
    """Table row of a student: ``student (paired)``, or with several seeds
    ``student (paired, seed 1)``."""
    return f"student ({translator})" if len(seeds) == 1 else f"student ({translator}, seed {seed})"


def format_table(table: dict, conditions=CONDITIONS) -> str:
    """Markdown table of abs_rel per row and condition."""
    lines = ["| abs_rel (held-out, metric) | " + " | ".join(conditions) + " |",
             "|---|" + "---|" * len(conditions)]
    for name, groups in table.items():
        cells = [f"{groups[c]['abs_rel']:.3f}" if c in groups else "-" for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim_holds(table: dict, row: str, day_tolerance: float = 0.05) -> dict:
    """SSD's direction per condition for the student row ``row`` (``student (paired)``;
    a bare translator name means that row): student < teacher at night and in rain, and
    on day-clear at most ``day_tolerance`` worse."""
    s = table[row if row in table else f"student ({row})"]
    t = table["teacher"]
    return {"night": s["night"]["abs_rel"] < t["night"]["abs_rel"],
            "rain": s["rain"]["abs_rel"] < t["rain"]["abs_rel"],
            "day-clear": s["day-clear"]["abs_rel"]
            <= (1 + day_tolerance) * t["day-clear"]["abs_rel"]}
