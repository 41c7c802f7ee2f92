"""Intrinsics, depth units, model metadata and the command line tool."""
import json
import subprocess
import sys

import numpy as np
import pytest

from depth_perception import cli, units
from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata


def test_intrinsics_project_backproject_round_trip():
    cam = Intrinsics(500.0, 400.0, 319.5, 239.5, 640, 480)
    depth = np.full((480, 640), 7.0, np.float32)
    pts = cam.backproject(depth)
    uv, z = cam.project(pts.reshape(-1, 3))
    u, v = np.meshgrid(np.arange(640), np.arange(480))
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-3)
    np.testing.assert_allclose(z, 7.0)
    # a point 1 m right, 0.5 m down at 10 m: u = 500*0.1 + 319.5, v = 400*0.05 + 239.5
    uv, _ = cam.project(np.array([[1.0, 0.5, 10.0]]))
    np.testing.assert_allclose(uv[0], [369.5, 259.5])


def test_resize_keeps_scene_points_on_same_pixels():
    cam = Intrinsics(500.0, 500.0, 300.0, 200.0, 640, 480)
    half = cam.resized(320, 240)
    point = np.array([[2.0, -1.0, 8.0]])
    (u, v), = cam.project(point)[0]
    (u2, v2), = half.project(point)[0]
    # pixel centres: u' = 0.5 * (u + 0.5) - 0.5
    assert u2 == pytest.approx(0.5 * (u + 0.5) - 0.5)
    assert v2 == pytest.approx(0.5 * (v + 0.5) - 0.5)
    crop = cam.cropped(100, 50, 400, 300)
    (u3, v3), = crop.project(point)[0]
    assert (u3, v3) == pytest.approx((u - 100, v - 50))
    with pytest.raises(ValueError, match="outside image"):
        cam.cropped(400, 0, 400, 300)


def test_zero_K_is_rejected_with_reason():
    with pytest.raises(ValueError, match="CameraInfo K all zero"):
        Intrinsics.from_matrix(np.zeros(9), 640, 480)


def test_millimetre_round_trip_and_invalid_values():
    depth = np.array([[0.001, 1.2345, np.nan], [np.inf, 70.0, 0.0]], np.float32)
    mm = units.metres_to_mm(depth)
    assert mm.dtype == np.uint16
    # 70 m does not fit in uint16 millimetres: invalid (0), like NaN, inf and 0
    np.testing.assert_array_equal(mm, [[1, 1234, 0], [0, 0, 0]])
    back = units.mm_to_metres(mm)
    assert back[0, 1] == pytest.approx(1.234)
    assert np.isnan(back[0, 2]) and np.isnan(back[1, 1])


def test_out_of_range_marking():
    d = units.mark_out_of_range(np.array([0.05, 1.0, 100.0, np.nan], np.float32), 0.1, 80.0)
    assert d[0] == -np.inf and d[1] == 1.0 and d[2] == np.inf and np.isnan(d[3])


def test_hub_offline_flag_folder_or_environment(tmp_path, monkeypatch):
    """One rule for every loader (onboard and training): local files only when asked,
    when the model is a local folder, or when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE say
    so; a hub id or a missing folder with none of these may use the hub."""
    from depth_perception.hub import hub_offline

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not hub_offline() and not hub_offline(None, "org/model")
    assert not hub_offline(False, tmp_path / "missing")
    assert hub_offline(True) and hub_offline(None, tmp_path) and hub_offline(False, str(tmp_path))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_offline(False, "org/model")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline(False) and hub_offline(None, "org/model")


def test_metadata_round_trip_and_refusals(tmp_path):
    meta = ModelMetadata(output_kind="disparity", input_height=196, input_width=644,
                         provenance={"checkpoint": "runs/x"})
    assert ModelMetadata.load(meta.save(tmp_path / "metadata.json")) == meta
    assert meta.fixed_size == (196, 644)
    with pytest.raises(ValueError, match="output_kind"):
        ModelMetadata(output_kind="depthish")
    with pytest.raises(ValueError, match="unknown model metadata keys"):
        ModelMetadata.from_dict({**meta.to_dict(), "max_dpeth": 3})
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        ModelMetadata(min_depth=10, max_depth=1)
    with pytest.raises(FileNotFoundError):
        ModelMetadata.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelMetadata.from_json("{", "x.json")
    assert json.loads(meta.to_json())["mean"] == list(meta.mean)


def test_cli_lists_verbs_and_reports_errors_cleanly(capsys):
    parser = cli.build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert "synth" in verbs
    out = subprocess.run([sys.executable, "-m", "depth_perception", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "synth" in out


def test_cli_boundary_errors_are_one_line_messages(tmp_path, capsys):
    # a bad --size is a ValueError inside the verb: printed as one line, exit code 2
    code = cli.main(["synth", str(tmp_path / "bags"), "--frames", "3", "--size", "64by32"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("depth-perception synth: error:") and "Traceback" not in err
