"""Whole frames on the torch backend's device (CUDA): pre-processing, forward and
post-processing on the device, one download. The same code runs on a CPU torch device
here and must agree with the host (numpy/cv2) path; the CUDA case runs where CUDA is."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from depth_perception.camera import Intrinsics  # noqa: E402
from depth_perception.metadata import ModelMetadata  # noqa: E402
from depth_perception.runtime.backends.torch_backend import TorchBackend  # noqa: E402
from depth_perception.runtime.estimator import DepthEstimator  # noqa: E402

W, H = 168, 84
K = Intrinsics(120.0, 120.0, 83.5, 41.5, W, H)
#: a camera-like frame: smooth structure (blurred noise), not pixel noise
RGB = np.clip(cv2.GaussianBlur(np.random.default_rng(3).normal(128, 90, (H, W, 3)), (0, 0), 3)
              * 2 - 128, 0, 255).astype(np.uint8)


class SmoothModel(torch.nn.Module):
    """A fixed conv net: output varies with the image, inside the valid range of
    ``kind`` (sigmoid disparity, or 2-20 for depth / relative disparity)."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        self.kind = kind

    def forward(self, x):
        y = torch.sigmoid(self.conv(x))
        return y if self.kind == "disparity" else 2.0 + 18.0 * y


def smooth_model(kind: str):
    return SmoothModel(kind)


@pytest.mark.parametrize("kind", ["metric_depth", "disparity", "relative_disparity"])
@pytest.mark.parametrize("short_side", [84, 56, 28])
def test_device_frames_match_the_host_path(kind, short_side):
    meta = ModelMetadata(output_kind=kind, min_depth=0.5, max_depth=50.0)
    backend = TorchBackend(smooth_model(kind), meta, device="cpu")
    factor = 20.0 if kind.startswith("relative") else 1.0   # relative: 0.05-0.5 -> 1-10 m
    est = DepthEstimator(backend, meta, "fixed" if factor != 1.0 else None,
                         scale_params={"factor": factor} if factor != 1.0 else None,
                         short_side=short_side)
    assert not backend.runs_frames_on_device          # the CPU path is the host path
    host = est.estimate(RGB, K)
    crop, size = est.preprocessor.geometry(K)
    device = backend.run_frame(RGB, crop, size, est.upsample) * np.float32(factor)
    assert device.shape == (H, W) and device.dtype == np.float32
    ref = host.depth.copy()
    ref[np.isinf(ref)] = np.nan                        # range marking comes later
    finite = np.isfinite(ref) & np.isfinite(device)
    assert finite.mean() > 0.9
    # same resize (bilinear, or antialiased where cv2 uses INTER_AREA for a >2x shrink)
    tol = 1e-4 if size == (W, H) else (0.02 if short_side >= 42 else 0.06)
    rel = np.abs(device[finite] - ref[finite]) / ref[finite]
    assert np.median(rel) < tol / 4 and np.percentile(rel, 99) < 4 * tol, (
        np.median(rel), np.percentile(rel, 99))


def test_estimator_hands_whole_frames_to_a_device_backend(monkeypatch):
    """When the backend runs frames on its device, the estimator calls run_frame once per
    frame (never run()) and keeps the geometry and the canonical rescaling."""
    meta = ModelMetadata(train_height=42, train_width=84, train_focal_px=60.0)
    backend = TorchBackend(smooth_model("metric_depth"), meta, device="cpu")
    calls = []
    monkeypatch.setattr(TorchBackend, "runs_frames_on_device", property(lambda self: True))
    original = backend.run_frame
    backend.run_frame = lambda *a, **k: calls.append(a[1:3]) or original(*a, **k)
    backend.run = lambda feeds: pytest.fail("run() used on a device backend")
    host = DepthEstimator(TorchBackend(smooth_model("metric_depth"), meta, device="cpu"),
                          meta, focal_policy="canonical")
    dev = DepthEstimator(backend, meta, focal_policy="canonical")
    a, b = host.estimate(RGB, K), dev.estimate(RGB, K)
    assert calls == [((0, 0, W, H), b.prepared.model_size)]
    assert b.prepared.model_size == a.prepared.model_size == (84, 42)
    ok = np.isfinite(a.depth) & np.isfinite(b.depth)
    np.testing.assert_allclose(b.depth[ok], a.depth[ok], rtol=0.03)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_frames_match_the_cpu_path():
    meta = ModelMetadata(output_kind="metric_depth", min_depth=0.5, max_depth=50.0)
    cpu = DepthEstimator(TorchBackend(smooth_model("metric_depth"), meta, device="cpu"), meta,
                         short_side=56)
    gpu_backend = TorchBackend(smooth_model("metric_depth"), meta, device="cuda")
    assert gpu_backend.runs_frames_on_device
    gpu = DepthEstimator(gpu_backend, meta, short_side=56)
    a, b = cpu.estimate(RGB, K).depth, gpu.estimate(RGB, K).depth
    ok = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_allclose(b[ok], a[ok], rtol=0.03)
