"""Image captions for the SDS prompt (BLIP-2, transformers).

``Captioner.from_pretrained("Salesforce/blip2-opt-2.7b")`` (or a local folder) wraps
``Blip2Processor`` + ``Blip2ForConditionalGeneration``; ``caption(rgb)`` returns one
line of text for an [H,W,3] uint8 RGB image. The refinement loop uses a fixed prompt
instead when one is configured (``prompt:``), and then no captioner is loaded.
"""
from __future__ import annotations

import numpy as np
import torch

from depth_perception.hub import hub_offline
from depth_perception_training.refine.sds import missing_weights_error

__all__ = ["Captioner"]


class Captioner:
    """BLIP-2 captioning: processor + model, greedy decoding of ``max_new_tokens``."""

    def __init__(self, processor, model, max_new_tokens: int = 30, prefix: str = "",
                 device: str = "cpu"):
        self.processor, self.model = processor, model.to(device).eval()
        self.max_new_tokens, self.prefix, self.device = int(max_new_tokens), prefix, device

    @classmethod
    def from_pretrained(cls, name_or_path: str, local_files_only: bool | None = None,
                        device: str = "cpu", **kwargs) -> "Captioner":
        from transformers import Blip2ForConditionalGeneration, Blip2Processor
        offline = hub_offline(local_files_only, name_or_path)
        try:
            processor = Blip2Processor.from_pretrained(str(name_or_path), local_files_only=offline)
            model = Blip2ForConditionalGeneration.from_pretrained(str(name_or_path),
                                                                  local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise missing_weights_error("BLIP-2 captioner", str(name_or_path), exc) from exc
        return cls(processor, model, device=device, **kwargs)

    @torch.no_grad()
    def caption(self, rgb: np.ndarray) -> str:
        """[H,W,3] uint8 RGB -> caption text (``prefix`` + generated words, stripped)."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"Captioner.caption: expected [H,W,3] uint8 RGB, got "
                             f"{rgb.shape} {rgb.dtype}")
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return f"{self.prefix}{text}".strip()
