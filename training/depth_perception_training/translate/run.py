"""``run_translate(cfg)``: bags in, translated dataset out (one process's share).

Steps (every process; Accelerate gives rank and world size, one process per GPU):

1. main process: synthetic source bags / tiny models when the config asks for them,
   the resolved ``config.yaml``; everyone waits;
2. the ordered list of source frames, this process's shard of it, minus the
   (frame, condition) keys already in the manifest (resume);
3. translator (and control-depth model) loaded only if something is left to do;
4. per frame: read -> translate into every pending condition -> consistency check ->
   atomic image -> manifest record;
5. everyone waits; the main process merges the manifest and writes the optional bags.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from depth_perception_training.translate import manifest
from depth_perception_training.translate.sources import SourceBags, sample_seed, shard

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    rank: int
    world: int
    frames: int                 # source frames in this process's shard
    translated: int             # (frame, condition) samples done by this process now
    skipped: int                # already in the manifest
    rejected: int               # failed the consistency check (recorded, excluded)
    timings: dict = field(default_factory=dict)     # stage -> seconds
    records: list | None = None                     # merged manifest (main process)
    bags: dict | None = None


def _prepare_inputs(cfg, out: Path) -> None:
    """Main process: synthetic bags and tiny models the config asks for."""
    if not cfg.source.bags and cfg.source.synth is not None:
        from depth_perception.synth import make_synthetic_bags

        s = cfg.source.synth
        data = out / "data"
        conditions = ["day-clear"] + [c for c in s.conditions if c != "day-clear"]
        if not all((data / c / "metadata.yaml").is_file() for c in conditions):
            make_synthetic_bags(data, frames=s.frames, size=tuple(s.size), seed=s.seed,
                                conditions=conditions, overwrite=True)
    if cfg.models.tiny and not (out / "tiny_models" / "sd" / "model_index.json").is_file():
        from depth_perception_training.translate.tiny import save_tiny_models

        save_tiny_models(out / "tiny_models")


def resolve_inputs(cfg, out: Path):
    """The config with the generated inputs filled in (same on every process)."""
    from dataclasses import replace

    from depth_perception_training.translate.config import StyleSource

    if not cfg.source.bags and cfg.source.synth is not None:
        data = out / "data"
        cfg.source = replace(cfg.source, bags=[str(data / "day-clear")])
        for c in cfg.conditions:      # the synthetic renderings double as image prompts
            if c not in cfg.style and (data / c / "metadata.yaml").is_file():
                cfg.style[c] = StyleSource(bags=[str(data / c)])
    if not cfg.source.bags:
        raise ValueError("source.bags is empty; expected day-clear bag folders "
                         "(source.bags=[/data/day1,/data/day2]) or source.synth")
    if cfg.models.tiny:
        from depth_perception_training.translate.tiny import IP_ADAPTER_WEIGHT

        root = out / "tiny_models"
        cfg.models = replace(cfg.models, captioner=str(root / "blip2"), depth=str(root / "dpt"),
                             stable_diffusion=str(root / "sd"),
                             controlnet=str(root / "controlnet"),
                             ip_adapter=str(root / "ip_adapter"), ip_adapter_subfolder="models",
                             ip_adapter_weight=IP_ADAPTER_WEIGHT)
    return cfg


def _load(cfg, bags, needs_depth: bool, timings):
    from depth_perception_training.translate.control_depth import ControlDepth, DepthEstimator
    from depth_perception_training.translate.models import select_device, select_dtype
    from depth_perception_training.translate.translators import build_translator

    tic = time.perf_counter()
    device = dtype = control = None
    if cfg.translator == "gdt" or needs_depth:
        device = select_device(cfg.cpu)
        dtype = select_dtype(cfg.diffusion.dtype, device)
        estimator = DepthEstimator(cfg.models.depth, device, dtype, cfg.models.local_files_only)
        cd = cfg.control_depth
        control = ControlDepth(estimator, cd.grid, cd.overlap, cd.batch_size)
    translator = build_translator(cfg, bags, device, dtype, control)
    timings["load_models"] += time.perf_counter() - tic
    return translator, control


def run_translate(cfg) -> RunResult:
    from accelerate import PartialState

    from depth_perception_training.train.config import save_config

    import torch

    state = PartialState(cpu=cfg.cpu or not torch.cuda.is_available())
    out = Path(cfg.output_dir)
    timings: dict[str, float] = defaultdict(float)
    # 1. inputs and the resolved configuration
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _prepare_inputs(cfg, out)
        from omegaconf import OmegaConf

        save_config(OmegaConf.structured(cfg), out / "config.yaml")
    state.wait_for_everyone()
    cfg = resolve_inputs(cfg, out)

    # 2. this process's share of the work, minus what is done
    tic = time.perf_counter()
    sources = SourceBags(cfg.source)
    mine = shard(sources.frames(), state.process_index, state.num_processes)
    done = manifest.done_keys(out)
    todo = []
    for ref in mine:
        pending = [c for c in cfg.conditions
                   if manifest.sample_key(ref.bag_id, ref.stamp_ns, c) not in done]
        if pending:
            todo.append((ref, pending))
    skipped = len(mine) * len(cfg.conditions) - sum(len(p) for _, p in todo)
    timings["index"] += time.perf_counter() - tic
    log.info("process %d/%d: %d frames, %d samples to translate, %d already done",
             state.process_index, state.num_processes, len(mine),
             sum(len(p) for _, p in todo), skipped)

    # 3. models, only when there is work
    translated = rejected = 0
    translator = None
    if todo:
        check_on = cfg.consistency.enabled
        translator, control = _load(cfg, sources.bags, check_on, timings)
        check = None
        if check_on:
            from depth_perception_training.translate.consistency import ConsistencyCheck

            check = ConsistencyCheck(control, cfg.consistency.threshold)
        models = dict(translator.model_ids())
        if check_on:
            models.setdefault("depth", cfg.models.depth)
        # 4. translate, check, write
        with manifest.ManifestWriter(out, state.process_index) as writer:
            for ref, pending in todo:
                tic = time.perf_counter()
                frame = sources.read(ref)
                timings["read"] += time.perf_counter() - tic
                seeds = {c: sample_seed(cfg.seed, ref.bag_id, ref.stamp_ns, c) for c in pending}
                results = translator.translate(frame, pending, seeds)
                source_depth = None
                for c in pending:
                    t = results[c]
                    if t.image.shape != frame.rgb.shape:
                        raise RuntimeError(f"translator {translator.name} returned a "
                                           f"{t.image.shape} image for a {frame.rgb.shape} frame")
                    score, accepted = None, True
                    if check is not None:
                        tic = time.perf_counter()
                        if t.source_depth is None and source_depth is None:
                            source_depth = control(frame.rgb).fused
                        verdict = check(t.source_depth if t.source_depth is not None
                                        else source_depth, t.image)
                        score, accepted = verdict.score, verdict.accepted
                        timings["consistency"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    rel = manifest.image_path(ref.bag_id, ref.stamp_ns, c, cfg.image_format)
                    manifest.write_image_atomic(out / rel, t.image)
                    writer.append(manifest.make_record(
                        ref=ref, topic=frame.topic, condition=c, translator=translator.name,
                        image=rel, size=(frame.rgb.shape[1], frame.rgb.shape[0]),
                        translation=t, seed=seeds[c], models=models, consistency=score,
                        accepted=accepted))
                    timings["write"] += time.perf_counter() - tic
                    translated += 1
                    rejected += not accepted
        for stage, seconds in translator.timings.items():
            timings[stage] += seconds
    sources.close()

    # 5. merge (and bags) once every process is done
    state.wait_for_everyone()
    records = bags = None
    if state.is_main_process:
        tic = time.perf_counter()
        records = manifest.merge(out)
        if cfg.write_bags:
            from depth_perception_training.translate.bags import write_translated_bags

            bags = write_translated_bags(records, out, cfg.translator, cfg.bag_storage)
        timings["merge"] += time.perf_counter() - tic
    return RunResult(state.process_index, state.num_processes, len(mine), translated,
                     skipped, rejected, dict(timings), records, bags)
