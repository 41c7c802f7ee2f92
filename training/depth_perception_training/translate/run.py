"""``run_translate(cfg)``: bags in, translated dataset out (one process's share).

Steps (every process; Accelerate gives rank and world size, one process per GPU):

1. main process: the tiny models when the config asks for them (never data),
   the resolved ``config.yaml``; everyone waits;
2. the ordered list of source frames, this process's shard of it, minus the
   (frame, condition) keys already in the manifest (resume);
3. translator (and control-depth model) loaded only if something is left to do;
4. per frame: read -> translate into every pending condition -> consistency check
   (when ``consistency.enabled``; on the translation as produced, before GDT's night
   darkening) -> atomic image -> manifest record;
5. everyone waits; the main process merges the manifest (and its ``summary.json``:
   samples, rejections and rejection rate per condition) and writes the optional bags.
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
    summary: dict | None = None                     # manifest.summarize(records)
    bags: dict | None = None


def check_same_recipe(saved: Path, cfg) -> None:
    """ValueError naming the keys in which ``cfg`` differs from the run saved in
    ``saved`` (its config.yaml), so one manifest never mixes two recipes."""
    from omegaconf import OmegaConf

    from depth_perception_training.translate.translators import recipe_keys

    if not saved.is_file():
        return
    old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    new = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    # the translators' recipe keys (conditions and source bags may grow: their samples
    # get their own keys)
    keys = recipe_keys()
    a = dict(kv for k in keys for kv in flat({k: old.get(k)}))
    b = dict(kv for k in keys for kv in flat({k: new.get(k)}))
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        raise ValueError(f"{saved.parent} holds a run made with other settings "
                         f"({', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in changed[:5])}"
                         f"{' ...' if len(changed) > 5 else ''}); continue it with the same "
                         "settings or choose another output_dir")


def _prepare_inputs(cfg, out: Path) -> None:
    """Main process: the tiny models the config asks for (never data: bags come from
    ``source.bags``, made by ``depth-perception synth`` or recorded)."""
    if cfg.models.tiny and not (out / "tiny_models" / "sd" / "model_index.json").is_file():
        from depth_perception_training.tiny import save_tiny_translation_models

        save_tiny_translation_models(out / "tiny_models")


def require_bags(cfg) -> None:
    """Translation never makes its own frames: ``source.bags`` must name some."""
    if not cfg.source.bags:
        raise ValueError("source.bags is empty; expected day-clear bag folders "
                         "(source.bags=[/data/day1,/data/day2]; synthetic ones: "
                         "depth-perception synth DIR --conditions day-clear,night,rain)")


def resolve_inputs(cfg, out: Path):
    """The config with the tiny models' folders filled in (same on every process)."""
    from dataclasses import replace

    require_bags(cfg)
    if cfg.models.tiny:
        from depth_perception_training.tiny import IP_ADAPTER_WEIGHT

        root = out / "tiny_models"
        cfg.models = replace(cfg.models, captioner=str(root / "blip2"), depth=str(root / "dpt"),
                             stable_diffusion=str(root / "sd"),
                             controlnet=str(root / "controlnet"),
                             ip_adapter=str(root / "ip_adapter"), ip_adapter_subfolder="models",
                             ip_adapter_weight=IP_ADAPTER_WEIGHT)
    return cfg


def _load(cfg, bags, needs_depth: bool, timings):
    from depth_perception_training.translate.control_depth import ControlDepth, RelativeDepthModel
    from depth_perception_training.translate.models import select_device, select_dtype
    from depth_perception_training.translate.translators import (build_translator,
                                                                  translator_class)

    tic = time.perf_counter()
    device = dtype = control = None
    if translator_class(cfg.translator).needs_models or needs_depth:
        device = select_device(cfg.cpu)
        dtype = select_dtype(cfg.diffusion.dtype, device)
        estimator = RelativeDepthModel(cfg.models.depth, device, dtype, cfg.models.local_files_only)
        cd = cfg.control_depth
        control = ControlDepth(estimator, cd.grid, cd.overlap, cd.batch_size)
    translator = build_translator(cfg, bags, device, dtype, control)
    timings["load_models"] += time.perf_counter() - tic
    return translator, control


def run_translate(cfg) -> RunResult:
    from accelerate import PartialState

    from depth_perception_training.train.config import save_config

    import torch

    require_bags(cfg)                       # before anything is written
    state = PartialState(cpu=cfg.cpu or not torch.cuda.is_available())
    out = Path(cfg.output_dir)
    timings: dict[str, float] = defaultdict(float)
    # 1. inputs and the resolved configuration
    check_same_recipe(out / "config.yaml", cfg)
    state.wait_for_everyone()
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

            check = ConsistencyCheck(control, cfg.consistency.threshold,
                                     cfg.consistency.tiled)
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
                            source_depth = check.depth(frame.rgb)
                        checked = t.image if t.checked_image is None else t.checked_image
                        verdict = check(t.source_depth if t.source_depth is not None
                                        else source_depth, checked)
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
    records = bags = summary = None
    if state.is_main_process:
        tic = time.perf_counter()
        records = manifest.merge(out)
        timings["merge"] += time.perf_counter() - tic
        summary = manifest.read_summary(out)
        for c, n in summary["conditions"].items():
            log.info("%s: %d samples, %d rejected by the consistency check (%.1f%%)", c,
                     n["samples"], n["rejected"], 100 * n["rejection_rate"])
        if cfg.write_bags:
            from depth_perception_training.translate.bags import write_translated_bags

            tic = time.perf_counter()
            bags = write_translated_bags(records, out, cfg.translator, cfg.bag_storage)
            timings["bags"] += time.perf_counter() - tic
    return RunResult(state.process_index, state.num_processes, len(mine), translated,
                     skipped, rejected, dict(timings), records, summary, bags)
