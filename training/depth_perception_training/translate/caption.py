"""BLIP-2 captions of day-clear frames (the content half of the GDT text prompt)."""
from __future__ import annotations

import numpy as np

from depth_perception_training.translate.models import load_pretrained


class Captioner:
    """``Captioner(model_id)(rgb) -> str``: greedy BLIP-2 caption of one frame.

    Args:
        model_id: hub id (e.g. ``Salesforce/blip2-opt-2.7b``) or local folder holding
            a ``Blip2ForConditionalGeneration`` and its processor.
    """

    def __init__(self, model_id: str, device, dtype, max_new_tokens: int = 30,
                 min_new_tokens: int = 0, local_files_only: bool = False):
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        self.model_id = model_id
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model_id,
                                         "BLIP-2 processor", local_files_only)
        self.model = load_pretrained(Blip2ForConditionalGeneration.from_pretrained, model_id,
                                     "BLIP-2 captioning model", local_files_only,
                                     dtype=dtype).to(device).eval()
        self.device, self.dtype = device, dtype
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens

    def __call__(self, rgb: np.ndarray) -> str:
        """[H,W,3] uint8 RGB -> caption (lower case, no trailing period)."""
        import torch
        from PIL import Image

        inputs = self.processor(images=Image.fromarray(rgb), return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else
                      v.to(self.device)) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      min_new_tokens=self.min_new_tokens, do_sample=False)
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
        return " ".join(text.split()).strip().rstrip(".").lower()
