"""Frames for INT8 calibration and for checking exported models.

The data side of TensorRT's ``IInt8EntropyCalibrator2`` is plain numpy and tested
without TensorRT:

* :func:`spread_indices`: N frames spread over several bags (proportional to their
  length, every bag represented, evenly spaced within a bag: day and night bags both
  shape the INT8 ranges).
* :class:`CalibrationSource`: reads those frames lazily, preprocesses them with the
  node's :class:`~depth_perception.runtime.processing.Preprocessor` (identical input
  to what the engine sees in service), batches them, and owns the calibration cache
  file: with a cache present, TensorRT reads it and the bags are never opened.
* :class:`CalibratorCore`: the calibrator protocol (batch size, next batch, cache
  read/write) over a source; :func:`make_int8_calibrator` wraps it in the TensorRT
  class (imported lazily) with one device buffer.
* :func:`synthetic_frames`: deterministic frames when no bag is given.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata

logger = logging.getLogger(__name__)


def spread_indices(lengths: Sequence[int], n: int) -> list[tuple[int, int]]:
    """``n`` (bag index, frame index) pairs spread over bags of ``lengths`` frames.

    Each bag gets a share proportional to its length (largest remainder), but at least
    one frame while ``n`` allows one per non-empty bag; within a bag the frames are
    evenly spaced (centres of ``k`` equal segments). ``n`` >= total gives every frame.
    Sorted by bag, then frame.
    """
    lengths = [int(x) for x in lengths]
    if any(x < 0 for x in lengths):
        raise ValueError(f"bag lengths must be >= 0, got {lengths}")
    if n < 1:
        raise ValueError(f"number of frames must be >= 1, got {n}")
    total = sum(lengths)
    if total == 0:
        raise ValueError("the bags hold no frames on the image topic")
    if n >= total:
        return [(b, i) for b, length in enumerate(lengths) for i in range(length)]
    nonempty = [b for b, length in enumerate(lengths) if length > 0]
    quota = {b: 0 for b in range(len(lengths))}
    remaining = n
    if n >= len(nonempty):  # every bag (condition) represented
        for b in nonempty:
            quota[b] = 1
        remaining -= len(nonempty)
    # largest remainder on what is left, proportional to the frames not yet taken
    spare = {b: lengths[b] - quota[b] for b in nonempty}
    spare_total = sum(spare.values())
    if remaining and spare_total:
        exact = {b: remaining * spare[b] / spare_total for b in nonempty}
        for b in nonempty:
            quota[b] += int(np.floor(exact[b]))
        left = n - sum(quota.values())
        order = sorted(nonempty, key=lambda b: (-(exact[b] - np.floor(exact[b])), b))
        for b in order:
            if left == 0:
                break
            if quota[b] < lengths[b]:
                quota[b] += 1
                left -= 1
    pairs = []
    for b in nonempty:
        k, length = quota[b], lengths[b]
        pairs += [(b, int((j + 0.5) * length / k)) for j in range(k)]
    return pairs


class FrameReader(Protocol):
    """Reads RGB frames with their intrinsics from a bag (the data layer provides one)."""

    def count(self, bag: Path) -> int:
        """Number of frames on the image topic."""

    def read(self, bag: Path, indices: Sequence[int]) -> list[tuple[np.ndarray, Intrinsics]]:
        """[H,W,3] uint8 RGB frames and their intrinsics at ``indices`` (sorted)."""


def default_frame_reader(image_topic: str | None = None,
                         camera_info_topic: str | None = None) -> FrameReader:
    """Frames through the data layer's :class:`~depth_perception.data.bag.BagReader`
    (default topics ``/camera/image_raw`` (or its ``/compressed``) and
    ``/camera/camera_info``)."""
    return BagFrameReader(image_topic, camera_info_topic)


class BagFrameReader:
    """:class:`FrameReader` over :class:`~depth_perception.data.bag.BagReader`.

    Each frame gets the CameraInfo nearest in time. A bag without CameraInfo still
    gives frames (with a warning): the model input depends on the image size only,
    so placeholder intrinsics of the image size are used.
    """

    def __init__(self, image_topic: str | None = None, camera_info_topic: str | None = None):
        self.image_topic = image_topic
        self.camera_info_topic = camera_info_topic
        self.opened = 0   # bags opened (a reused calibration cache opens none)

    def _open(self, bag: Path):
        from depth_perception.data.bag import BagReader, BagTopics

        overrides = {}
        if self.image_topic:
            overrides["image"] = self.image_topic
        if self.camera_info_topic:
            overrides["camera_info"] = self.camera_info_topic
        self.opened += 1
        return BagReader(bag, BagTopics(**overrides))

    def count(self, bag: Path) -> int:
        reader = self._open(bag)
        try:
            return reader.count("image")
        finally:
            reader.close()

    def read(self, bag: Path, indices: Sequence[int]) -> list[tuple[np.ndarray, Intrinsics]]:
        reader = self._open(bag)
        try:
            stamps = reader.stamps("image")
            has_info = reader.has("camera_info")
            if not has_info:
                logger.warning("bag %s has no CameraInfo on '%s': frames are used with "
                               "placeholder intrinsics (only the image size matters for "
                               "the model input)", bag, reader.topic_name("camera_info"))
            out = []
            for i in indices:
                rgb = reader.image(int(i))
                if has_info:
                    j, _ = reader.nearest("camera_info", int(stamps[int(i)]))
                    intrinsics = reader.camera_info(j)
                else:
                    h, w = rgb.shape[:2]
                    intrinsics = Intrinsics(float(w), float(w), (w - 1) / 2, (h - 1) / 2, w, h)
                out.append((rgb, intrinsics))
            return out
        finally:
            reader.close()


def _check_bags(bags: Sequence[str | Path]) -> list[Path]:
    paths = [Path(b) for b in bags]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"calibration bag {p} not found")
    return paths


def frames_from_bags(bags: Sequence[str | Path], metadata: ModelMetadata, n_frames: int,
                     preprocessor=None, reader: FrameReader | None = None) -> np.ndarray:
    """``n_frames`` frames spread over ``bags``, preprocessed: [N,3,H,W] float32.

    ``preprocessor``: the node's :class:`Preprocessor` (default: one built from
    ``metadata`` with the node's defaults), so the frames are exactly what the model
    sees in service.
    """
    from depth_perception.runtime.processing import Preprocessor

    paths = _check_bags(bags)
    if not paths:
        raise ValueError("no bags given to read calibration/check frames from")
    reader = reader or default_frame_reader()
    preprocessor = preprocessor or Preprocessor(metadata)
    lengths = [reader.count(p) for p in paths]
    topic = getattr(reader, "image_topic", None) or "/camera/image_raw"
    if sum(lengths) == 0:
        raise ValueError(f"none of the bags {[str(p) for p in paths]} has frames on the image "
                         f"topic {topic} (or its /compressed variant); pass the right topic "
                         "(--image-topic)")
    for p, length in zip(paths, lengths):
        if length == 0:
            logger.warning("bag %s has no frames on %s: skipped", p, topic)
    pairs = spread_indices(lengths, n_frames)
    tensors = []
    for b, path in enumerate(paths):
        indices = [i for bb, i in pairs if bb == b]
        if not indices:
            continue
        for rgb, intrinsics in reader.read(path, indices):
            tensors.append(preprocessor.prepare(rgb, intrinsics).tensor)   # [1,3,h,w]
    frames = np.concatenate(tensors, axis=0).astype(np.float32, copy=False)
    logger.info("%d frames from %d bags (%s per bag) for calibration/checks",
                frames.shape[0], len(paths), [sum(1 for bb, _ in pairs if bb == b)
                                              for b in range(len(paths))])
    return frames


def synthetic_rgb(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` deterministic [H,W,3] uint8 RGB test frames: ground/sky gradient, a few
    boxes at random places and brightness (day- and night-like), mild noise."""
    rng = np.random.default_rng(seed)
    v = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    u = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    frames = []
    for _ in range(n):
        brightness = rng.uniform(0.15, 1.0)
        sky = np.array(rng.uniform(0.4, 1.0, 3), np.float32)
        ground = np.array(rng.uniform(0.1, 0.6, 3), np.float32)
        horizon = rng.uniform(0.3, 0.6)
        img = np.where(v < horizon, sky * (1 - 0.5 * v), ground * (0.5 + v)) \
            * np.ones_like(u)
        for _box in range(rng.integers(2, 6)):
            x0, y0 = rng.uniform(0, 0.8), rng.uniform(0.2, 0.8)
            x1, y1 = x0 + rng.uniform(0.05, 0.3), y0 + rng.uniform(0.05, 0.3)
            mask = (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
            img = np.where(mask, np.array(rng.uniform(0, 1, 3), np.float32), img)
        img = img * brightness + rng.normal(0, 0.02, img.shape).astype(np.float32)
        frames.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return frames


def synthetic_frames(metadata: ModelMetadata, n: int = 4, seed: int = 0,
                     size: tuple[int, int] | None = None, preprocessor=None) -> np.ndarray:
    """``n`` deterministic frames through the node's Preprocessor: [N,3,H,W] float32.

    ``size``: camera (width, height); default the model's fixed input size (dynamic
    models: 224x224 rounded by the Preprocessor).
    """
    from depth_perception.runtime.processing import Preprocessor

    if size is None:
        fixed = metadata.fixed_size
        size = (fixed[1], fixed[0]) if fixed else (224, 224)
    width, height = size
    preprocessor = preprocessor or Preprocessor(metadata, short_side=None)
    intrinsics = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2,
                            width, height)
    tensors = [preprocessor.prepare(rgb, intrinsics).tensor
               for rgb in synthetic_rgb(width, height, n, seed)]
    return np.concatenate(tensors, axis=0).astype(np.float32, copy=False)


# -- the calibrator's data side --------------------------------------------------------

@dataclass
class CalibrationConfig:
    """How many frames to calibrate on and in which batches."""

    n_frames: int = 200
    batch_size: int = 1

    def __post_init__(self):
        if self.n_frames < 1:
            raise ValueError(f"calibration needs >= 1 frame, got n_frames={self.n_frames}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class CalibrationSource:
    """INT8 calibration data: frames from bags (read on first use) and the cache file.

    ``bags`` may be empty when ``cache_path`` already holds a calibration cache; then
    TensorRT takes the cache and no frame is ever needed. ``frames_loader`` (tests,
    other data): a callable returning [N,3,H,W] float32 frames instead of the bags.

    The cache is only reused for the model and data it was made from: beside it,
    ``<cache>.json`` records the :meth:`fingerprint` (model weights hash, input size,
    normalisation and, when bags are given, which bags and how many frames). A cache
    whose record differs is ignored (and rewritten by the next calibration).
    """

    def __init__(self, metadata: ModelMetadata, cache_path: str | Path,
                 bags: Sequence[str | Path] = (), config: CalibrationConfig | None = None,
                 preprocessor=None, reader: FrameReader | None = None,
                 frames_loader: Callable[[], np.ndarray] | None = None):
        self.metadata = metadata
        self.cache_path = Path(cache_path)
        self.bags = [Path(b) for b in bags]
        self.config = config or CalibrationConfig()
        self.preprocessor = preprocessor
        self.reader = reader
        self._frames_loader = frames_loader
        self._frames: np.ndarray | None = None
        if self.bags:
            _check_bags(self.bags)
        if not self.has_frames and self.read_cache() is None:
            raise ValueError(f"INT8 calibration needs frames: give bags (--calib-bag) or an "
                             f"existing calibration cache for this model (none usable at "
                             f"{self.cache_path})")

    @property
    def has_frames(self) -> bool:
        return bool(self.bags) or self._frames_loader is not None

    # cache ---------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return Path(str(self.cache_path) + ".json")

    def fingerprint(self) -> dict:
        """What the calibration depends on (``frames`` only when bags are given)."""
        meta = self.metadata
        model = meta.provenance.get("weights_sha256") or meta.provenance.get("onnx_sha256")
        d = {"model": model, "input_size": [meta.input_height, meta.input_width],
             "mean": list(meta.mean), "std": list(meta.std)}
        if self.bags:
            d["frames"] = {"bags": [str(b.resolve()) for b in self.bags],
                           "n_frames": self.config.n_frames}
        return d

    def _record_matches(self) -> bool:
        if not self.record_path.is_file():
            logger.warning("calibration cache %s has no record %s: not reused",
                           self.cache_path, self.record_path.name)
            return False
        try:
            recorded = json.loads(self.record_path.read_text())
        except ValueError:
            return False
        mine = self.fingerprint()
        keys = [k for k in mine if k != "frames"] + (["frames"] if "frames" in mine else [])
        differing = [k for k in keys if recorded.get(k) != mine[k]]
        if differing:
            logger.warning("calibration cache %s was made for another %s: not reused",
                           self.cache_path, "/".join(differing))
        return not differing

    def read_cache(self) -> bytes | None:
        """The calibration cache bytes if one exists for this model (and these bags),
        else None. Never touches the bags."""
        if self.cache_path.is_file() and self._record_matches():
            data = self.cache_path.read_bytes()
            if data:
                logger.info("INT8 calibration cache %s reused (%d bytes)", self.cache_path,
                            len(data))
                return data
        return None

    def write_cache(self, data: bytes) -> None:
        """Write the calibration cache (atomically) and its record."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        for path, payload in ((self.cache_path, bytes(data)),
                              (self.record_path, (json.dumps(self.fingerprint(), indent=2)
                                                  + "\n").encode())):
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(payload)
            os.replace(tmp, path)
        logger.info("INT8 calibration cache written to %s", self.cache_path)

    # frames --------------------------------------------------------------------------
    def frames(self) -> np.ndarray:
        """All calibration frames [N,3,H,W] float32 (read and preprocessed once)."""
        if self._frames is None:
            if self._frames_loader is not None:
                frames = np.asarray(self._frames_loader(), dtype=np.float32)
            elif self.bags:
                frames = frames_from_bags(self.bags, self.metadata, self.config.n_frames,
                                          self.preprocessor, self.reader)
            else:
                raise RuntimeError(f"calibration frames requested but no bags were given "
                                   f"(cache {self.cache_path})")
            if frames.ndim != 4 or frames.shape[1] != 3:
                raise ValueError(f"calibration frames must be [N,3,H,W], got {frames.shape}")
            fixed = self.metadata.fixed_size
            if fixed and frames.shape[2:] != fixed:
                raise ValueError(f"calibration frames are {frames.shape[2]}x{frames.shape[3]} "
                                 f"but the model input is {fixed[0]}x{fixed[1]} (HxW)")
            self._frames = np.ascontiguousarray(frames)
        return self._frames

    def batches(self) -> Iterator[np.ndarray]:
        """Contiguous [B,3,H,W] float32 batches; a last incomplete batch is dropped."""
        frames = self.frames()
        b = self.config.batch_size
        full = frames.shape[0] // b
        if full == 0:
            raise ValueError(f"{frames.shape[0]} calibration frames are fewer than one batch "
                             f"of {b}")
        if frames.shape[0] % b:
            logger.warning("dropping the last %d calibration frames (batch size %d)",
                           frames.shape[0] % b, b)
        for i in range(full):
            yield np.ascontiguousarray(frames[i * b:(i + 1) * b])


class CalibratorCore:
    """What ``IInt8EntropyCalibrator2`` asks, answered from a :class:`CalibrationSource`.

    TensorRT first calls :meth:`read_calibration_cache`; if it returns bytes, no batch is
    ever requested (so no bag is read). Otherwise it pulls :meth:`next_batch` until None
    and hands the result to :meth:`write_calibration_cache`.
    """

    def __init__(self, source: CalibrationSource):
        self.source = source
        self._batches: Iterator[np.ndarray] | None = None
        self.batches_served = 0

    def get_batch_size(self) -> int:
        return self.source.config.batch_size

    def next_batch(self) -> np.ndarray | None:
        if self._batches is None:
            self._batches = self.source.batches()
        batch = next(self._batches, None)
        if batch is not None:
            self.batches_served += 1
        return batch

    def read_calibration_cache(self) -> bytes | None:
        return self.source.read_cache()

    def write_calibration_cache(self, data) -> None:
        self.source.write_cache(bytes(data))


def make_int8_calibrator(source: CalibrationSource, device: int = 0):
    """A TensorRT ``IInt8EntropyCalibrator2`` over ``source`` (TensorRT imported here)."""
    from depth_perception.runtime.backends.tensorrt_backend import (Binding, _cuda_memory,
                                                                    import_tensorrt)

    trt = import_tensorrt()
    core = CalibratorCore(source)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.core = core
            self._memory = None

        def get_batch_size(self):
            return core.get_batch_size()

        def get_batch(self, names):
            batch = core.next_batch()                                   # [B,3,H,W]
            if batch is None:
                return None
            if self._memory is None:
                self._memory = _cuda_memory(device)
                self._memory.alloc(Binding(names[0], True, batch.shape, "float32",
                                           batch.nbytes))
            self._memory.upload(names[0], batch)
            self._memory.synchronize()
            ptr = getattr(self._memory, "ptrs", None)
            if ptr is not None:
                return [int(ptr[names[0]])]
            return [int(self._memory.tensors[names[0]].data_ptr())]

        def read_calibration_cache(self):
            return core.read_calibration_cache()

        def write_calibration_cache(self, cache):
            core.write_calibration_cache(cache)

    return EntropyCalibrator()
