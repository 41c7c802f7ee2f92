"""The package's main job end to end, on an embedded default, with no camera, GPU or download.

1. synthetic bags: day-clear training drives (other streets, made first: training
   never makes data) and the evaluated drive in day-clear, night and rain;
2. a model: ``--model`` or the tiny teacher (``config/train/teacher_tiny.yaml``) trained
   by this package's own trainer on the training drives (if the trainer cannot run
   here, an untrained tiny depth network is used and the report says so);
3. online: each bag replayed over real DDS (in-process replay) into the depth node, scored
   live by the evaluator node against LiDAR;
4. offline: the same bags and model through ``evaluate`` (same DepthEstimator path);
5. one report (offline and online rows, per condition, and the image-blind prior of the
   training drives with structure-pixel abs_rel) with plots.

    depth-perception demo --out demo_out

Each stage logs a line as it starts, and the training stages a line with step, loss and
time left every ``trainer.progress_seconds`` (30 s), so the demo can be followed in a
log file.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONDITIONS = ("day-clear", "night", "rain")


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    frames: int = 20
    size: tuple = (320, 96)                 # (W, H) of the synthetic camera
    train_size: tuple = (320, 96)           # (W, H) network input (multiples of 32)
    train_steps: int | None = None          # None: teacher_tiny.yaml's trainer.max_steps
    train_scenes: int = 6                   # day-clear training drives (seeds seed+1..)
    train_frames: int = 60
    pose_scenes: int = 6                    # drives the pose net is pretrained on (seed+201..)
    pose_steps: int | None = None           # None: pose_tiny.yaml's trainer.max_steps
    model: str | None = None
    backend: str = "auto"
    seed: int = 0
    rate: float = 1.0                       # replay rate: recorded timing
    max_depth: float = 80.0
    online: bool = True
    conditions: tuple = CONDITIONS
    #: SSD student distilled from the demo's teacher on `photometric` translations of
    #: the teacher's day-clear training drives (never the bags it is scored on); 0: none
    student_steps: int = 200
    #: lens of the evaluated drives ("plumb_bob:-0.3", synth --distortion); None: pinhole.
    #: The node (online) and evaluate (offline) rectify with the same rectifier.
    distortion: str | None = None
    #: processes that generate the synthetic drives side by side (None: one per core)
    workers: int | None = None
    #: DataLoader worker processes of the teacher and the student: one prepares the next
    #: batches (decoding, augmentation) while the networks train; 0: in the main process.
    #: The samples are the same either way (seeded per sample), so are the results.
    loader_workers: int = 1

    def __post_init__(self):
        self.out = Path(self.out)
        if self.frames < 3:
            raise ValueError(f"demo: need at least 3 frames per bag, got {self.frames}")
        for name, (w, h) in (("size", self.size), ("train_size", self.train_size)):
            if w <= 0 or h <= 0:
                raise ValueError(f"demo: {name} must be positive, got {w}x{h}")
        if self.train_size[0] % 32 or self.train_size[1] % 32:
            raise ValueError(f"demo: train_size {self.train_size} must be multiples of 32")
        if self.train_scenes < 1 or self.train_frames < 3:
            raise ValueError(f"demo: need >= 1 training scene of >= 3 frames, got "
                             f"{self.train_scenes} x {self.train_frames}")


@dataclass
class DemoResult:
    report: Path
    metrics: Path
    model: str
    model_note: str
    table: str
    agreement: dict = field(default_factory=dict)
    #: condition -> (frames scored online, images replayed, frames dropped by the node)
    replay: dict = field(default_factory=dict)


def find_config(name: str) -> Path:
    """A shipped training config by file name (``config/train/`` of this package)."""
    from depth_perception_training import resolve_config

    return resolve_config(name, "train")


def training_bags(cfg: DemoConfig) -> list[Path]:
    """Day-clear drives of other streets (seeds seed+1 ..), rig and street varied by the
    seed, made with the generator."""
    from depth_perception.synth import make_varied_drives

    seeds = range(cfg.seed + 1, cfg.seed + 1 + cfg.train_scenes)
    return make_varied_drives(cfg.out / "bags" / "train", seeds, cfg.train_frames,
                              tuple(cfg.size))


def evaluated_bags(cfg: DemoConfig) -> list[Path]:
    """The evaluated drive (seed ``cfg.seed``) in each of ``cfg.conditions``."""
    from depth_perception.rectify import parse_distortion
    from depth_perception.synth import make_synthetic_bags

    return make_synthetic_bags(cfg.out / "bags", frames=cfg.frames, size=tuple(cfg.size),
                               conditions=tuple(cfg.conditions), seed=cfg.seed,
                               overwrite=True, distortion=parse_distortion(cfg.distortion)
                               if cfg.distortion else None)


def _one_training_drive(cfg: DemoConfig, seed: int) -> list[Path]:
    from depth_perception.synth import make_varied_drives

    return make_varied_drives(cfg.out / "bags" / "train", [seed], cfg.train_frames,
                              tuple(cfg.size))


def demo_bags(cfg: DemoConfig) -> tuple[list[Path], list[Path]]:
    """(training drives, evaluated bags): :func:`training_bags` and :func:`evaluated_bags`,
    the drives generated side by side in ``cfg.workers`` processes (the generator is
    single-threaded numpy; each drive depends on its seed only, so the bags are the same
    as one after the other)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    seeds = list(range(cfg.seed + 1, cfg.seed + 1 + cfg.train_scenes))
    workers = min(cfg.workers or os.cpu_count() or 1, len(seeds) + 1)
    if workers <= 1:
        return training_bags(cfg), evaluated_bags(cfg)
    started = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        train = [pool.submit(_one_training_drive, cfg, seed) for seed in seeds]
        evaluated = pool.submit(evaluated_bags, cfg)
        for k, _ in enumerate(as_completed(train + [evaluated]), 1):
            log.info("demo: %d of %d drives written (%.0f s, %d processes)", k, len(seeds) + 1,
                     time.monotonic() - started, workers)
        return [b for f in train for b in f.result()], evaluated.result()


def loader_overrides(cfg: DemoConfig) -> list[str]:
    """Data settings of the demo's teacher and student: ``cfg.loader_workers`` DataLoader
    workers, and decoded frames (images, LiDAR depth, ground truth) cached in
    ``OUT/frame_cache`` so that later epochs and the student, which trains on the same
    day-clear drives, read them instead of decoding the bags again."""
    return [f"data.num_workers={cfg.loader_workers}",
            f"data.cache_dir={cfg.out.resolve() / 'frame_cache'}"]


def train_tiny_teacher(cfg: DemoConfig, bags: list[Path]) -> tuple[str, str]:
    """Pretrain the pose net (``train pose`` on drives of its own), then train the tiny
    teacher on ``bags``; returns (model folder, note for the report)."""
    from depth_perception.synth import make_varied_drives
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.pose import pretrain_pose
    from depth_perception_training.train.teacher import train_teacher

    w, h = cfg.train_size
    out = cfg.out / "train"
    overrides = [f"output_dir={out}", f"data.bags=[{','.join(str(b) for b in bags)}]",
                 "data.val_bags=[]", f"data.width={w}", f"data.height={h}",
                 "trainer.checkpoint_every=0", "trainer.val_every=-1", "trainer.progress=false",
                 "trainer.image_every=0", *loader_overrides(cfg), f"seed={cfg.seed}"]
    if cfg.train_steps is not None:
        overrides.append(f"trainer.max_steps={cfg.train_steps}")
    conf = load_config(find_config("teacher_tiny.yaml"), overrides)
    pose_note = "random-init pose net"
    if dict(conf.model.pose).get("strengthened"):   # pretrain it on drives of its own
        seeds = range(cfg.seed + 201, cfg.seed + 201 + cfg.pose_scenes)
        pose_bags = make_varied_drives(cfg.out / "bags" / "pose", seeds, cfg.train_frames,
                                       tuple(cfg.size))
        pose = pretrain_pose(pose_bags, [], cfg.out / "pose",
                             [f"data.width={w}", f"data.height={h}", "data.num_workers=0"]
                             + ([f"trainer.max_steps={cfg.pose_steps}"] if cfg.pose_steps else []))
        conf = load_config(find_config("teacher_tiny.yaml"),
                           overrides + [f"model.pose.pretrained={pose['backbone']}"])
        pose_note = f"pose net pretrained on {len(pose_bags)} other drives by train pose"
    result = train_teacher(conf)
    if not result.export_dir:
        raise RuntimeError(f"the trainer finished without exporting a model into {out}")
    arch = dict(conf.model.depth)
    note = (f"Model: tiny teacher ({arch.get('encoder')} ResNet + monodepth2 disparity "
            f"decoder, random init; {pose_note}) trained by this package's self-supervised "
            f"trainer on {len(bags)} synthetic day-clear drives of other streets for "
            f"{result.step} steps at {w}x{h}.")
    return str(result.export_dir), note


def untrained_model(cfg: DemoConfig, reason: str) -> tuple[str, str]:
    """Fallback when the trainer cannot run: an untrained tiny depth net, clearly named."""
    from depth_perception.metadata import ModelMetadata
    from depth_perception.models import build_depth_model, depth_config, save_depth_model

    _, depth_cfg = depth_config({"arch": "dpt", "size": "tiny", "min_depth": 0.1,
                                 "max_depth": cfg.max_depth})
    net = build_depth_model(depth_cfg)
    meta = ModelMetadata(output_kind="metric_depth", size_multiple=14, min_depth=0.1,
                         max_depth=cfg.max_depth, train_width=cfg.train_size[0],
                         train_height=cfg.train_size[1],
                         provenance={"task": "demo", "trained": False, "reason": reason})
    folder = save_depth_model(cfg.out / "untrained_model", net, depth_cfg, meta)
    note = (f"Model: UNTRAINED tiny DINOv2+DPT with random weights ({folder}): the trainer "
            f"could not run here ({reason}); the numbers show the pipeline, not a model.")
    log.warning(note)
    return str(folder), note


def get_model(cfg: DemoConfig, train_bags: list[Path]) -> tuple[str, str]:
    """(model path, note): --model, else the tiny teacher trained now, else untrained."""
    if cfg.model:
        return cfg.model, f"Model: {cfg.model} (given with --model)."
    try:
        import depth_perception_training.train.teacher  # noqa: F401
    except ImportError as exc:
        return untrained_model(cfg, f"cannot import the trainer: {exc}")
    return train_tiny_teacher(cfg, train_bags)


def train_student_stage(cfg: DemoConfig, train_bags: list, teacher_run: Path) -> tuple[str, str]:
    """Distil a student from the demo's teacher on `photometric` translations of the
    teacher's day-clear training drives (never the evaluated night/rain bags); returns
    (its exported ONNX, note for the report)."""
    from depth_perception_training.train.reproduce import train_student_run, translate_run

    w, h = cfg.train_size
    translations = translate_run(cfg.out / "translate_photometric", "photometric", train_bags)
    run = cfg.out / "student"
    timing = train_student_run(run, teacher_run, translations, train_bags, cfg.student_steps,
                               [f"data.width={w}", f"data.height={h}", f"seed={cfg.seed}",
                                "trainer.image_every=0", "student.cache_teacher=true",
                                *loader_overrides(cfg)])
    model = str(run / "model.onnx")
    return model, (
        f"Student: SSD student (teacher loss + semantic loss) distilled from the tiny teacher "
        f"for {timing['steps']} steps on `photometric` night/rain translations of the "
        f"teacher's training drives, exported to ONNX ({model}). Reproduce: `depth-perception "
        "translate --config photometric source.bags=[DAY_BAGS] output_dir=TR`, then "
        "`depth-perception train student --config student_tiny data.bags=[DAY_BAGS] "
        "student.teacher=TEACHER_RUN student.translations=[TR] "
        f"trainer.max_steps={cfg.student_steps}`.")


def agreement(offline, online) -> dict:
    """Per condition: frames in common (by stamp) and max |abs_rel offline - online|."""
    out = {}
    on = {(f.condition, f.stamp_ns): f for f in online.frames}
    for cond in online.conditions():
        common = [(f, on[cond, f.stamp_ns]) for f in offline.frames
                  if f.condition == cond and (cond, f.stamp_ns) in on]
        diffs = [abs(a.metrics["abs_rel"] - b.metrics["abs_rel"]) for a, b in common]
        out[cond] = {"frames": len(common), "max_abs_rel_diff": max(diffs) if diffs else None}
    return out


class Stages:
    """``demo k/N (elapsed): what starts now`` log lines."""

    def __init__(self, total: int):
        self.total, self.k, self.t0 = total, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.k += 1
        s = int(time.monotonic() - self.t0)
        log.info("demo %d/%d (%d min %02d s): %s", self.k, self.total, s // 60, s % 60, text)


def run_demo(cfg: DemoConfig) -> DemoResult:
    from depth_perception.evaluation.offline import EvaluateConfig, ModelSpec, evaluate
    from depth_perception.evaluation.report import markdown_table, write_report

    cfg.out.mkdir(parents=True, exist_ok=True)
    student_stage = cfg.student_steps > 0 and not cfg.model
    stage = Stages(3 + (not cfg.model) + student_stage + cfg.online)
    # 1. Synthetic bags: training drives, and the evaluated drive per condition
    stage(f"synthetic bags: {cfg.train_scenes} training drives, the evaluated drive in "
          f"{', '.join(cfg.conditions)}")
    train_bags, paths = demo_bags(cfg)
    bags = {Path(p).name: Path(p) for p in paths}
    log.info("demo: synthetic bags %s", [str(p) for p in paths])

    # 2. A model
    if not cfg.model:
        stage("the tiny teacher: pose net pretraining, then self-supervised training")
    model, note = get_model(cfg, train_bags)
    log.info("demo: %s", note)
    # defaults only: node, evaluate and the online evaluator all run the model at the
    # geometry it was trained with (its metadata), so their scores agree
    name = Path(model.rstrip("/")).name if cfg.model else "tiny-teacher"
    # 2b. The student distilled from that teacher
    student, student_note = None, ""
    if student_stage:
        stage(f"the student: photometric translations, then {cfg.student_steps} steps")
        student, student_note = train_student_stage(cfg, train_bags, Path(model).parent)

    # 3. Offline evaluation (DepthEstimator on every frame), with the image-blind prior
    #    of the training drives beside it
    stage("offline evaluation (evaluate) with the image-blind prior")
    econf = EvaluateConfig(max_depth=cfg.max_depth, prior="bags",
                           prior_bags=tuple(train_bags))
    specs = [ModelSpec(model, cfg.backend, f"{name} (offline)")]
    if student:
        specs.append(ModelSpec(student, cfg.backend, "student (offline)"))
    results = evaluate(list(bags.values()), econf, models=specs)

    # 4. Online evaluation: replay over DDS -> depth node -> evaluator node
    agree, replay = {}, {}
    if cfg.online:
        from depth_perception.ros.online_evaluation import evaluate_online

        stage(f"online evaluation: {len(bags) * (1 + bool(student))} replays over DDS "
              f"through the depth node at {cfg.rate}x")
        online = econf.new_results()
        for cond, bag in bags.items():
            run = evaluate_online(bag, model, model_name=f"{name} (online)",
                                  backend=cfg.backend, rate=cfg.rate, max_depth=cfg.max_depth)
            info = run.models[f"{name} (online)"].info
            replay[cond] = (len(run.models[f"{name} (online)"].frames),
                            info["images_played"], info["frames_dropped"])
            online.absorb(run, append=True)
        for bag in bags.values() if student else ():
            run = evaluate_online(bag, student, model_name="student (online)",
                                  backend=cfg.backend, rate=cfg.rate, max_depth=cfg.max_depth)
            online.absorb(run, append=True)
        agree = agreement(results.models[f"{name} (offline)"], online.models[f"{name} (online)"])
        results.absorb(online)

    # 5. Report
    stage(f"report into {cfg.out / 'report'}")
    lines = [note, student_note, ""]
    if replay:
        lines.append(f"Online at replay rate {cfg.rate}x: " + "; ".join(
            f"{c}: {scored} of {played} frames scored ({dropped} dropped by the node)"
            for c, (scored, played, dropped) in replay.items()) + ".")
    if agree:
        lines.append("Online (replayed over DDS through the depth node, scored live) vs "
                     "offline (same model, same bags): " + "; ".join(
                         f"{c}: {a['frames']} common frames, max |Δ absRel| "
                         f"{a['max_abs_rel_diff']:.2e}" if a["max_abs_rel_diff"] is not None
                         else f"{c}: no common frame" for c, a in agree.items()) + ".")
    report = write_report(results, cfg.out / "report", title="depth_perception demo",
                          notes="\n".join(lines))
    return DemoResult(report["report"], report["metrics"], model, note,
                      markdown_table(results), agree, replay)
