"""torch backend: this package's checkpoint folders and transformers depth models.

* Checkpoint folders (``model_config.json`` + ``depth_model.safetensors`` +
  ``metadata.json``) load through :func:`depth_perception.models.load_depth_model`.
* transformers depth models (Depth Anything, DPT, ... by hub id or local folder) load
  through ``AutoModelForDepthEstimation.from_pretrained``; their metadata is derived
  from the config (metric when ``depth_estimation_type == "metric"`` with a
  ``max_depth``, otherwise relative disparity) and the image processor config.

torch and transformers are imported when a model is opened, never at module import.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from depth_perception.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMetadata
from depth_perception.runtime.backends.base import Backend, TensorSpec

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": "float32", "fp16": "float16"}
TRANSFORMERS_INPUT = "pixel_values"
TRANSFORMERS_OUTPUT = "predicted_depth"


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError("the torch backend needs PyTorch: pip install torch "
                           "(or use backend='onnxruntime' with an exported .onnx model)") from exc
    return torch


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'. An explicit 'cuda[:i]'
    without CUDA is refused rather than silently moved to the CPU."""
    torch = import_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device='cpu' or a CUDA build "
                           "of torch")
    if not (device == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]', got '{device}'")
    return str(device)


def transformers_depth_module(model):
    """Wrap a transformers depth model as ``image [B,3,H,W] -> depth [B,1,H,W]``.

    Used by the torch backend and for ONNX export (input/output names are chosen by the
    exporter; the module itself only maps tensors).
    """
    torch = import_torch()

    class TransformersDepthModule(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, image):
            return self.model(pixel_values=image).predicted_depth.unsqueeze(1)

    return TransformersDepthModule(model).eval()


def metadata_from_transformers(config, processor_config: dict | None = None,
                               source: str = "") -> ModelMetadata:
    """Derive :class:`ModelMetadata` from a transformers depth model config.

    Metric when ``depth_estimation_type == "metric"`` and ``max_depth`` is set (the
    head outputs metres, ``sigmoid * max_depth``), else relative disparity. Mean/std and
    the size multiple come from the image processor config when there is one.
    """
    kind = getattr(config, "depth_estimation_type", None)
    max_depth = getattr(config, "max_depth", None)
    processor_config = processor_config or {}
    mean = processor_config.get("image_mean", IMAGENET_MEAN)
    std = processor_config.get("image_std", IMAGENET_STD)
    multiple = int(processor_config.get("ensure_multiple_of",
                                        getattr(config, "patch_size", 14) or 14))
    common = dict(mean=tuple(mean), std=tuple(std), size_multiple=multiple,
                  input_name=TRANSFORMERS_INPUT, output_name=TRANSFORMERS_OUTPUT,
                  provenance={"source": str(source),
                              "architecture": (getattr(config, "architectures", None) or
                                               [type(config).__name__])[0]})
    if kind == "metric" and max_depth:
        return ModelMetadata(output_kind="metric_depth", min_depth=min(0.1, float(max_depth) / 10),
                             max_depth=float(max_depth), **common)
    return ModelMetadata(output_kind="relative_disparity", **common)


class TorchBackend(Backend):
    """A torch module mapping ``metadata.input_name`` [B,3,H,W] to
    ``metadata.output_name`` [B,1,H,W] (any batch B), run under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, module, metadata: ModelMetadata, device: str = "auto",
                 precision: str = "fp32"):
        torch = import_torch()
        if precision not in PRECISIONS:
            raise ValueError(f"torch backend precision must be one of {sorted(PRECISIONS)}, "
                             f"got '{precision}'")
        self.device = resolve_device(device)
        if precision == "fp16" and not self.device.startswith("cuda"):
            raise ValueError("torch backend: fp16 needs a CUDA device; use precision='fp32' "
                             "on the CPU")
        self.precision = precision
        self.metadata = metadata
        self._dtype = getattr(torch, PRECISIONS[precision])
        self._module = module.to(self.device, self._dtype).eval()
        h, w = metadata.fixed_size or (None, None)
        # any batch: torch modules take [B,3,H,W] natively
        self.inputs = {metadata.input_name: TensorSpec((None, 3, h, w), "float32")}
        self.outputs = {metadata.output_name: TensorSpec((None, 1, h, w), "float32")}
        if getattr(module, "uncertainty", False):          # a log-variance head (second)
            self.outputs["log_variance"] = TensorSpec((None, 1, h, w), "float32")

    @classmethod
    def from_checkpoint(cls, folder, device: str = "auto", precision: str = "fp32"
                        ) -> "TorchBackend":
        """This package's checkpoint folder (see :func:`depth_perception.models.load_depth_model`)."""
        folder = Path(folder)
        try:
            from depth_perception.models import load_depth_model
        except ImportError as exc:
            raise RuntimeError(f"cannot load checkpoint {folder}: depth_perception.models is "
                               f"not available ({exc})") from exc
        dev = resolve_device(device)
        module, metadata = load_depth_model(folder, device=dev)
        return cls(module, metadata, dev, precision)

    @classmethod
    def from_transformers(cls, source, device: str = "auto", precision: str = "fp32",
                          local_files_only: bool | None = None,
                          allow_weight_mismatch: bool = False) -> "TorchBackend":
        """A transformers depth model by hub id or local folder (``source``: a
        :class:`~depth_perception.runtime.model_source.ModelSource` or its string).

        Weights that do not fit the config are refused, as export refuses them, unless
        ``allow_weight_mismatch``. Hub ids load from the local cache when the hub is
        offline (``HF_HUB_OFFLINE``) or ``local_files_only``.
        """
        import_torch()
        from depth_perception.runtime.model_source import (load_transformers_depth_model,
                                                           resolve_model)

        source = resolve_model(source) if isinstance(source, (str, Path)) else source
        model, processor_config, _ = load_transformers_depth_model(
            source, local_files_only=local_files_only,
            allow_weight_mismatch=allow_weight_mismatch)
        metadata = metadata_from_transformers(model.config, processor_config, source.spec)
        return cls(transformers_depth_module(model), metadata, device, precision)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = import_torch()
        if self._module is None:
            raise RuntimeError("torch backend is closed")
        self.check_feeds(feeds)
        x = torch.from_numpy(np.ascontiguousarray(feeds[self.metadata.input_name]))
        with torch.inference_mode():
            y = self._module(x.to(self.device, self._dtype))
        extra = {}
        if isinstance(y, tuple):                            # (depth, log_variance)
            y, extra = y[0], {"log_variance": y[1].float().cpu().numpy()}
        if y.ndim == 3:  # [B,H,W] -> [B,1,H,W]
            y = y.unsqueeze(1)
        return {self.metadata.output_name: y.float().cpu().numpy(), **extra}

    # -- whole frame on the device (CUDA): one upload, one download ----------------------
    @property
    def runs_frames_on_device(self) -> bool:
        """True on CUDA: the estimator hands whole frames to :meth:`run_frame`."""
        return self.device.startswith("cuda")

    def run_frame(self, rgb: np.ndarray, crop: tuple[int, int, int, int],
                  model_size: tuple[int, int], upsample: str = "bilinear") -> np.ndarray:
        """Pre-process, run and post-process one frame on the backend's device.

        rgb: [H,W,3] uint8 (uploaded once, as bytes); crop: (x0, y0, w, h) of the
        camera image the model sees; model_size: (w, h) of the model input. Resizing
        (area-like antialiased shrink, bilinear otherwise), normalisation and layout
        change run on the device, then the output decoding of
        :func:`depth_perception.runtime.processing.output_to_depth` and the resize back
        to the crop. Returns [h_crop, w_crop] float32 depth (NaN invalid), the only
        download. The CPU path (numpy/cv2 preprocessing + :meth:`run`) stays the same;
        on a CPU device this method computes the same thing with torch (tests).
        """
        torch = import_torch()
        F = torch.nn.functional
        if self._module is None:
            raise RuntimeError("torch backend is closed")
        meta = self.metadata
        x0, y0, cw, ch = crop
        mw, mh = model_size
        with torch.inference_mode():
            # 1. upload the uint8 frame                                     [H,W,3] u8
            #    (the node's frame may be a read-only view of its message: only read here,
            #    the upload copies it, so torch's not-writable warning does not apply)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                frame = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device,
                                                                       non_blocking=True)
            x = frame[y0:y0 + ch, x0:x0 + cw].permute(2, 0, 1)[None].float()  # [1,3,h,w]
            # 2. resize (antialiased when shrinking by more than 2x) and normalise
            if (mw, mh) != (cw, ch):
                shrink = mw * 2 < cw or mh * 2 < ch
                x = F.interpolate(x, size=(mh, mw), mode="bilinear", align_corners=False,
                                  antialias=shrink)
            mean = torch.tensor(meta.mean, device=self.device).view(1, 3, 1, 1) * 255.0
            std = torch.tensor(meta.std, device=self.device).view(1, 3, 1, 1) * 255.0
            x = ((x - mean) / std).to(self._dtype)
            # 3. forward                                                    [1,1,h,w]
            y = self._module(x)
            if isinstance(y, tuple):          # the depth; its log-variance goes unused here
                y = y[0]
            if y.ndim == 3:
                y = y.unsqueeze(1)
            y = y.float()
            bad = int((~torch.isfinite(y)).sum())
            if bad:
                raise RuntimeError(f"model output contains NaN or inf ({bad} of {y.numel()} "
                                   f"values) from the torch backend ({self.precision}) on "
                                   f"{self.device}; frame skipped (FP16 overflow in "
                                   "LayerNorm/attention is a common cause: keep those in FP32)")
            # 4. decode the output kind; non-finite or non-positive -> NaN
            kind = meta.output_kind
            if kind == "disparity":
                valid = (y >= 0) & (y <= 1)
                min_disp, max_disp = 1.0 / meta.max_depth, 1.0 / meta.min_depth
                y = 1.0 / (min_disp + (max_disp - min_disp) * y.double())
                y = torch.where(valid, y, torch.nan).float()
            elif kind == "relative_disparity":
                y = torch.where(y > 0, 1.0 / y, torch.nan)
            y = torch.where(torch.isfinite(y) & (y > 0), y, torch.nan)
            # 5. back to the crop size, then the one download              [h,w]
            if y.shape[-2:] != (ch, cw):
                y = F.interpolate(y, size=(ch, cw), mode=upsample,
                                  **({"align_corners": False} if upsample == "bilinear"
                                     else {}))
            return y[0, 0].cpu().numpy()

    def close(self) -> None:
        if getattr(self, "_module", None) is not None:
            self._module = None
            if self.device.startswith("cuda"):
                import_torch().cuda.empty_cache()
