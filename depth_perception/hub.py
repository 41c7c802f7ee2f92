"""Model hub access, offline first.

One answer to "may weights come from the network?" for every loader in the package
(:func:`hub_offline`), one way to find a hub id's files on disk
(:func:`snapshot_folder`), one error for weights that cannot be loaded here, naming the
id and how to fetch it in advance (:func:`load_error`, raised by :func:`load_pretrained`),
and one strict check that loaded weights fit their config (:func:`check_loading_info`).
Nothing here touches the network at import; a download happens only when a caller asks
for a hub id while the hub is not declared offline.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline(local_files_only: bool | None = False, path: str | Path | None = None) -> bool:
    """True when weights must come from local files: the flag, ``path`` naming a local
    folder (``from_pretrained(folder)`` needs no hub), or ``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on."""
    env = any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
              for k in OFFLINE_VARIABLES)
    folder = path is not None and str(path) != "" and Path(path).is_dir()
    return bool(local_files_only or folder or env)


def snapshot_folder(model_id: str, local_files_only: bool = False) -> Path:
    """Local folder with a hub model's config and torch weights (the hub cache's snapshot;
    downloaded only when the hub is not offline). FileNotFoundError saying how to get it
    in advance otherwise."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise RuntimeError("loading a model by hub id needs huggingface_hub "
                           "(pip install transformers)") from exc
    offline = hub_offline(local_files_only)
    try:
        # config, image processor config and torch weights: not ONNX/TF/Flax variants
        return Path(snapshot_download(model_id, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, ...
        raise load_error("model", model_id, exc, offline) from exc


def fetch_hint(model_id: str) -> str:
    """How to make ``model_id`` loadable here (an existing folder: how to fill it)."""
    if Path(model_id).exists():
        return (f"the folder {model_id} exists but does not hold this model in the hub's "
                "layout (save it with save_pretrained)")
    return (f"it is no folder here and not available as a model id; fetch it in advance on "
            f"a machine with hub access: `huggingface-cli download {model_id} --local-dir "
            f"weights/{str(model_id).split('/')[-1]}`, then pass that folder (or keep it in "
            "the hub cache and set HF_HUB_OFFLINE=1)")


def load_error(what: str, name_or_path, exc: BaseException, offline: bool) -> FileNotFoundError:
    """The one error for pretrained weights that cannot be loaded here: ``what`` and the id,
    whether the hub was offline, how to fetch it in advance, and the first line of the
    cause. Raise it ``from exc``."""
    name = str(name_or_path)
    cause = (str(exc).splitlines() or [""])[0]
    return FileNotFoundError(f"{what} '{name}' could not be loaded (local_files_only={offline}"
                             f"): {fetch_hint(name)}. Cause: {type(exc).__name__}: {cause}")


def load_pretrained(loader, name_or_path, what: str, local_files_only: bool | None = False,
                    **kwargs):
    """``loader(name_or_path, local_files_only=..., **kwargs)`` (a ``from_pretrained``),
    offline per :func:`hub_offline`; :func:`load_error` when it cannot be loaded."""
    offline = hub_offline(local_files_only, name_or_path)
    try:
        return loader(str(name_or_path), local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_error(what, name_or_path, exc, offline) from exc


def check_loading_info(name: str, info: dict, allow_mismatch: bool = False) -> None:
    """Refuse weights that do not fit their config.

    ``info``: transformers' ``output_loading_info`` dict. transformers fills missing
    weights with random values and only warns; running or exporting such a model would
    silently produce noise, so missing or wrongly shaped weights raise ValueError unless
    ``allow_mismatch`` (then they are logged). Unused weights are logged.
    """
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [str(m) for m in (info.get("mismatched_keys") or [])]
    if missing or mismatched:
        message = (f"{name}: the weights do not fit its config.json: {len(missing)} missing "
                   f"(e.g. {missing[:5]}), {len(mismatched)} of another shape (e.g. "
                   f"{mismatched[:3]}); they would be random")
        if not allow_mismatch:
            raise ValueError(message + " (allow it explicitly with allow_weight_mismatch)")
        log.warning("%s; allowed by allow_weight_mismatch", message)
    if info.get("unexpected_keys"):
        log.warning("%s: %d weights not used by the model (e.g. %s)", name,
                    len(info["unexpected_keys"]), sorted(info["unexpected_keys"])[:5])
