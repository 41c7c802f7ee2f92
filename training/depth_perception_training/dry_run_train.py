"""``train teacher|student|pose|metricgold --dry-run``: the recipe's trainer with random weights, one
optimisation step at the recipe's batch on a synthetic drive, measured (see
:mod:`depth_perception_training.dry_run`).

What changes against a real run, and nothing else:

1. weights: every ``pretrained`` of ``model.depth`` / ``model.pose`` is dropped (the same
   architecture from its size preset, randomly initialised; ``strengthened`` off, as it
   demands pretrained weights); a semantic encoder named by hub id is a random DINOv2 of
   that id's size, saved to a local folder;
2. data: one synthetic day-clear drive at the loss size (``data.width`` x
   ``data.height``), enough frames for one batch; a student gets photometric night /
   rain translations of it, and a teacher run folder with random weights built from its
   teacher recipe (:data:`TEACHER_RECIPES`) unless ``student.teacher`` exists;
3. the trainer: no validation, no checkpoint, no progress bar, ``data.num_workers=0``;
   with gradient accumulation the step is one micro-batch that also updates, so the
   optimiser's state is allocated and measured (a real run's peak).

The model build and the step are inside the memory span; the data and the teacher run
folder are made before it.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from depth_perception_training.dry_run import (DryRunReport, MemoryMeter, count_flops,
                                               param_count, timed)

logger = logging.getLogger(__name__)

#: metricgold.base of a dry run from a hub id: Stable Diffusion 2's architecture, random
RANDOM_SD2 = "random-sd2"

#: student recipe -> the teacher recipe its dry run builds a random teacher from
TEACHER_RECIPES = {"student_tiny": "teacher_tiny", "dinosd_student": "dinosd_teacher"}
DEFAULT_TEACHER_RECIPE = "ssd_teacher"

#: DINOv2 sizes by hub id (Dinov2Config fields), for random semantic encoders
DINOV2_SIZES = {
    "facebook/dinov2-small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "facebook/dinov2-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "facebook/dinov2-large": dict(hidden_size=1024, num_hidden_layers=24,
                                  num_attention_heads=16),
}


def random_dinov2_folder(name: str, folder: Path) -> Path:
    """save_pretrained of a random ``Dinov2Model`` with the architecture of hub id
    ``name`` (one of :data:`DINOV2_SIZES`) into ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    if name not in DINOV2_SIZES:
        raise ValueError(f"dry run: no architecture known for the DINOv2 '{name}'; known: "
                         f"{sorted(DINOV2_SIZES)} (or give a local folder)")
    Dinov2Model(Dinov2Config(**DINOV2_SIZES[name], image_size=518)).save_pretrained(folder)
    return folder


def weight_overrides(cfg, work: Path) -> list[str]:
    """Overrides that keep ``cfg``'s architectures and drop their pretrained weights."""
    out = []
    for net in ("depth", "pose"):
        values = dict(cfg.model[net] or {})
        if values.get("pretrained"):
            out.append(f"model.{net}.pretrained=null")
        if values.get("strengthened"):
            out.append(f"model.{net}.strengthened=false")
    if cfg.task == "metricgold" and not (cfg.metricgold.base == "tiny"
                                         or Path(cfg.metricgold.base).is_dir()):
        out.append(f"metricgold.base={RANDOM_SD2}")
    if cfg.task == "student" and cfg.student.semantic.weight > 0:
        enc = str(cfg.student.semantic.encoder)
        if enc != "teacher" and not Path(enc).is_dir():
            out.append(f"student.semantic.encoder="
                       f"{random_dinov2_folder(enc, work / 'semantic_encoder')}")
    return out


def synthetic_drive(cfg, work: Path) -> Path:
    """A day-clear synthetic bag at the loss size with frames for one batch."""
    from depth_perception.synth import make_synthetic_bags

    span = max((abs(int(o)) for o in cfg.data.context), default=0)
    frames = int(cfg.data.batch_size) + 2 * span + 4
    return make_synthetic_bags(work / "bags", frames=frames,
                               size=(int(cfg.data.width), int(cfg.data.height)),
                               conditions=("day-clear",), seed=0)[0]


def _run_overrides(bag: Path, out: Path) -> list[str]:
    return [f"data.bags=[{bag}]", "data.val_bags=[]", f"output_dir={out}",
            "data.num_workers=0", "trainer.val_every=-1", "trainer.checkpoint_every=0",
            "trainer.progress=false", "trainer.resume=null"]


def random_teacher_run(recipe: str, work: Path) -> Path:
    """A teacher run folder (exported model, config, checkpoint with pose weights) of
    ``recipe`` with random weights, trained for no step."""
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import build_teacher_trainer

    base = load_config(recipe)
    bag = synthetic_drive(base, work / "teacher_data")
    cfg = load_config(recipe, weight_overrides(base, work) + _run_overrides(bag, work / "teacher"))
    trainer = build_teacher_trainer(cfg)
    trainer.save_checkpoint()
    trainer.export()
    return work / "teacher"


def photometric_translations(bag: Path, conditions, work: Path) -> Path:
    from depth_perception_training.translate.config import load_translate_config
    from depth_perception_training.translate.run import run_translate

    out = work / "translations"
    run_translate(load_translate_config("photometric", [
        f"output_dir={out}", f"source.bags=[{bag}]", f"conditions=[{','.join(conditions)}]"]))
    return out


def prepare(cfg, recipe: str, work: Path, teacher_recipe: str | None = None):
    """(config for the dry run, notes): weights, data and output folder swapped."""
    overrides = weight_overrides(cfg, work)
    bag = synthetic_drive(cfg, work)
    notes = ["random weights at the recipe's architectures (pretrained ids dropped)",
             f"one synthetic day-clear drive at {cfg.data.width}x{cfg.data.height}"]
    if cfg.task == "student":
        teacher = str(cfg.student.teacher)
        if not (teacher and Path(teacher).is_dir()):
            teacher_recipe = teacher_recipe or TEACHER_RECIPES.get(Path(recipe).stem,
                                                                   DEFAULT_TEACHER_RECIPE)
            teacher = str(random_teacher_run(teacher_recipe, work))
            notes.append(f"teacher: random weights from the {teacher_recipe} recipe (its run "
                         "folder made before the memory span; the teacher is loaded inside it)")
        overrides += [f"student.teacher={teacher}", "student.translator=photometric",
                      "student.pseudo_labels=null", "student.export_onnx=false",
                      "student.translations="
                      f"[{photometric_translations(bag, cfg.student.conditions, work)}]"]
        notes.append("student frames: photometric translations (the step's compute does not "
                     "depend on the translator)")
    accumulate = int(cfg.trainer.get("gradient_accumulation_steps", 1) or 1)
    if accumulate > 1:      # the step measured is a micro-batch that also updates
        overrides.append("trainer.gradient_accumulation_steps=1")
        notes.append(f"gradient accumulation {accumulate}: the step measured is one "
                     f"micro-batch of {cfg.data.batch_size} with the optimiser's update (so "
                     "its state is allocated: the run's peak); an update of the recipe "
                     f"takes {accumulate} micro-batches")
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides + _run_overrides(
        bag, work / "run")))
    return merged, notes


def build(cfg):
    """(trainer, {module name: module}) of the config's task."""
    task = cfg.task
    if task == "teacher":
        from depth_perception_training.train.teacher import build_teacher_trainer

        trainer = build_teacher_trainer(cfg)
        return trainer, dict(trainer.models)
    if task == "pose":
        from depth_perception_training.train.pose import build_pose_trainer

        trainer = build_pose_trainer(cfg)[0]
        return trainer, dict(trainer.models)
    if task == "student":
        from depth_perception_training.train.student import build_student_trainer

        trainer, objective = build_student_trainer(cfg)
        modules = {"student": trainer.models["depth"], "teacher.depth": objective.teacher.depth,
                   "teacher.pose": objective.teacher.pose}
        if objective.semantic_encoder is not None:
            modules["semantic_encoder"] = objective.semantic_encoder
        return trainer, modules
    if task == "metricgold":
        from depth_perception_training.train.metricgold import build_metricgold_trainer

        trainer, objective, parts = build_metricgold_trainer(cfg)
        return trainer, {"unet": trainer.models["unet"], "vae": objective.vae,
                         "text_encoder": parts["text_encoder"]}
    raise ValueError(f"dry run: unknown task '{task}' (teacher, student, pose, metricgold)")


def _unwrap(module):
    return getattr(module, "module", module)


def dry_run_train(cfg, recipe: str, work: str | Path | None = None,
                  teacher_recipe: str | None = None):
    """(DryRunReport, {name: module}) of one optimisation step of the resolved train
    config ``cfg`` (DictConfig) named ``recipe``."""
    from depth_perception_training.train.config import to_dataclass
    from depth_perception_training.train.teacher import depth_input_size

    with tempfile.TemporaryDirectory(prefix="dry_run_") as tmp:
        work = Path(work or tmp)
        run_cfg, notes = prepare(cfg, recipe, work, teacher_recipe)
        c = to_dataclass(run_cfg)
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # 1. Models and trainer, then one batch, then one step: all inside the memory span
        with MemoryMeter(device) as meter:
            trainer, modules = build(run_cfg)
            device = trainer.accelerator.device
            batch = next(iter(trainer.train_loader))
            with count_flops() as flops:
                record, seconds, cpu = timed(device, lambda: trainer.train_step(batch))
        if not record["loss"] == record["loss"]:
            notes.append("the step's loss was not finite (random weights)")
        sizes = {"loss": [c.data.width, c.data.height]}
        if c.task not in ("pose", "metricgold"):
            sizes["depth"] = list(depth_input_size(c))[::-1]
        report = DryRunReport(
            recipe=Path(recipe).stem,
            params={k: param_count(_unwrap(m)) for k, m in modules.items()},
            input_size=sizes, batch=int(c.data.batch_size), flops_per_step=flops.total,
            peak_memory_gb=round(meter.peak_gb, 3), memory_method=meter.method,
            seconds_per_step=round(seconds, 3), cpu_seconds_per_step=round(cpu, 3),
            device=str(device),
            dtype=str(trainer.accelerator.mixed_precision or "no").replace("no", "fp32"),
            notes=notes)
        return report, modules
