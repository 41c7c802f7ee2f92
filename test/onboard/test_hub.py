"""Model hub access (depth_perception.hub): the offline rule."""
import pytest


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

