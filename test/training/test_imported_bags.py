"""Imported datasets go through the training paths unchanged: the teacher trains on a
KITTI drive (PNG images) and on nuScenes scenes (JPEG ``CompressedImage``), and the
student is distilled from that teacher on photometric translations of the KITTI drive
(a few steps each: what is checked is that the bags are read, not what is learnt)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("pykitti")
pytest.importorskip("nuscenes")

SIZE = ["data.width=160", "data.height=64", "data.batch_size=2", "data.num_workers=0",
        "model.depth.encoder=tiny", "trainer.val_every=-1", "trainer.checkpoint_every=0",
        "trainer.image_every=0"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from depth_perception.datasets import tiny, tiny_nuscenes
    from depth_perception.datasets.kitti import import_kitti
    from depth_perception.datasets.nuscenes import import_nuscenes

    root = tmp_path_factory.mktemp("imported")
    tiny.write_kitti_drive(root / "kitti", "2011_09_26/2011_09_26_drive_0048_sync",
                           frames=23)
    kitti = import_kitti(root / "kitti", "eigen", root / "bags_kitti")
    tiny_nuscenes.write_nuscenes(root / "nuscenes", ["Parking lot, big trucks"] * 2,
                                 samples=6)
    nuscenes = import_nuscenes(root / "nuscenes", "v1.0-mini", root / "bags_nuscenes")
    return root, kitti, nuscenes


def train_teacher(out, bags, steps=2):
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.teacher import train_teacher as run

    cfg = load_config("teacher_tiny", [f"output_dir={out}", f"trainer.max_steps={steps}",
                                       "data.bags=[" + ",".join(map(str, bags)) + "]",
                                       "data.val_bags=[]", *SIZE])
    result = run(cfg)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return result, log


@pytest.mark.parametrize("dataset", ["kitti", "nuscenes"])
def test_teacher_trains_on_imported_bags(imported, tmp_path, dataset):
    from depth_perception.data.bag import read_bag_metadata

    root, kitti, nuscenes = imported
    bags = kitti if dataset == "kitti" else nuscenes
    assert read_bag_metadata(bags[0])["custom_data"]["condition"] == "day-clear"
    result, log = train_teacher(tmp_path / "teacher", bags)
    assert result.step == 2 and [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["terms"]["velocity"] >= 0 for r in log)
    assert (result.export_dir / "depth_model.safetensors").is_file()


def test_student_distils_on_translations_of_an_imported_drive(imported, tmp_path):
    from depth_perception_training.train.reproduce import train_student_run, translate_run

    root, kitti, _ = imported
    teacher, _ = train_teacher(tmp_path / "teacher", kitti)
    translations = translate_run(tmp_path / "translations", "photometric", kitti)
    manifest = (translations / "manifest.jsonl").read_text().splitlines()
    assert manifest, "no translated frame"
    timing = train_student_run(tmp_path / "student", tmp_path / "teacher", translations,
                               kitti, 2, [*SIZE[:4], "trainer.image_every=0"])
    assert timing["steps"] == 2
    assert (tmp_path / "student" / "model.onnx").is_file()
