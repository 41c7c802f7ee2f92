"""Loading pretrained models by hub id or local folder, with one clear error.

Every model of the translation pipeline is named in the configuration (``models.*``)
and goes through :func:`depth_perception.hub.load_pretrained`: a local folder in the
hub's layout is read as is; a hub id is read from the local cache when ``HF_HUB_OFFLINE=1`` (or
``models.local_files_only``) and downloaded otherwise. A model that cannot be loaded
raises the package's one hub error (``FileNotFoundError`` naming the id and the command
that fetches it in advance).
transformers models go through the package's strict weight check (weights that do not
fit their config are an error, not silently random).
"""
from __future__ import annotations

import logging

from depth_perception.hub import check_loading_info, load_pretrained

log = logging.getLogger(__name__)


def load_model_and_processor(model_cls, processor_cls, model_id: str, what: str, device,
                             dtype, local_files_only: bool = False):
    """(model in eval mode on ``device``, its processor) of a transformers checkpoint."""
    processor = load_pretrained(processor_cls.from_pretrained, model_id, f"{what} processor",
                                local_files_only)
    model, info = load_pretrained(model_cls.from_pretrained, model_id, what, local_files_only,
                                  dtype=dtype, output_loading_info=True)
    check_loading_info(f"{what} '{model_id}'", info)
    return model.to(device).eval(), processor


def select_device(cpu: bool = False):
    """The process's device: its Accelerate device (one GPU per process), else CPU."""
    import torch

    if cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    from accelerate import PartialState

    return PartialState().device


def select_dtype(name: str, device):
    """``auto``: fp16 on CUDA, fp32 elsewhere; else fp16 | bf16 | fp32 as named."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
