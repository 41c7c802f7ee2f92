"""Training logs: TensorBoard scalars and colour-mapped depth images, and progress lines
for a log file.

Only the main process writes (the trainer passes ``enabled=False`` elsewhere).
``torch.utils.tensorboard`` is imported when the first event is written.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from depth_perception.colorize import colorize_depth as onboard_colorize

logger = logging.getLogger(__name__)


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   cmap: str = "magma", inverse: bool = True) -> np.ndarray:
    """Colour-map a depth map for display with the package's one colouring
    (:func:`depth_perception.colorize.colorize_depth`), over a range chosen per image.

    depth: [H,W] metres (NaN invalid, drawn black). With ``inverse`` the map is drawn in
    disparity (1/depth, near = bright), which shows structure at all ranges.
    vmin/vmax: value range (of depth, or of disparity when ``inverse``); default the
    2nd/98th percentiles of the valid pixels. Returns [H,W,3] uint8 RGB.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth expects [H,W], got {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape + (3,), dtype=np.uint8)
    values = 1.0 / depth[valid] if inverse else depth[valid]
    lo = float(np.percentile(values, 2) if vmin is None else vmin)
    hi = float(np.percentile(values, 98) if vmax is None else vmax)
    hi = max(hi, lo * (1.0 + 1e-6), lo + 1e-12)
    if inverse:   # disparity range -> depth range
        near, far = 1.0 / hi, (1.0 / lo if lo > 0 else np.inf)
    else:
        near, far = max(lo, 1e-12), hi
    return onboard_colorize(depth, near, far, cmap, inverse=inverse, bgr=False)


class TensorBoardLogger:
    """Thin wrapper over ``SummaryWriter`` that does nothing when disabled."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._writer = None

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        """Write every finite number of ``values`` as ``prefix + key``."""
        if not self.enabled:
            return
        for key, value in values.items():
            value = float(value)
            if np.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def images(self, tag: str, images, step: int, max_images: int = 4) -> None:
        """images: [B,3,H,W] float in [0,1] (torch or numpy)."""
        if not self.enabled:
            return
        arr = _to_numpy(images)[:max_images]
        self.writer.add_images(tag, np.clip(arr, 0.0, 1.0), step, dataformats="NCHW")

    def depth(self, tag: str, depth, step: int, max_images: int = 4, inverse: bool = True) -> None:
        """depth: [B,1,H,W] metres (torch or numpy), written colour-mapped."""
        if not self.enabled:
            return
        arr = _to_numpy(depth)[:max_images]
        rgb = np.stack([colorize_depth(d[0], inverse=inverse) for d in arr])  # [b,H,W,3]
        self.writer.add_images(tag, rgb, step, dataformats="NHWC")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class ProgressLines:
    """Progress for a log file: ``step k/N loss L (s/step, time left)`` at most every
    ``seconds`` (and at the last step), the rate measured over this run's own steps."""

    def __init__(self, start_step: int, total: int, seconds: float, clock=time.monotonic):
        self.start_step, self.total, self.seconds, self.clock = start_step, total, seconds, clock
        self.t0 = self.last = clock()

    def line(self, step: int, loss: float) -> str | None:
        now = self.clock()
        if self.seconds <= 0 or (now - self.last < self.seconds and step < self.total):
            return None
        self.last = now
        done = step - self.start_step
        per_step = (now - self.t0) / done if done else 0.0
        left = per_step * (self.total - step)
        return (f"step {step}/{self.total} loss {loss:.4f} ({per_step:.2f} s/step, "
                f"{int(left // 60)} min {int(left % 60):02d} s left)")
