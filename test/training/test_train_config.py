"""Layered training configuration: defaults <- YAML chain <- dotlist; schema checks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from depth_perception_training.train.config import (TrainConfig, config_chain, load_config, save_config,
                                           to_dataclass, to_yaml)

from depth_perception_training import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((CONFIG_DIR / "train").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_layers_merge_in_order(tmp_path):
    write(tmp_path / "base.yaml", "seed: 3\noutput_dir: runs/base\n"
          "data: {width: 320, batch_size: 6}\noptim: {lr_pose: 0.5}\n")
    exp = write(tmp_path / "exp.yaml", "base_config: base.yaml\noutput_dir: runs/exp\n"
                "data: {batch_size: 2}\n")
    cfg = load_config(exp, ["data.bags=[a.mcap,b.mcap]", "trainer.max_steps=200",
                            "output_dir=runs/x"])
    assert cfg.seed == 3                               # from the base file
    assert cfg.data.width == 320                       # base, not overridden
    assert cfg.data.batch_size == 2                    # experiment beats base
    assert cfg.output_dir == "runs/x"                  # command line beats both
    assert list(cfg.data.bags) == ["a.mcap", "b.mcap"]
    assert cfg.trainer.max_steps == 200
    assert cfg.data.height == TrainConfig().data.height   # schema default
    typed = to_dataclass(cfg)
    assert isinstance(typed, TrainConfig) and typed.optim.lr_pose == 0.5
    assert [p.name for p, _ in config_chain(exp)] == ["base.yaml", "exp.yaml"]


@pytest.mark.parametrize("text, key", [
    ("data: {bagz: [a]}\n", "data.bagz"),
    ("trainer: {max_step: 3}\n", "trainer.max_step"),
    ("optimizer: {lr: 1}\n", "optimizer"),
])
def test_unknown_key_in_yaml_is_rejected_with_its_name(tmp_path, text, key):
    f = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError) as exc:
        load_config(f)
    assert key in str(exc.value) and "bad.yaml" in str(exc.value)


def test_unknown_key_or_bad_value_on_command_line(tmp_path):
    with pytest.raises(ValueError, match=r"command line: unknown configuration key 'loss.velocity_wieght'"):
        load_config(None, ["loss.velocity_wieght=0.1"])
    with pytest.raises(ValueError, match=r"trainer.max_steps"):
        load_config(None, ["trainer.max_steps=many"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["trainer.max_steps"])


def test_missing_file_and_cycles(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "base_config: b.yaml\n")
    write(tmp_path / "b.yaml", "base_config: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_resolved_config_is_saved_and_reloads_identically(tmp_path):
    cfg = load_config(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml",
                      ["trainer.max_steps=7", f"output_dir={tmp_path / 'run'}"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    text = path.read_text()
    assert "max_steps: 7" in text and "base_config: null" in text
    assert "# resolved configuration (base_config was defaults.yaml)" in text
    again = load_config(path)            # base_config is followed again: same values
    assert to_yaml(again) == text.split("\n", 1)[1]
    again.base_config = cfg.base_config
    assert to_dataclass(again) == to_dataclass(cfg)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_fit_the_model_and_data_schemas(path):
    cfg = to_dataclass(load_config(path))
    if path.name in ("defaults.yaml", "ssd_student_common.yaml"):   # bases the others extend
        return
    from depth_perception.data.samples import SampleConfig
    from depth_perception.models import depth_config
    from depth_perception.models.pose import PoseNetConfig

    if cfg.task == "pose":                           # pose pretraining: no depth net
        PoseNetConfig(**cfg.model.pose)
        return
    if cfg.task == "metricgold":                     # Stable Diffusion parts, frames
        m = cfg.metricgold
        assert 0 < m.min_depth < m.max_depth and cfg.data.context == []
        assert cfg.optim.scheduler == "exponential" and cfg.optim.interval == "step"
        assert cfg.data.width % 8 == 0 and cfg.data.height % 8 == 0     # SD's VAE factor
        if not path.name.endswith("_tiny.yaml"):         # Marigold's numbers
            assert (m.lr, cfg.optim.final_ratio, cfg.optim.warmup_steps,
                    cfg.optim.decay_steps) == (3e-5, 0.01, 100, 25000)
            assert cfg.data.batch_size * cfg.trainer.gradient_accumulation_steps == 32
        return
    if cfg.task == "student":                        # the frozen teacher brings its nets
        from depth_perception_training.train.student import STUDENT_INITS

        assert cfg.student.init in STUDENT_INITS
        assert cfg.student.semantic.weight >= 0 and cfg.student.distill_weight >= 0
        if cfg.student.init == "model":
            arch, depth_cfg = depth_config(dict(cfg.model.depth))
            assert 0 < depth_cfg.min_depth < depth_cfg.max_depth
        else:
            assert not dict(cfg.model.depth)
        return
    from depth_perception_training.train.teacher import _sample_config, check_config

    check_config(cfg)                                # size multiple of the arch, task
    arch, depth_cfg = depth_config(dict(cfg.model.depth))
    assert arch in ("dpt", "sql", "mono") and 0 < depth_cfg.min_depth < depth_cfg.max_depth
    PoseNetConfig(**cfg.model.pose)
    assert isinstance(_sample_config(cfg), SampleConfig)
    assert cfg.loss.velocity_weight > 0                     # metric depth from odometry
    if not path.name.endswith("_tiny.yaml"):
        assert cfg.loss.velocity_weight == pytest.approx(0.02)   # md4all weight
        assert cfg.optim.grad_clip == 0                  # the references clip nothing


def test_non_tiny_configs_name_pretrained_weights():
    for name in ("ssd_teacher.yaml", "dinosd_teacher.yaml", "spidepth.yaml", "monodepth2.yaml"):
        cfg = to_dataclass(load_config(CONFIG_DIR / "train" / name))
        assert cfg.model.depth["pretrained"] and cfg.model.pose["pretrained"], name
    tiny = to_dataclass(load_config(REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"))
    assert tiny.model.depth.get("pretrained") is None and not tiny.data.bags


def test_cli_print_config_and_errors(tmp_path):
    cfg = REPO / "training/depth_perception_training/config/train/teacher_tiny.yaml"
    run = [sys.executable, "-m", "depth_perception", "train", "teacher", "--config", str(cfg)]
    out = subprocess.run(run + ["--print-config", "--resume", "trainer.max_steps=11"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "max_steps: 11" in out.stdout and "resume: auto" in out.stdout
    bad = subprocess.run(run + ["--print-config", "data.bogus=1"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert "unknown configuration key 'data.bogus'" in bad.stderr


def test_paper_configs_carry_the_papers_numbers():
    """ssd_teacher / ssd_student: SSD Sec. 4.1; spidepth: SPIdepth's resnet_192x640.txt;
    the DINO-SD settings survive as named variants."""
    for name in ("ssd_teacher.yaml", "ssd_student.yaml"):
        c = to_dataclass(load_config(CONFIG_DIR / "train" / name))
        assert (c.data.depth_width, c.data.depth_height) == (784, 518), name
        assert (c.data.width, c.data.height) == (576, 320), name
        assert (c.data.batch_size, c.trainer.max_epochs) == (4, 20), name
        assert c.model.depth["size"] == "base" and c.model.depth["pretrained"] == \
            "facebook/dinov2-base", name
        o = c.optim
        assert (o.name, o.scheduler, o.interval) == ("adamw", "linear", "step"), name
        assert (o.lr_encoder, o.lr_decoder) == (5e-6, 5e-6), name
    assert to_dataclass(load_config(CONFIG_DIR / "train" / "ssd_teacher.yaml")).optim.lr_pose == 5e-5
    for row in (4, 5):
        c = to_dataclass(load_config(CONFIG_DIR / "train" / f"ssd_table3_row{row}.yaml"))
        assert c.optim.scheduler == "linear" and c.data.depth_width == 784
    d = to_dataclass(load_config(CONFIG_DIR / "train" / "dinosd_teacher.yaml"))
    assert (d.optim.lr_pose, d.optim.lr_encoder, d.optim.lr_decoder) == (1e-4, 5e-6, 5e-5)
    assert (d.optim.scheduler, d.optim.step_size, d.optim.gamma) == ("step", 5, 0.5)
    assert d.data.depth_width is None and (d.data.width, d.data.height) == (588, 322)
    s = to_dataclass(load_config(CONFIG_DIR / "train" / "spidepth.yaml"))
    assert (s.data.width, s.data.height, s.data.batch_size, s.trainer.max_epochs) == (
        640, 192, 16, 25)
    assert (s.optim.name, s.optim.lr_decoder, s.optim.lr_pose) == ("adam", 1e-4, 1e-4)
    assert s.optim.lr_encoder == pytest.approx(s.optim.lr_decoder / 10)       # --diff_lr
    assert (s.optim.step_size, s.optim.gamma) == (15, 0.1)
    m = s.model.depth
    assert (m["encoder"], m["decoder_features"], m["decoder_channels"], m["patch_size"],
            m["num_bins"], m["num_queries"], m["transformer_ffn"], m["max_tokens"]) == (
        "resnet50", 256, 32, 16, 64, 64, 512, 500)
    assert (m["min_depth"], m["max_depth"]) == (0.001, 80.0)
    header = (CONFIG_DIR / "train" / "spidepth.yaml").read_text()
    assert "args_files/hisfog/kitti/resnet_192x640.txt" in header
