"""Model hub access (depth_perception.hub): the offline rule and the one loading error."""
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


def test_a_model_that_cannot_be_loaded_names_its_id_and_how_to_fetch_it(tmp_path):
    """Every loader (onboard and training) raises this one error."""
    from depth_perception.hub import load_pretrained

    def loader(name, local_files_only):
        raise OSError(f"{name} is not a valid model\nmore detail")

    with pytest.raises(FileNotFoundError, match=r"DINOv2 'org/model' could not be loaded "
                                                r"\(local_files_only=True\): .*not available.*"
                                                r"huggingface-cli download org/model") as err:
        load_pretrained(loader, "org/model", "DINOv2", local_files_only=True)
    assert "more detail" not in str(err.value) and isinstance(err.value.__cause__, OSError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="exists but does not hold this model"):
        load_pretrained(loader, tmp_path / "empty", "DINOv2")
