"""Control depth: MiDaS/DPT relative depth refined to full resolution, PatchFusion-style.

A depth model run on a whole frame sees it at its own input size (384 px for MiDaS):
fine structure is lost. PatchFusion's recipe, as used here:

1. **global**: the whole frame, prediction resized to the frame size -> G [H,W];
2. **tiles**: a ``rows x cols`` grid of overlapping crops (``p49``: 7x7 tiles of a
   quarter of the frame, stride half a tile), each predicted at the model's input size
   and resized back to its crop -> P_k;
3. **consistent scale**: relative depth models are affine-invariant per input, so each
   tile is mapped onto the global prediction by least squares, ``s_k P_k + t_k ~ G`` on
   its crop; the fused map then follows G at low frequencies and takes detail from the
   tiles;
4. **blended overlaps**: weights ramp linearly across every overlap (1 on sides at the
   frame border), so the fused map ``sum_k w_k (s_k P_k + t_k) / sum_k w_k`` has no step
   at any tile border.

The model is ``models.depth``: MiDaS DPT-Hybrid by default (the SSD recipe's tiled
stand-in for PatchFusion, whose trained network the package registries do not carry),
or a Depth Anything V2 (``depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf``), any
``AutoModelForDepthEstimation`` checkpoint. Values are what the model predicts: relative
inverse depth (larger = nearer) for MiDaS, DPT and Depth Anything. :func:`control_image`
turns a map into ControlNet's input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_perception_training.translate.models import load_model_and_processor


def tile_boxes(height: int, width: int, rows: int, cols: int,
               overlap: float) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of a ``rows x cols`` grid of tiles sharing ``overlap`` of their size
    with each neighbour, covering the frame exactly (first tile at 0, last at the edge)."""
    def axis(n: int, size: int) -> list[tuple[int, int]]:
        if n == 1:
            return [(0, size)]
        length = int(round(size / (n - (n - 1) * overlap)))
        length = min(max(length, 1), size)
        stride = (size - length) / (n - 1)
        return [(int(round(k * stride)), length) for k in range(n)]

    return [(y, x, h, w) for y, h in axis(rows, height) for x, w in axis(cols, width)]


def _ramp(length: int, lo_edge: bool, hi_edge: bool, lo_overlap: int,
          hi_overlap: int) -> np.ndarray:
    """[length] weights: linear ramps over the overlaps with the previous / next tile."""
    w = np.ones(length, dtype=np.float64)
    i = np.arange(length) + 0.5
    if not lo_edge and lo_overlap > 0:
        w = np.minimum(w, i / lo_overlap)
    if not hi_edge and hi_overlap > 0:
        w = np.minimum(w, (length - i) / hi_overlap)
    return w


def blend_weights(boxes, height: int, width: int) -> list[np.ndarray]:
    """[h,w] blending weight of every tile (linear ramps across overlaps, > 0 everywhere)."""
    ys = sorted({(y, h) for y, _, h, _ in boxes})
    xs = sorted({(x, w) for _, x, _, w in boxes})

    def overlaps(spans, k):
        start, length = spans[k]
        lo = spans[k - 1][0] + spans[k - 1][1] - start if k > 0 else 0
        hi = start + length - spans[k + 1][0] if k + 1 < len(spans) else 0
        return max(lo, 0), max(hi, 0)

    out = []
    for y, x, h, w in boxes:
        ky, kx = ys.index((y, h)), xs.index((x, w))
        lo_y, hi_y = overlaps(ys, ky)
        lo_x, hi_x = overlaps(xs, kx)
        wy = _ramp(h, y == 0, y + h >= height, lo_y, hi_y)
        wx = _ramp(w, x == 0, x + w >= width, lo_x, hi_x)
        out.append(np.outer(wy, wx))
    return out


def align_affine(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``s * pred + t`` with (s, t) the least-squares fit of pred onto target."""
    p = pred.reshape(-1).astype(np.float64)
    g = target.reshape(-1).astype(np.float64)
    var = p.var()
    if var < 1e-12:
        return np.full_like(pred, g.mean(), dtype=np.float64)
    s = ((p - p.mean()) * (g - g.mean())).mean() / var
    return s * (pred - p.mean()) + g.mean()


def fuse_tiles(global_pred: np.ndarray, tile_preds: list[np.ndarray], boxes,
               align: bool = True, blend: bool = True) -> np.ndarray:
    """[H,W] fused map from the global prediction and per-tile predictions at crop size.

    ``align=False`` / ``blend=False`` give the naive alternatives (raw tiles, hard tile
    borders) for comparison.
    """
    H, W = global_pred.shape
    acc = np.zeros((H, W), dtype=np.float64)
    wsum = np.zeros((H, W), dtype=np.float64)
    weights = (blend_weights(boxes, H, W) if blend else
               [np.ones((h, w)) for _, _, h, w in boxes])
    for (y, x, h, w), pred, wt in zip(boxes, tile_preds, weights):
        if pred.shape != (h, w):
            raise ValueError(f"tile at ({y}, {x}) is {pred.shape}, expected {(h, w)}")
        tile = align_affine(pred, global_pred[y:y + h, x:x + w]) if align else pred
        if blend:
            acc[y:y + h, x:x + w] += wt * tile
            wsum[y:y + h, x:x + w] += wt
        else:   # later tiles overwrite: hard borders
            acc[y:y + h, x:x + w] = tile
            wsum[y:y + h, x:x + w] = 1.0
    return (acc / np.maximum(wsum, 1e-12)).astype(np.float32)


class RelativeDepthModel:
    """A transformers depth model (``AutoModelForDepthEstimation``): RGB crops in, relative
    depth at each crop's size out. (Not the onboard metric
    :class:`depth_perception.runtime.estimator.DepthEstimator`.)"""

    def __init__(self, model_id: str, device, dtype, local_files_only: bool = False):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model_id = model_id
        self.model, self.processor = load_model_and_processor(
            AutoModelForDepthEstimation, AutoImageProcessor, model_id, "control depth model",
            device, dtype, local_files_only)
        self.device, self.dtype = device, dtype

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """[h,w,3] uint8 RGB crops (one size) -> [h,w] float32 predictions."""
        import torch

        h, w = crops[0].shape[:2]
        inputs = self.processor(images=list(crops), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)      # [B,3,h',w']
        with torch.inference_mode():
            pred = self.model(pixel_values=pixels).predicted_depth      # [B,h'',w'']
            pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(h, w),
                                                   mode="bicubic", align_corners=False)
        return list(pred[:, 0].cpu().numpy())


#: Depth Anything V2 (transformers) sizes by hub id: DINOv2 width, depth, heads, the
#: DPT neck and fusion widths of the released checkpoints
DEPTH_ANYTHING_V2 = {
    "depth-anything/Depth-Anything-V2-Small-hf": (384, 12, 6, [48, 96, 192, 384], 64),
    "depth-anything/Depth-Anything-V2-Base-hf": (768, 12, 12, [96, 192, 384, 768], 128),
    "depth-anything/Depth-Anything-V2-Large-hf": (1024, 24, 16, [256, 512, 1024, 1024], 256),
}
#: the DPT control depth models (MiDaS v3) by hub id
DPT_MIDAS = ("Intel/dpt-hybrid-midas", "Intel/dpt-large")


def control_depth_architecture(name: str):
    """(model, image processor) of the control depth model ``name`` (a hub id of
    :data:`DPT_MIDAS` or :data:`DEPTH_ANYTHING_V2`) built from its configuration with
    random weights: the architecture and input size of the released checkpoint, for dry
    runs and tests (no download). ValueError for another name."""
    from transformers import (BitConfig, DepthAnythingConfig, DepthAnythingForDepthEstimation,
                              Dinov2Config, DPTConfig, DPTForDepthEstimation,
                              DPTImageProcessor)

    if name in DEPTH_ANYTHING_V2:
        width, layers, heads, neck, fusion = DEPTH_ANYTHING_V2[name]
        stages = [f"stage{layers * k // 4}" for k in range(1, 5)]
        backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers,
                                num_attention_heads=heads, image_size=518, patch_size=14,
                                out_features=stages, reshape_hidden_states=False)
        model = DepthAnythingForDepthEstimation(DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=width, patch_size=14,
            neck_hidden_sizes=neck, fusion_hidden_size=fusion, depth_estimation_type="relative"))
        processor = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                      ensure_multiple_of=14, resample=3,
                                      image_mean=[0.485, 0.456, 0.406],
                                      image_std=[0.229, 0.224, 0.225])
        return model.eval(), processor
    if name == "Intel/dpt-hybrid-midas":
        backbone = BitConfig(global_padding="same", layer_type="bottleneck", depths=[3, 4, 9],
                             out_features=["stage1", "stage2", "stage3"],
                             embedding_dynamic_padding=True)
        config = DPTConfig(is_hybrid=True, backbone_config=backbone, image_size=384,
                           neck_hidden_sizes=[256, 512, 768, 768],
                           backbone_out_indices=[2, 5, 8, 11], readout_type="project")
    elif name == "Intel/dpt-large":
        config = DPTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, image_size=384,
                           neck_hidden_sizes=[256, 512, 1024, 1024],
                           backbone_out_indices=[5, 11, 17, 23], readout_type="project")
    else:
        raise ValueError(f"control depth '{name}': no architecture known; known: "
                         f"{', '.join(DPT_MIDAS + tuple(DEPTH_ANYTHING_V2))}")
    processor = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return DPTForDepthEstimation(config).eval(), processor


@dataclass
class FusedDepth:
    fused: np.ndarray        # [H,W] float32, the control depth
    global_pred: np.ndarray  # [H,W] float32
    boxes: list


class ControlDepth:
    """``ControlDepth(estimator, grid, overlap)(rgb) -> FusedDepth`` (module docstring);
    ``estimator``: a :class:`RelativeDepthModel` (or any list of RGB -> list of maps)."""

    def __init__(self, estimator, grid=(7, 7), overlap: float = 0.5, batch_size: int = 8):
        self.estimator = estimator
        self.rows, self.cols = int(grid[0]), int(grid[1])
        self.overlap, self.batch_size = float(overlap), max(int(batch_size), 1)

    def __call__(self, rgb: np.ndarray) -> FusedDepth:
        H, W = rgb.shape[:2]
        global_pred = self.estimator([rgb])[0]                          # [H,W]
        boxes = tile_boxes(H, W, self.rows, self.cols, self.overlap)
        if len(boxes) == 1:
            return FusedDepth(global_pred, global_pred, boxes)
        crops = [rgb[y:y + h, x:x + w] for y, x, h, w in boxes]
        preds: list[np.ndarray] = []
        for k in range(0, len(crops), self.batch_size):   # tiles of a grid share one size
            preds += self.estimator(crops[k:k + self.batch_size])
        return FusedDepth(fuse_tiles(global_pred, preds, boxes), global_pred, boxes)


def control_image(depth: np.ndarray) -> np.ndarray:
    """[H,W] relative inverse depth -> [H,W,3] uint8, min..max to 0..255 (near = bright),
    the input ControlNet's depth models were trained on."""
    d = depth.astype(np.float64)
    lo, hi = np.nanmin(d), np.nanmax(d)
    scaled = np.zeros_like(d) if hi - lo < 1e-12 else (d - lo) / (hi - lo)
    return np.repeat((scaled * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
