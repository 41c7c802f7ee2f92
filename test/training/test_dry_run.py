"""``--dry-run`` of the training verbs on the tiny configs: one JSON line with the keys,
parameter counts equal to the built modules', FLOPs counted, memory measured. (A
real-size dry run is bench/bench_dry_run.py's, not a default-tier test.)"""
from __future__ import annotations

import json

import pytest

KEYS = {"recipe", "params", "input_size", "batch", "flops_per_step", "peak_memory_gb",
        "memory_method", "fits_24gb", "seconds_per_step"}


def _last_json(text: str) -> dict:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


def test_teacher_dry_run_prints_one_json_line_last(capsys):
    from depth_perception.cli import main

    assert main(["train", "teacher", "--config", "teacher_tiny", "--dry-run"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert KEYS <= set(out)
    assert out["recipe"] == "teacher_tiny" and out["batch"] == 8
    assert out["input_size"] == {"loss": [320, 96], "depth": [320, 96]}
    assert set(out["params"]) == {"depth", "pose"}
    assert out["params_total"] == sum(out["params"].values()) > 0
    assert out["flops_per_step"] > 0 and out["seconds_per_step"] > 0
    assert out["peak_memory_gb"] > 0 and out["memory_method"]
    assert out["fits_24gb"] is True and "CPU" in out["fits_basis"]


def test_student_dry_run_counts_every_model_it_built():
    """The student's dry run builds the student, the frozen teacher (random, from the
    teacher recipe) and counts each module's parameters exactly."""
    import torch

    from depth_perception_training.dry_run_train import dry_run_train
    from depth_perception_training.train.config import load_config

    report, modules = dry_run_train(load_config("student_tiny"), "student_tiny")
    assert set(report.params) == {"student", "teacher.depth", "teacher.pose"}
    for name, module in modules.items():
        module = getattr(module, "module", module)
        assert report.params[name] == sum(p.numel() for p in module.parameters())
    assert all(isinstance(m, torch.nn.Module) for m in modules.values())
    d = report.to_dict()
    assert KEYS <= set(d) and d["flops_per_step"] > 0
    json.dumps(d)                                   # serialisable as printed


def test_pose_dry_run(capsys):
    from depth_perception.cli import main

    assert main(["train", "pose", "--config", "pose_tiny", "--dry-run"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert set(out["params"]) == {"pose"} and out["input_size"] == {"loss": [320, 96]}
    assert out["flops_per_step"] > 0


def test_flop_counter_and_memory_meter_on_a_known_matmul():
    """A [64,128] x [128,256] matmul is 2*64*128*256 = 4,194,304 FLOPs; allocating
    256 MiB of float32 raises the measured CPU peak by at least that."""
    import torch

    from depth_perception_training.dry_run import MemoryMeter, count_flops

    a, b = torch.ones(64, 128), torch.ones(128, 256)
    with count_flops() as c:
        a @ b
    assert c.total == 2 * 64 * 128 * 256
    with MemoryMeter("cpu") as m:
        x = torch.ones(64 * 2 ** 20)                 # 256 MiB, touched
        del x
    assert m.peak_gb == pytest.approx(0.25, abs=0.05)


def test_gdt_dry_run_runs_each_stage_alone(capsys):
    """gdt_tiny's dry run: caption, control depth and diffusion loaded, run and measured
    one after the other; the peak is the largest stage's."""
    from depth_perception.cli import main

    assert main(["translate", "--config", "gdt_tiny", "--dry-run", "--frame-size",
                 "160x96"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert KEYS <= set(out) and out["input_size"] == {"frame": [160, 96]}
    stages = {s["name"]: s for s in out["stages"]}
    assert list(stages) == ["caption", "control_depth", "diffusion"]
    assert "unmeasured" not in out and out["fits_24gb"] is True
    assert all(s["peak_memory_gb"] is not None and s["seconds"] > 0 for s in stages.values())
    assert "one greedy caption of the frame at its longest" in stages["caption"]["notes"][0]
    assert all(s["flops"] > 0 for s in stages.values())
    assert out["flops_per_step"] == sum(s["flops"] for s in stages.values())
    assert out["peak_memory_gb"] == max(s["peak_memory_gb"] for s in stages.values())
    assert out["params_total"] == sum(out["params"].values())
    assert {"diffusion.unet", "diffusion.controlnet", "diffusion.image_encoder",
            "control_depth.depth", "caption.language"} <= set(out["params"])


def test_redepth_dry_run_counts_the_whole_sample_from_the_steps_run(tmp_path, capsys):
    """Re-Depth (smoothness only, a tiny Depth Anything): 3 steps run of 4 x 2; the sample
    counts the other 5 as the last one, and the caption is not needed (no SDS)."""
    from depth_perception.cli import main
    from depth_perception_training.tiny import save_tiny_depth_anything

    model = save_tiny_depth_anything(tmp_path / "da", metric=False)
    assert main(["refine", "--config", "redepth", "--dry-run", "--model", str(model),
                 "--frame-size", "112x56", "--dry-run-steps", "3", "redepth.sds_weight=0",
                 "redepth.short_side=56", "redepth.steps=4", "redepth.ensemble=2"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert KEYS <= set(out) and [s["name"] for s in out["stages"]] == ["redepth"]
    assert out["params"] == {"redepth.depth": out["params_total"]} and out["params_total"] > 0
    assert "3 of 4 x 2 steps run" in out["notes"][-1]
    assert out["flops_per_step"] > 0 and out["fits_24gb"] is True


def test_redepth_dry_run_sums_the_resident_captioner(tmp_path, capsys):
    """Re-Depth keeps its BLIP-2 captioner loaded while it refines: the dry run measures
    the caption (here a saved tiny BLIP-2) and reports the two stages' peaks summed."""
    import numpy as np
    import torch

    from depth_perception.cli import main
    from depth_perception_training.dry_run import Stage, combine_stages
    from depth_perception_training.dry_run_refine import redepth_caption_stage
    from depth_perception_training.refine.config import load_refine_config
    from depth_perception_training.tiny import save_tiny_blip2, save_tiny_depth_anything

    stages = [Stage("caption", {"m": 1}, 10, 2.0, 1.0), Stage("redepth", {"n": 2}, 20, 3.5, 2.0)]
    assert combine_stages("r", stages, {}, 1, "cpu", "m").peak_memory_gb == 3.5
    both = combine_stages("r", stages, {}, 1, "cpu", "m", resident=True)
    assert both.peak_memory_gb == 5.5 and "sum" in both.fits_basis()
    model = save_tiny_depth_anything(tmp_path / "da", metric=False)
    captioner = save_tiny_blip2(tmp_path / "blip2")
    assert main(["refine", "--config", "redepth", "--dry-run", "--model", str(model),
                 "--frame-size", "112x56", "--dry-run-steps", "2", "redepth.sds_weight=0",
                 "redepth.short_side=56", "redepth.steps=2", "redepth.ensemble=1"]) == 0
    alone = _last_json(capsys.readouterr().out)
    assert [s["name"] for s in alone["stages"]] == ["redepth"]      # no SDS: no caption
    cfg = load_refine_config("redepth", [f"caption.model={captioner}"])
    stage = redepth_caption_stage(cfg, np.zeros((56, 112, 3), np.uint8), torch.device("cpu"),
                                  tmp_path)
    assert stage.name == "caption" and stage.peak_memory_gb is not None and stage.flops > 0
    assert f"model folder {captioner}" in stage.notes[0]


def test_metricgold_dry_run(capsys):
    """The tiny MetricGold recipe: UNet, VAE and text encoder counted, one step at its
    batch on frames without context."""
    from depth_perception.cli import main

    assert main(["train", "metricgold", "--config", "metricgold_tiny", "--dry-run"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert KEYS <= set(out) and out["recipe"] == "metricgold_tiny" and out["batch"] == 2
    assert set(out["params"]) == {"unet", "vae", "text_encoder"}
    assert out["input_size"] == {"loss": [64, 32]} and out["flops_per_step"] > 0


def test_dry_run_with_gradient_accumulation_measures_an_update(capsys):
    """metricgold.yaml accumulates 16 micro-batches per update: its dry run's step must
    still update (the optimiser's state, twice the weights for Adam, is part of the
    peak), and say so."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from depth_perception.cli import main

    updates = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: updates.append(opt))
    try:
        assert main(["train", "metricgold", "--config", "metricgold_tiny", "--dry-run",
                     "trainer.gradient_accumulation_steps=4"]) == 0
    finally:
        handle.remove()
    out = _last_json(capsys.readouterr().out)
    assert len(updates) == 1 and out["batch"] == 2
    assert any("gradient accumulation 4" in n and "takes 4 micro-batches" in n
               for n in out["notes"])


def test_metricgold_from_a_hub_id_dry_runs_stable_diffusion_2s_architecture():
    """metricgold.yaml names stabilityai/stable-diffusion-2: its dry run builds that
    architecture with random weights (here only built, not stepped: 1.3 B parameters)."""
    from depth_perception_training.dry_run_train import weight_overrides
    from depth_perception_training.dry_run_refine import sd2_components
    from depth_perception_training.train.config import load_config

    assert weight_overrides(load_config("metricgold"), None) == ["metricgold.base=random-sd2"]
    parts = sd2_components()
    assert parts["unet"].config.in_channels == 4 and parts["unet"].config.cross_attention_dim == 1024
    assert parts["scheduler_config"]["prediction_type"] == "v_prediction"
    assert sum(p.numel() for p in parts["unet"].parameters()) == 865_910_724
