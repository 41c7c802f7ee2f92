"""``depth-perception refine``: frames of a bag or an image folder -> pseudo labels.

1. frames: every image of a rosbag2 (through the onboard data layer, with its LiDAR
   depth and intrinsics) or every image file of a folder;
2. per frame, ``method: redepth``: Re-Depth Anything on ``--model`` (a Depth-Anything-
   style network); ``method: marigold``: the Marigold teacher (``--model``, if given,
   is the metric teacher it may be aligned to); ``method: metricgold``: a model of
   ``train metricgold`` (metric depth, written as it is);
3. alignment (``labels.align_to``) to LiDAR or the teacher, then the label is written
   (:mod:`.labels`); the resolved configuration goes to ``OUT/config.yaml``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Frame", "iter_frames", "RefineRun", "run_refine"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Frame:
    """One image to label, with what the bag knows about it."""

    bag: str
    topic: str
    stamp_ns: int
    rgb: np.ndarray                      # [H,W,3] uint8
    K: np.ndarray | None = None          # [3,3] pixel intrinsics of rgb
    lidar: np.ndarray | None = None      # [H,W] sparse metres, NaN = none
    gt: np.ndarray | None = None         # [H,W] metres, NaN = none (synthetic bags)
    condition: str | None = None
    bag_path: str | None = None
    image_path: str | None = None


def iter_frames(bag: str | Path | None = None, images: str | Path | None = None,
                first: int = 0, every: int = 1, max_frames: int | None = None):
    """Yield :class:`Frame` objects of a bag or an image folder (exactly one of them)."""
    if (bag is None) == (images is None):
        raise ValueError("refine: give exactly one of a bag (--bag) or an image folder (--images)")
    if every < 1 or first < 0:
        raise ValueError(f"refine: need data.every >= 1 and data.first >= 0, got {every}, {first}")
    if images is not None:
        import cv2
        folder = Path(images)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"refine: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        chosen = list(range(first, len(files), every))[:max_frames]
        for i in chosen:
            bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"refine: {files[i]} is not a readable image")
            yield Frame(folder.name, "images", i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                        image_path=str(files[i].resolve()))
        return
    from depth_perception.data.samples import BagSequence, SampleConfig
    seq = BagSequence(Path(bag), SampleConfig(offsets=(), skip_static=False))
    topic = seq.reader.topic_name("image")
    chosen = list(range(first, len(seq.stamps), every))[:max_frames]
    for i in chosen:
        yield Frame(seq.path.name, topic, int(seq.stamps[i]), seq.frame(i), seq.intrinsics.K,
                    seq.lidar_depth(i), seq.gt_depth(i), seq.condition,
                    bag_path=str(seq.path.resolve()))


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2
    return cv2.resize(array.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


class RefineRun:
    """The models of one run, built once from a resolved :class:`~.config.RefineConfig`."""

    def __init__(self, cfg, model: str | None = None, guidance=None, captioner=None,
                 marigold=None):
        from depth_perception_training.refine.model import load_refinable
        self.cfg = cfg
        self.model = load_refinable(model, cfg.device) if model else None
        if cfg.method == "redepth" and self.model is None:
            raise ValueError("refine: method redepth needs --model (a Depth Anything style network)")
        self.guidance, self.captioner, self.marigold = guidance, captioner, marigold
        if cfg.method == "redepth" and cfg.redepth.sds_weight > 0 and self.guidance is None:
            self.guidance = self._load_guidance()
        if cfg.method == "redepth" and cfg.redepth.sds_weight > 0 and not cfg.caption.prompt \
                and self.captioner is None:
            from depth_perception_training.translate.caption import Captioner
            c = cfg.caption
            self.captioner = Captioner.from_pretrained(c.model, device=cfg.device,
                                                       dtype=self._guidance_dtype(),
                                                       prefix=c.prefix,
                                                       max_new_tokens=c.max_new_tokens)
        if cfg.method == "marigold" and self.marigold is None:
            from depth_perception_training.refine.marigold import MarigoldTeacher
            m = cfg.marigold
            self.marigold = MarigoldTeacher.from_pretrained(
                m.model, device=cfg.device, ensemble=m.ensemble, steps=m.steps,
                processing_resolution=m.processing_resolution, seed=cfg.seed,
                reduction=m.reduction)

        self.metricgold = None
        if cfg.method == "metricgold":
            from depth_perception_training.train.metricgold import MetricGoldPredictor
            m = cfg.metricgold
            if not m.model:
                raise ValueError("refine: method metricgold needs metricgold.model (the "
                                 "output_dir/model folder of `depth-perception train metricgold`)")
            self.metricgold = MetricGoldPredictor.load(m.model, device=cfg.device,
                                                     ensemble=m.ensemble, steps=m.steps,
                                                     seed=cfg.seed)

    def _guidance_dtype(self):
        """fp16 on CUDA with ``guidance.half_precision``, else fp32: the SD guidance's and
        the BLIP-2 captioner's weights (both stay loaded while refining; OPT-2.7B's BLIP-2
        is 15 GB in fp32)."""
        import torch

        half = self.cfg.guidance.half_precision and str(self.cfg.device).startswith("cuda")
        return torch.float16 if half else torch.float32

    def _load_guidance(self):
        from depth_perception_training.refine.sds import SDSGuidance
        g = self.cfg.guidance
        return SDSGuidance.from_pretrained(
            g.model, dtype=self._guidance_dtype(), device=self.cfg.device,
            guidance_scale=g.guidance_scale, t_range=tuple(g.t_range), resolution=g.resolution,
            weighting=g.weighting)

    def settings(self):
        from depth_perception_training.refine.redepth import RedepthSettings
        r = self.cfg.redepth
        fields = {k: getattr(r, k) for k in RedepthSettings.__dataclass_fields__ if k != "seed"}
        return RedepthSettings(**fields, seed=self.cfg.seed)

    def teacher_depth(self, frame: Frame) -> np.ndarray | None:
        """Unrefined metric depth of ``--model`` at the frame size, or None."""
        if self.model is None or not self.model.metric:
            return None
        import torch
        from depth_perception_training.refine.model import network_size
        h, w = frame.rgb.shape[:2]
        size = network_size(w, h, self.cfg.redepth.short_side, self.cfg.redepth.size)
        _, x = self.model.pixel_values(frame.rgb, size)
        with torch.no_grad():
            raw = self.model.decode(self.model.embeddings(x), (size[1] // 14, size[0] // 14))
        return _resize(self.model.depth(raw)[0, 0].numpy(), w, h)

    def predict(self, frame: Frame) -> tuple[np.ndarray, str, dict]:
        """(prediction [H,W] at the frame size, its kind, extra info) before alignment."""
        h, w = frame.rgb.shape[:2]
        if self.cfg.method == "marigold":
            return self.marigold.predict(frame.rgb), "relative_depth", {}
        if self.cfg.method == "metricgold":
            return self.metricgold.predict(frame.rgb), "metric_depth", {}
        from depth_perception_training.refine.model import network_size
        from depth_perception_training.refine.redepth import refine_image
        r = self.cfg.redepth
        size = network_size(w, h, r.short_side, r.size)
        prompt = self.cfg.caption.prompt
        if not prompt and self.captioner is not None:
            prompt = self.captioner.caption(frame.rgb)
        result = refine_image(self.model, frame.rgb, size, self.guidance, prompt, self.settings(),
                              self.cfg.guidance.negative_prompt, frame.K)
        info = {"prompt": prompt, "seconds_per_step": result.seconds_per_step}
        import torch
        raw = torch.from_numpy(_resize(result.raw, w, h))[None, None]
        depth = self.model.depth(raw)
        if depth is not None:
            return depth[0, 0].numpy(), "metric_depth", info
        return self.model.disparity(raw)[0, 0].numpy(), "relative_disparity", info

    def to_label(self, frame: Frame, pred: np.ndarray, kind: str) -> tuple[np.ndarray, str, dict]:
        """Alignment per ``labels.align_to`` -> (label, label kind, fit)."""
        from depth_perception_training.refine.marigold import align_depth
        lab = self.cfg.labels
        target = lab.align_to
        if target == "auto":
            if kind == "metric_depth":
                target = "none"
            elif frame.lidar is not None and np.isfinite(frame.lidar).sum() >= 2:
                target = "lidar"
            elif self.cfg.method == "marigold" and self.model is not None and self.model.metric:
                target = "teacher"
            else:
                target = "none"
        if target == "none":
            return pred.astype(np.float32), kind, {}
        reference = frame.lidar if target == "lidar" else self.teacher_depth(frame)
        if reference is None:
            raise ValueError(f"refine: labels.align_to={target} but frame {frame.bag}/"
                             f"{frame.stamp_ns} has no {target} depth "
                             + ("(a metric --model is needed)" if target == "teacher" else ""))
        space = lab.align_space
        if space == "auto":
            space = "disparity_then_depth" if kind == "relative_disparity" else "depth"
        depth, fit = align_depth(pred, reference, space,
                                 pred_is_disparity=(kind == "relative_disparity"),
                                 min_depth=lab.min_depth, max_depth=lab.max_depth)
        fit["aligned_to"] = target
        return depth, "metric_depth", fit


def run_refine(cfg, out: str | Path, bag=None, images=None, model: str | None = None,
               runner: RefineRun | None = None, overwrite: bool = False) -> Path:
    """Label every chosen frame; returns the label folder (with manifest.json)."""
    from depth_perception_training.refine.labels import PseudoLabelWriter
    from depth_perception_training.train.config import save_config

    from omegaconf import OmegaConf
    runner = runner or RefineRun(cfg, model)
    out = Path(out)
    writer = None
    d = cfg.data
    n = 0
    for frame in iter_frames(bag, images, d.first, d.every, d.max_frames):
        pred, kind, info = runner.predict(frame)
        label, label_kind, fit = runner.to_label(frame, pred, kind)
        if writer is None:
            encoding = cfg.labels.encoding if label_kind == "metric_depth" else "depth"
            writer = PseudoLabelWriter(out, cfg.method, label_kind, encoding,
                                       (cfg.labels.min_depth, cfg.labels.max_depth),
                                       model=str(model or (cfg.metricgold.model
                                                           if cfg.method == "metricgold"
                                                           else cfg.marigold.model)),
                                       config=OmegaConf.to_container(cfg, resolve=True),
                                       overwrite=overwrite)
        elif label_kind != writer.header["kind"]:
            raise ValueError(f"refine: frame {frame.stamp_ns} gave {label_kind} labels, earlier "
                             f"frames {writer.header['kind']} (alignment reference missing?)")
        writer.add(frame.bag, frame.topic, frame.stamp_ns, label, frame.bag_path, frame.condition,
                   frame.image_path, {**fit, **info})
        n += 1
        log.info("labelled %s %s %d (%s)", frame.bag, frame.topic, frame.stamp_ns, label_kind)
    if writer is None:
        raise ValueError("refine: no frames chosen (check data.first / data.every / data.max_frames)")
    writer.close()
    save_config(cfg, out / "config.yaml")
    return out
