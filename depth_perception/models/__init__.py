"""Depth and pose networks: registry, builders, and the checkpoint folder format.

A depth-model checkpoint folder holds

* ``model_config.json``: ``{"arch": "dpt"|"sql"|"mono", <config dataclass fields>,
  "hf_config": <transformers config of the backbone/network>}`` (the transformers
  config rebuilds the exact architecture offline, whatever ``pretrained`` named),
* ``depth_model.safetensors``: the state dict of the training network,
* ``metadata.json``: :class:`~depth_perception.metadata.ModelMetadata`
  (``output_kind`` ``metric_depth``: the output of the inference module).

:func:`load_depth_model` returns a :class:`DepthInference` module mapping a normalised
image [B,3,H,W] (metadata mean/std) to metric depth [B,1,H,W] (scale 0).
Heavy imports (torch, transformers) happen inside the functions.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
from pathlib import Path

from depth_perception.metadata import ModelMetadata

logger = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "depth_model.safetensors"
METADATA_FILE = "metadata.json"

#: the registry of depth architectures: arch -> (module, config class, network class).
#: The network class declares what training and export may ask of it (input size
#: multiple, features, parameter groups, disparity heads, random-layer init):
#: :class:`depth_perception.models.network.DepthNetwork`, checked on lookup.
DEPTH_ARCHS: dict[str, tuple[str, str, str]] = {
    "dpt": ("depth_perception.models.dpt_depth", "DPTDepthConfig", "DPTDepthNet"),
    "sql": ("depth_perception.models.sql_depth", "SQLDepthConfig", "SQLDepthNet"),
    "mono": ("depth_perception.models.mono_depth", "MonoDepthConfig", "MonoDepthNet"),
}

__all__ = ["DEPTH_ARCHS", "build_depth_model", "build_pose_model", "depth_config",
           "depth_network_class", "save_depth_model", "load_depth_model", "normalize_image",
           "DepthInference", "CONFIG_FILE", "WEIGHTS_FILE", "METADATA_FILE"]


def _arch_classes(arch: str):
    from depth_perception.models.network import check_depth_network

    if arch not in DEPTH_ARCHS:
        raise ValueError(f"unknown depth model arch '{arch}'; expected one of {sorted(DEPTH_ARCHS)}")
    module_name, cfg_name, net_name = DEPTH_ARCHS[arch]
    module = importlib.import_module(module_name)
    return getattr(module, cfg_name), check_depth_network(getattr(module, net_name), arch)


def depth_network_class(arch: str) -> type:
    """The network class of ``arch`` (a :class:`~depth_perception.models.network.DepthNetwork`);
    ValueError for an unknown arch."""
    return _arch_classes(arch)[1]


def dataclass_from_dict(cls, d: dict, what: str):
    """Instantiate config dataclass ``cls`` from ``d``; ValueError naming unknown keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**d)


def _arch_of(config) -> str:
    for arch in DEPTH_ARCHS:
        cfg_cls, _ = _arch_classes(arch)
        if isinstance(config, cfg_cls):
            return arch
    raise ValueError(f"not a depth model config: {type(config).__name__}")


def depth_config(cfg):
    """(arch, config dataclass) from a dict with key ``arch`` (+ fields) or a config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return _arch_of(cfg), cfg
    if hasattr(cfg, "items") and not isinstance(cfg, dict):   # e.g. an OmegaConf DictConfig
        cfg = {k: v for k, v in cfg.items()}
    if not isinstance(cfg, dict):
        raise ValueError(f"depth model config must be a dict or a config dataclass, got {type(cfg).__name__}")
    d = dict(cfg)
    arch = d.pop("arch", None)
    if arch is None:
        raise ValueError(f"depth model config needs 'arch' (one of {sorted(DEPTH_ARCHS)})")
    cfg_cls, _ = _arch_classes(arch)
    return arch, dataclass_from_dict(cfg_cls, d, f"depth model config (arch '{arch}')")


def build_depth_model(cfg, hf_config: dict | None = None):
    """Depth network from a config dict (``{"arch": "dpt"|"sql"|"mono", ...fields}``) or dataclass.

    The network maps a normalised image [B,3,H,W] to a dict with ``depth``/``disp``
    lists of [B,1,H,W] (scale 0 = full resolution). ``hf_config`` rebuilds a saved
    architecture exactly (used by :func:`load_depth_model`).
    """
    arch, config = depth_config(cfg)
    _, net_cls = _arch_classes(arch)
    return net_cls(config, hf_config=hf_config)


def build_pose_model(cfg, hf_config: dict | None = None):
    """PoseNet from a dict of PoseNetConfig fields (an ``arch: pose`` key is allowed) or a PoseNetConfig."""
    from depth_perception.models.pose import PoseNet, PoseNetConfig
    if not isinstance(cfg, PoseNetConfig):
        d = {k: v for k, v in cfg.items()}
        if d.pop("arch", "pose") != "pose":
            raise ValueError("pose model config: arch must be 'pose' when given")
        cfg = dataclass_from_dict(PoseNetConfig, d, "pose model config")
    return PoseNet(cfg, hf_config=hf_config)


def normalize_image(image, mean, std):
    """image [B,3,H,W] in [0,1] -> (image - mean) / std with per-channel mean/std (3 values)."""
    import torch
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image - mean) / std


@functools.lru_cache(maxsize=None)
def _inference_class():
    import torch.nn as nn

    class DepthInference(nn.Module):
        """Normalised image [B,3,H,W] -> metric depth [B,1,H,W] (scale 0 of the network);
        a network with a log-variance head returns (depth, log_variance [B,1,H,W])."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.uncertainty = bool(getattr(getattr(net, "config", None), "uncertainty",
                                            False))

        def forward(self, image):
            out = self.net(image)
            if self.uncertainty:
                return out["depth"][0], out["log_variance"]
            return out["depth"][0]

    return DepthInference


def __getattr__(name):  # lazy torch-dependent class
    if name == "DepthInference":
        return _inference_class()
    raise AttributeError(name)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_depth_model(folder, model, config=None, metadata: ModelMetadata | None = None) -> Path:
    """Write model_config.json, depth_model.safetensors and metadata.json into ``folder``.

    model: a DPTDepthNet / SQLDepthNet (or a DepthInference / DDP wrapper around one).
    config: its config dataclass or dict (default: ``model.config``).
    metadata: ModelMetadata with output_kind ``metric_depth`` (default: built from the
    config: min/max depth, the arch's size multiple, ImageNet mean/std).
    """
    from safetensors.torch import save_file
    net = model
    while hasattr(net, "module") and not hasattr(net, "hf_config_dict"):  # DDP / compiled wrappers
        net = net.module
    if not hasattr(net, "hf_config_dict"):                                 # DepthInference
        net = getattr(net, "net", net)
    if not hasattr(net, "hf_config_dict"):
        raise ValueError(f"save_depth_model: {type(model).__name__} is not a depth network of "
                         f"this package (archs {sorted(DEPTH_ARCHS)})")
    arch, config = depth_config(config if config is not None else net.config)
    if metadata is None:
        metadata = ModelMetadata(output_kind="metric_depth", min_depth=config.min_depth,
                                 max_depth=config.max_depth,
                                 size_multiple=depth_network_class(arch).size_multiple,
                                 provenance={"arch": arch})
    if metadata.output_kind != "metric_depth":
        raise ValueError(f"save_depth_model: the saved inference module outputs metric depth; "
                         f"metadata.output_kind is '{metadata.output_kind}'")
    if (metadata.min_depth, metadata.max_depth) != (config.min_depth, config.max_depth):
        raise ValueError(f"save_depth_model: metadata depth range ({metadata.min_depth}, "
                         f"{metadata.max_depth}) differs from the model config "
                         f"({config.min_depth}, {config.max_depth})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_config = {"arch": arch, **dataclasses.asdict(config), "hf_config": net.hf_config_dict()}
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    _atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"arch": arch}))
    _atomic_write(folder / CONFIG_FILE,
                  lambda p: p.write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n"))
    _atomic_write(folder / METADATA_FILE, lambda p: metadata.save(p))
    logger.info("saved %s depth model to %s", arch, folder)
    return folder


def _check_state_dict(expected: dict, loaded: dict, source: str) -> None:
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    mismatched = [f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:5]})")
    if problems:
        raise ValueError(f"{source}: weights do not fit the model config: " + "; ".join(problems))


def load_depth_model(folder, device: str = "cpu"):
    """(DepthInference in eval mode on ``device``, ModelMetadata) from a checkpoint folder."""
    from safetensors.torch import load_file
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"depth model folder {folder} not found")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"depth model folder {folder} lacks {missing} (expected "
                                f"{CONFIG_FILE}, {WEIGHTS_FILE}, {METADATA_FILE}; is this the "
                                "output of save_depth_model / training's model/ folder?)")
    # 1. config + metadata
    try:
        model_config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: not valid JSON ({exc})") from exc
    hf_config = model_config.pop("hf_config", None)
    metadata = ModelMetadata.load(folder / METADATA_FILE)
    if metadata.output_kind != "metric_depth":
        raise ValueError(f"{folder / METADATA_FILE}: output_kind '{metadata.output_kind}', "
                         "expected 'metric_depth' for a depth-model checkpoint folder")
    # 2. network from the stored architecture (never downloads: hf_config is complete)
    try:
        net = build_depth_model(model_config, hf_config=hf_config)
    except ValueError as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: {exc}") from exc
    # 3. weights: validated against the architecture before loading
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file ({exc})") from exc
    _check_state_dict(net.state_dict(), state, str(folder / WEIGHTS_FILE))
    net.load_state_dict(state)
    module = _inference_class()(net).to(device).eval()
    return module, metadata
