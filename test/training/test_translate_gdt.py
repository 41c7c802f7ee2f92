"""GDT translation end to end with tiny BLIP-2, DPT, SD 1.5, depth ControlNet and
IP-Adapter built from configs, saved in the hub's layout and loaded by path with
HF_HUB_OFFLINE=1 (test/conftest.py sets it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_perception.data.bag import BagReader
from depth_perception.data.samples import BagSequence, SampleConfig
from depth_perception.hub import load_pretrained
from depth_perception_training.translate import photometric
from depth_perception_training.translate.config import load_translate_config
from depth_perception_training.translate.manifest import FIELDS, read_image
from depth_perception_training.translate.pairs import TranslationPairs
from depth_perception_training.translate.run import run_translate
from depth_perception_training.tiny import save_tiny_translation_models

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("gdt")
    models = save_tiny_translation_models(root / "models")
    bags = make_synthetic_bags(root / "bags", frames=3, size=(128, 64),
                               conditions=("day-clear", "night", "rain"), seed=0)
    return {"root": root, "models": models, "bags": dict(zip(("day", "night", "rain"), bags))}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread (and do not fight other jobs for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gdt_overrides(tiny, out, *extra) -> list[str]:
    m, b = tiny["models"], tiny["bags"]
    return [f"output_dir={out}", f"source.bags=[{b['day']}]",
            "models.tiny=false", *[f"models.{k}={v}" for k, v in m.items()],
            f"style.night.bags=[{b['night']}]", f"style.rain.bags=[{b['rain']}]", *extra]


def gdt_config(tiny, out, *extra):
    return load_translate_config("gdt_tiny", gdt_overrides(tiny, out, *extra))


def test_every_model_loads_by_path_from_the_hub_layout_offline(tiny):
    from depth_perception_training.translate.caption import Captioner
    from depth_perception_training.translate.control_depth import RelativeDepthModel
    from depth_perception_training.translate.gdt import GDTGenerator

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    root = tiny["root"] / "models"
    for f in ("blip2/config.json", "blip2/model.safetensors", "blip2/processor_config.json",
              "dpt/config.json", "dpt/preprocessor_config.json", "sd/model_index.json",
              "sd/unet/config.json", "sd/vae/diffusion_pytorch_model.safetensors",
              "sd/text_encoder/config.json", "sd/tokenizer/tokenizer_config.json",
              "sd/scheduler/scheduler_config.json", "controlnet/config.json",
              "ip_adapter/models/ip-adapter_sd15.safetensors",
              "ip_adapter/models/image_encoder/config.json"):
        assert (root / f).is_file(), f
    m = tiny["models"]
    rgb = BagSequence(tiny["bags"]["day"], SampleConfig(offsets=(), skip_static=False)).frame(0)
    caption = Captioner.from_pretrained(m["captioner"], CPU, torch.float32, max_new_tokens=4,
                                        tidy=True)(rgb)
    assert isinstance(caption, str)
    depth = RelativeDepthModel(m["depth"], CPU, torch.float32)([rgb, rgb])
    assert depth[0].shape == (64, 128) and depth[0].std() > 0
    cfg = gdt_config(tiny, tiny["root"] / "unused")
    gen = GDTGenerator(cfg.models, cfg.diffusion, CPU, torch.float32)
    assert type(gen.pipe.scheduler).__name__ == "DDIMScheduler"
    assert gen.pipe.image_encoder is not None                     # IP-Adapter's encoder
    control = np.repeat(rgb[..., :1], 3, axis=2)
    a = gen(control, "At night, a street", rgb, seed=5)
    assert a.shape == rgb.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, gen(control, "At night, a street", rgb, seed=5))
    assert not np.array_equal(a, gen(control, "At night, a street", rgb, seed=6))


def test_generator_passes_the_configured_settings_and_returns_the_frame_size(tiny,
                                                                            monkeypatch):
    from diffusers import StableDiffusionControlNetPipeline
    from diffusers.models.attention_processor import (IPAdapterAttnProcessor,
                                                      IPAdapterAttnProcessor2_0)

    from depth_perception_training.translate.config import DiffusionConfig
    from depth_perception_training.translate.gdt import GDTGenerator

    settings = {"steps": 3, "guidance_scale": 2.5, "controlnet_scale": 0.55,
                "ip_adapter_scale": 0.37, "negative_prompt": "blurry"}
    cfg = gdt_config(tiny, tiny["root"] / "unused",
                     *[f"diffusion.{k}={v}" for k, v in settings.items()])
    for key, value in settings.items():     # neither the default nor gdt_tiny's value
        assert getattr(cfg.diffusion, key) == value != getattr(DiffusionConfig(), key)
        assert getattr(load_translate_config("gdt_tiny").diffusion, key) != value
    gen = GDTGenerator(cfg.models, cfg.diffusion, CPU, torch.float32)
    ip = [p for p in gen.pipe.unet.attn_processors.values()
          if isinstance(p, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0))]
    assert ip and all(p.scale == [0.37] for p in ip)

    calls = []
    real_call = StableDiffusionControlNetPipeline.__call__

    def spy(pipe, *args, **kwargs):
        out = real_call(pipe, *args, **kwargs)
        calls.append((kwargs, out.images[0].copy()))
        return out

    monkeypatch.setattr(StableDiffusionControlNetPipeline, "__call__", spy)
    rng = np.random.default_rng(0)
    control = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)    # not the generation size
    style = rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)
    out = gen(control, "At night, a street", style, seed=3)
    (kwargs, generated), = calls
    assert {k: kwargs.get(k) for k in ("num_inference_steps", "guidance_scale",
                                   "controlnet_conditioning_scale", "negative_prompt")} == {
        "num_inference_steps": 3, "guidance_scale": 2.5,
        "controlnet_conditioning_scale": 0.55, "negative_prompt": "blurry"}
    assert len(gen.pipe.scheduler.timesteps) == 3
    # generated at 128x64 (short side 64, /64, aspect kept), returned at the frame's 100x60
    assert (kwargs["width"], kwargs["height"]) == kwargs["image"].size == (128, 64)
    assert kwargs["ip_adapter_image"].size == (96, 48)
    assert generated.shape == (64, 128, 3)
    assert out.shape == (60, 100, 3) and out.dtype == np.uint8
    expected = cv2.resize((np.clip(generated, 0, 1) * 255 + 0.5).astype(np.uint8), (100, 60),
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)


def test_a_missing_model_names_its_id_and_how_to_fetch_it():
    from transformers import AutoConfig

    with pytest.raises(FileNotFoundError, match="huggingface-cli download "
                                                "nobody/no-such-model"):
        load_pretrained(AutoConfig.from_pretrained, "nobody/no-such-model", "captioner")


def test_gdt_translates_synthetic_frames_into_night_and_rain(tiny):
    out = tiny["root"] / "run"
    result = run_translate(gdt_config(tiny, out, "write_bags=true"))
    assert (result.translated, result.skipped, result.world) == (6, 0, 1)
    for stage in ("caption", "control_depth", "diffusion", "consistency", "write"):
        assert result.timings[stage] > 0
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    day = BagSequence(tiny["bags"]["day"], SampleConfig(offsets=(), skip_static=False))
    assert sorted((r["stamp_ns"], r["condition"]) for r in records) == sorted(
        (int(s), c) for s in day.stamps for c in ("night", "rain"))
    for r in records:
        assert tuple(sorted(r)) == tuple(sorted(FIELDS))
        assert r["source_bag"] == str(tiny["bags"]["day"].resolve())
        assert r["topic"] == "/camera/image_raw" and r["translator"] == "gdt"
        prefix = {"night": "At night, ", "rain": "In a rainy day, "}[r["condition"]]
        assert r["prompt"].startswith(prefix) and r["prompt"] == prefix + r["caption"]
        assert set(r["models"]) == {"captioner", "depth", "stable_diffusion", "controlnet",
                                    "ip_adapter"}
        assert isinstance(r["consistency"], float) and r["accepted"]
        assert r["style"].startswith(r["condition"] + "#")       # a real frame of it
        img = read_image(out / r["image"])
        assert img.shape == (64, 128, 3) == (r["height"], r["width"], 3)    # source size
        if r["condition"] == "night":                            # darkened
            assert photometric.luma(img).mean() < 0.16
    assert len({r["seed"] for r in records}) == 6

    # the same seeds give the same images (a second run into another folder)
    again = tiny["root"] / "again"
    run_translate(gdt_config(tiny, again))
    for r in records:
        np.testing.assert_array_equal(read_image(out / r["image"]),
                                      read_image(again / r["image"]))
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text() \
        .replace(str(out), str(again))

    # the pairing API: every day-clear frame with its night and rain translations
    pairs = TranslationPairs(out)
    assert len(pairs) == 3 and pairs.conditions == ["night", "rain"]
    for k, frame in enumerate(pairs):
        assert set(frame.translations) == {"night", "rain"}
        np.testing.assert_array_equal(pairs.day_image(k), day.frame(frame.index))
        assert pairs.lookup(tiny["bags"]["day"], frame.stamp_ns) is frame

    # a rosbag2 per condition: translated images on the original topic and stamps
    night = BagReader(out / "bags" / "night" / "day-clear")
    src = BagReader(tiny["bags"]["day"])
    assert night.condition == "night"
    np.testing.assert_array_equal(night.stamps("image"), src.stamps("image"))
    for key in ("odom", "camera_info", "lidar", "gt_depth", "tf"):
        np.testing.assert_array_equal(night.stamps(key), src.stamps(key))
    rec = next(r for r in records if r["condition"] == "night")
    i = int(np.searchsorted(night.stamps("image"), rec["stamp_ns"]))
    np.testing.assert_array_equal(night.image(i), read_image(out / rec["image"]))
    np.testing.assert_array_equal(night.camera_info(0).K, src.camera_info(0).K)


def test_consistency_is_checked_on_the_generated_night_before_darkening(tiny, tmp_path,
                                                                         monkeypatch):
    """The check sees the image the diffusion model produced; the written night is the
    darkened one; summary.json gives the rejection rate per condition."""
    from depth_perception_training.translate import consistency, translators

    darkened, checked = [], []
    real_darken, real_check = photometric.darken_to_mean_luma, consistency.ConsistencyCheck.__call__

    def darken(image, target):
        out = real_darken(image, target)
        darkened.append((image.copy(), out.copy()))
        return out

    def check(self, source_depth, output_rgb):
        checked.append(output_rgb.copy())
        return real_check(self, source_depth, output_rgb)

    monkeypatch.setattr(translators.photometric, "darken_to_mean_luma", darken)
    monkeypatch.setattr(consistency.ConsistencyCheck, "__call__", check)
    out = tmp_path / "run"
    result = run_translate(gdt_config(tiny, out, "conditions=[night,rain]",
                                      "source.max_frames=1", "consistency.threshold=10.0"))
    assert result.translated == 2 and len(darkened) == 1 and len(checked) == 2
    (generated, dark), = darkened
    assert photometric.luma(generated).mean() > 0.2 > photometric.luma(dark).mean()
    night = next(r for r in result.records if r["condition"] == "night")
    np.testing.assert_array_equal(read_image(out / night["image"]), dark)     # written
    assert any(np.array_equal(c, generated) for c in checked)                 # judged
    assert not any(np.array_equal(c, dark) for c in checked)
    assert result.summary == json.loads((out / "summary.json").read_text())
    assert result.summary["conditions"] == {
        c: {"samples": 1, "checked": 1, "rejected": 0, "rejection_rate": 0.0}
        for c in ("night", "rain")}


# -- processes: kill and rerun, sharding over Accelerate processes --------------------------

REPO = Path(__file__).resolve().parents[2]


def _cli(tiny, out, *extra) -> list[str]:
    return [sys.executable, "-m", "depth_perception.cli", "translate", "--config", "gdt_tiny",
            *gdt_overrides(tiny, out, *extra)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _part_lines(out: Path) -> list[dict]:
    lines = []
    for part in sorted((out / "manifest").glob("part-*.jsonl")):
        lines += [json.loads(x) for x in part.read_text().splitlines() if x.strip()]
    return lines


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_repeating_a_sample(tiny, tmp_path):
    out = tmp_path / "killed"
    extra = ("diffusion.steps=20",)                 # 6 samples of about a second each
    proc = subprocess.Popen(_cli(tiny, out, *extra), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = out / "manifest" / "part-00000.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if part.is_file() and part.read_text().count("\n") >= 2:
            proc.send_signal(signal.SIGKILL)                 # mid-run, no chance to clean up
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    before = {r["key"]: r for r in _part_lines(out)}
    assert 2 <= len(before) < 6, "the kill came too late to test anything"
    assert not (out / "manifest.jsonl").exists()             # never merged
    mtimes = {k: (out / r["image"]).stat().st_mtime_ns for k, r in before.items()}

    rerun = subprocess.run(_cli(tiny, out, *extra), cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"translated {6 - len(before)}, skipped {len(before)}" in rerun.stdout
    lines = _part_lines(out)
    keys = [r["key"] for r in lines]
    assert len(keys) == len(set(keys)) == 6                  # none lost, none twice
    merged = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in merged) == sorted(keys)
    for k, r in before.items():                              # finished work untouched
        assert (out / r["image"]).stat().st_mtime_ns == mtimes[k]
    assert not list(out.rglob("*.tmp"))

    # and it equals an uninterrupted run
    whole = tmp_path / "whole"
    run_translate(gdt_config(tiny, whole, *extra))
    assert (whole / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text() \
        .replace(str(out), str(whole))


@pytest.mark.slow
def test_two_accelerate_processes_give_the_manifest_of_one(tiny, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    two, one = tmp_path / "two", tmp_path / "one"
    cmd = [str(accelerate), "launch", "--config_file",
           str(REPO / "training/depth_perception_training/config/accelerate/cpu_ddp.yaml"),
           "--num_processes", "2", "--main_process_port", str(_free_port()), "-m",
           *_cli(tiny, two, "cpu=true")[2:]]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "process 0/2: 2 frames, translated 4" in proc.stdout
    assert "process 1/2: 1 frames, translated 2" in proc.stdout
    assert len(list((two / "manifest").glob("part-*.jsonl"))) == 2
    single = subprocess.run(_cli(tiny, one, "cpu=true"), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-4000:]
    assert (two / "manifest.jsonl").read_text() == (one / "manifest.jsonl").read_text() \
        .replace(str(one), str(two))
    for r in (json.loads(x) for x in (one / "manifest.jsonl").read_text().splitlines()):
        np.testing.assert_array_equal(read_image(one / r["image"]), read_image(two / r["image"]))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_precision_and_offload_follow_the_device(tiny):
    from dataclasses import replace

    from depth_perception_training.translate.gdt import GDTGenerator, generation_size
    from depth_perception_training.translate.models import select_dtype

    assert select_dtype("auto", torch.device("cuda", 0)) == torch.float16    # fp16 on CUDA
    assert select_dtype("auto", CPU) == torch.float32
    assert select_dtype("bf16", CPU) == torch.bfloat16
    cfg = gdt_config(tiny, tiny["root"] / "unused")
    with pytest.raises(ValueError, match="cpu_offload needs a CUDA device"):
        GDTGenerator(cfg.models, replace(cfg.diffusion, cpu_offload=True), CPU, torch.float32)
    assert generation_size(1600, 900, 512) == (896, 512)      # short side 512, /64, aspect kept
    assert generation_size(128, 64, 64) == (128, 64)
