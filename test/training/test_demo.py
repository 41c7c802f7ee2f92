"""The demo end to end at a reduced size: synthetic bags, tiny teacher training, replay
through the depth node over DDS, online + offline evaluation, report."""
from __future__ import annotations

import json
import logging
import re

import pytest

pytestmark = pytest.mark.ros


def test_demo_end_to_end_small(tmp_path, capsys, caplog):
    from depth_perception import cli

    caplog.set_level(logging.INFO)
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--frames", "6", "--size", "160x48",
                   "--train-size", "128x64", "--train-steps", "3", "--train-scenes", "2",
                   "--train-frames", "6", "--pose-steps", "2", "--student-steps", "2",
                   "--rate", "1.0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained by this package's self-supervised trainer" in printed
    assert "night absRel" in printed and "day-rain absRel" in printed
    assert f"report:  {out / 'report' / 'report.md'}" in printed
    for cond in ("day-clear", "night", "rain"):
        assert f"online at 1.0x, {cond}: 6 of 6 replayed frames scored" in printed

    m = json.loads((out / "report" / "metrics.json").read_text())
    assert set(m["per_condition"]) == {"day-clear", "night", "rain"}
    assert list(m["models"]) == ["tiny-teacher (offline)", "tiny-teacher (offline) + fusion",
                                 "student (offline)", "student (offline) + fusion",
                                 "prior (image-blind)", "tiny-teacher (online)",
                                 "student (online)"]
    assert "prior (image-blind)" in printed and "absRel struct." in printed
    prior = m["models"]["prior (image-blind)"]["all"]
    assert 0 < prior["abs_rel"] < 10 and prior["abs_rel_structure"] > 0.2
    assert (out / "student" / "model.onnx").is_file()          # the student deployed itself
    for cond in ("day-clear", "night", "rain"):
        assert m["models"]["student (offline)"]["per_condition"][cond]["frames"] == 6
        assert 1 <= m["models"]["student (online)"]["per_condition"][cond]["frames"] <= 6
    for cond in ("day-clear", "night", "rain"):
        offline = m["models"]["tiny-teacher (offline)"]["per_condition"][cond]
        online = m["models"]["tiny-teacher (online)"]["per_condition"][cond]
        assert offline["frames"] == 6
        assert online["frames"] == 6                  # every replayed frame scored at 1x
        assert 0 < offline["abs_rel"] < 10 and 0 <= offline["a1"] <= 1
    # the trained model really is the trainer's export, and it is what was evaluated
    assert (out / "train" / "model" / "depth_model.safetensors").is_file()
    info = m["models"]["tiny-teacher (offline)"]["info"]
    assert info["model"] == str(out / "train" / "model")
    # online and offline agree frame by frame on the common frames, and pair by pair
    # on the TAE of consecutive frames
    lines = [line for line in printed.splitlines() if line.startswith("online vs offline")]
    assert len(lines) == 3
    for line in lines:
        tae, abs_rel = (part.rsplit("=", 1)[1].strip() for part in line.split(";"))
        assert abs_rel != "n/a" and float(abs_rel) < 1e-3, line
        assert tae != "n/a" and float(tae) < 1e-6, line
    md = (out / "report" / "report.md").read_text()
    assert "tiny-teacher (online)" in md and "common frames" in md
    pngs = {p.name for p in (out / "report" / "plots").glob("*.png")}
    assert all(p.stat().st_size > 5000 for p in (out / "report" / "plots").glob("*.png"))
    assert {"samples_student_offline.png", "samples_student_offline_fusion.png",
            "tae_per_frame.png", "sparsification.png"} <= pngs and len(pngs) == 11
    # the temporal alignment error of every row (online: of the frames scored online)
    for name in ("tiny-teacher (offline)", "student (offline)", "prior (image-blind)",
                 "student (offline) + fusion", "tiny-teacher (online)"):
        assert m["models"][name]["temporal"]["all"]["pairs"] == 3 * 5
    assert 1 <= m["models"]["student (online)"]["temporal"]["all"]["pairs"] <= 3 * 5
    assert "## Temporal alignment error (TAE)" in md
    # the fused rows carry the temporal agreement as their confidence: AUSE / AURG
    fused = m["models"]["student (offline) + fusion"]["per_condition"]["night"]
    assert "aurg_abs_rel" in fused and "## Confidence: sparsification (AUSE / AURG)" in md
    # progress a log file can follow: a line per stage, and the trainer's step lines
    messages = [r.getMessage() for r in caplog.records]
    stages = [m.split(" (")[0] for m in messages if re.match(r"demo \d+/\d+ \(", m)]
    assert stages == [f"demo {k}/6" for k in range(1, 7)], stages
    assert any(m.startswith("train: step 3/3 loss ") for m in messages), messages


def test_untrained_fallback_names_itself(tmp_path):
    from depth_perception_training.demo import DemoConfig, untrained_model
    from depth_perception.metadata import ModelMetadata

    folder, note = untrained_model(DemoConfig(out=tmp_path), "no trainer in this test")
    assert "UNTRAINED" in note and "no trainer in this test" in note
    meta = ModelMetadata.load(f"{folder}/metadata.json")
    assert meta.provenance["trained"] is False
    # no training focal length, but the size it would train at: the runtime's default
    assert (meta.train_width, meta.train_height, meta.train_focal_px) == \
        (*DemoConfig().train_size, 0.0)


def test_bad_demo_settings():
    from depth_perception_training.demo import DemoConfig

    with pytest.raises(ValueError, match="at least 3 frames"):
        DemoConfig(frames=1)
    with pytest.raises(ValueError, match="multiples of 32"):
        DemoConfig(train_size=(100, 40))


def test_fewer_teacher_steps_keep_the_decay_at_the_same_fraction_of_the_run():
    from depth_perception_training.demo import find_config, scaled_schedule
    from depth_perception_training.train.config import load_config

    conf = load_config(find_config("teacher_tiny.yaml"), [])
    assert (conf.trainer.max_steps, conf.optim.step_size) == (600, 300)   # x0.25 at half-way
    assert scaled_schedule(conf, 300) == ["trainer.max_steps=300", "optim.step_size=150"]
    assert scaled_schedule(conf, 1) == ["trainer.max_steps=1", "optim.step_size=1"]
    # a schedule not counted in steps is left alone
    epochs = load_config(find_config("teacher_tiny.yaml"), ["optim.interval=epoch"])
    assert scaled_schedule(epochs, 300) == ["trainer.max_steps=300"]
