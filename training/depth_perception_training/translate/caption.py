"""BLIP-2 captions of one frame: the content half of GDT's text prompt and the SDS prompt
of Re-Depth refinement. The package's one captioner.

``Captioner.from_pretrained("Salesforce/blip2-opt-2.7b")`` (or a local folder) loads a
``Blip2ForConditionalGeneration`` and its processor through the strict loader
(:func:`~depth_perception_training.translate.models.load_model_and_processor`);
``caption(rgb)`` (or calling the captioner) returns one line of text for an [H,W,3]
uint8 RGB image, greedy decoding.
"""
from __future__ import annotations

import numpy as np

from depth_perception_training.translate.models import load_model_and_processor

__all__ = ["Captioner"]


class Captioner:
    """BLIP-2 captioning: processor + model, greedy decoding of ``max_new_tokens``.

    Args:
        processor, model: a ``Blip2Processor`` and ``Blip2ForConditionalGeneration``.
        max_new_tokens / min_new_tokens: bounds of the generated text (None: the
            model's generation default).
        prefix: text put before the caption.
        tidy: the caption as one line in lower case, without a final period (GDT's
            prompt template); False keeps the generated text as it is (stripped).
        device, dtype: where the inputs go (``dtype`` None: the processor's float32).
    """

    def __init__(self, processor, model, max_new_tokens: int = 30,
                 min_new_tokens: int | None = None, prefix: str = "", tidy: bool = False,
                 device="cpu", dtype=None):
        self.processor, self.model = processor, model.to(device).eval()
        self.max_new_tokens, self.min_new_tokens = int(max_new_tokens), min_new_tokens
        self.prefix, self.tidy, self.device, self.dtype = prefix, tidy, device, dtype

    @classmethod
    def from_pretrained(cls, name_or_path: str, device="cpu", dtype=None,
                        local_files_only: bool | None = False, **kwargs) -> "Captioner":
        """A hub id or a local folder holding the model and its processor; ``kwargs``
        go to the constructor."""
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        model, processor = load_model_and_processor(
            Blip2ForConditionalGeneration, AutoProcessor, str(name_or_path),
            "BLIP-2 captioning model", device, dtype, local_files_only)
        return cls(processor, model, device=device, dtype=dtype, **kwargs)

    def caption(self, rgb: np.ndarray) -> str:
        """[H,W,3] uint8 RGB -> caption text (``prefix`` + generated words)."""
        import torch

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"Captioner.caption: expected [H,W,3] uint8 RGB, got "
                             f"{rgb.shape} {rgb.dtype}")
        inputs = self.processor(images=rgb, return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() and self.dtype
                      else v.to(self.device)) for k, v in inputs.items()}
        bounds = {"max_new_tokens": self.max_new_tokens}
        if self.min_new_tokens is not None:
            bounds["min_new_tokens"] = self.min_new_tokens
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **bounds, do_sample=False)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        if self.tidy:
            text = " ".join(text.split()).strip().rstrip(".").lower()
        return f"{self.prefix}{text}".strip()

    __call__ = caption
