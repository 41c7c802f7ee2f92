"""Training samples from a bag: target frame, neighbours, intrinsics, poses, LiDAR depth.

``BagSequence(path, config)`` indexes one bag and gives :class:`Sample` objects:

1. image stamps are read from the camera topic; neighbours sit at ``config.offsets``;
   a target is dropped when a neighbour is missing, any frame gap on the way to it
   exceeds ``max_gap_s`` (default 1.5x the median frame period), a pose is unknown,
   or (``skip_static``) the ego speed is below ``min_speed``;
2. poses come from the TF tree (``/tf_static`` + ``/tf`` + ``/odom``):
   ``T_odom_cam(t) = T_odom_base(t) @ T_base_cam`` and
   ``T_src_tgt = inv(T_odom_cam(src)) @ T_odom_cam(tgt)`` (maps target-camera points
   into the source camera);
3. frames are cropped (``crop=(x0, y0, w, h)`` in original pixels) and then resized to
   ``size=(W, H)``; the intrinsics follow the same two steps;
4. sparse LiDAR depth: the scan nearest in time is moved into the camera frame (through
   TF at the scan time, with ego-motion compensation to the image time through odom),
   projected with the output K, nearest point per pixel (``lidar_rule``: or as an
   evaluation protocol's reference code draws it).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from depth_perception import units
from depth_perception.camera import Intrinsics
from depth_perception.data.bag import BagReader, BagTopics
from depth_perception.data.projection import LIDAR_RULES, camera_from_lidar, project_lidar
from depth_perception.data.tf import TransformError, invert_transform
from depth_perception.rectify import Rectifier, rectifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleConfig:
    """How targets and neighbours are chosen and how frames are prepared."""

    offsets: tuple = (-1, 1)
    max_gap_s: float | None = None         # None: 1.5x the median frame period
    min_speed: float = 0.5                 # m/s; slower frames are static
    skip_static: bool = True
    size: tuple | None = None              # (W, H) output size, after the crop
    crop: tuple | None = None              # (x0, y0, w, h) in original pixels
    with_lidar: bool = True
    with_gt: bool = True
    with_moving: bool = False              # Sample.moving from the bag's gt_moving mask
    condition: str | None = None           # overrides the bag's metadata condition
    topics: BagTopics = field(default_factory=BagTopics)
    world_frame: str = "odom"
    motion_compensation: bool = True       # move LiDAR points to the image time via odom
    max_lidar_gap_s: float = 0.1           # no LiDAR depth when the nearest scan is older
    max_gt_gap_s: float = 0.005            # ground truth must share the image stamp
    input_image: str = "raw"               # rectify.INPUT_IMAGES: raw images are rectified
    keep_raw: bool = False                 # Sample.raw + .rectifier (no crop/size then)
    lidar_rule: str = "nearest"            # projection.LIDAR_RULES (a protocol's reference)

    def __post_init__(self):
        offsets = tuple(int(o) for o in self.offsets)
        if any(o == 0 for o in offsets) or len(set(offsets)) != len(offsets):
            raise ValueError(f"SampleConfig.offsets must be distinct and non-zero, got "
                             f"{self.offsets}")
        object.__setattr__(self, "offsets", offsets)
        if self.size is not None:
            w, h = (int(v) for v in self.size)
            if w <= 0 or h <= 0:
                raise ValueError(f"SampleConfig.size must be (W, H) > 0, got {self.size}")
            object.__setattr__(self, "size", (w, h))
        if self.crop is not None:
            if len(self.crop) != 4:
                raise ValueError(f"SampleConfig.crop must be (x0, y0, w, h), got {self.crop}")
            object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        if isinstance(self.topics, dict):
            object.__setattr__(self, "topics", BagTopics(**self.topics))
        if self.keep_raw and (self.size is not None or self.crop is not None):
            raise ValueError("SampleConfig.keep_raw gives the camera's own image: it takes "
                             "no size or crop")
        if self.lidar_rule not in LIDAR_RULES:
            raise ValueError(f"SampleConfig.lidar_rule must be one of {LIDAR_RULES}, got "
                             f"{self.lidar_rule!r}")

    def frame_settings(self) -> dict:
        """What changes the cached frames (cache key)."""
        return {"size": self.size, "crop": self.crop, "topics": asdict(self.topics),
                "world_frame": self.world_frame,
                "motion_compensation": self.motion_compensation,
                "max_lidar_gap_s": self.max_lidar_gap_s, "max_gt_gap_s": self.max_gt_gap_s,
                "input_image": self.input_image, "lidar_rule": self.lidar_rule}


@dataclass
class Sample:
    """One training target with its neighbours (numpy, output resolution)."""

    image: np.ndarray                  # [H,W,3] uint8 RGB
    context: dict                      # {offset: [H,W,3] uint8}
    intrinsics: Intrinsics             # of the output image
    T_src_tgt: dict                    # {offset: [4,4] float64}
    distance: dict                     # {offset: metres between the camera centres}
    speed: float                       # m/s at the target
    lidar_depth: np.ndarray | None     # [H,W] float32, NaN where no return
    gt_depth: np.ndarray | None        # [H,W] float32, NaN invalid
    condition: str | None
    stamp_ns: int
    bag: str
    index: int                         # image index in the bag
    # SampleConfig.keep_raw: the image as recorded and the rectifier that turns it into
    # ``image`` (the depth node's estimator input: ``estimate(raw, intrinsics,
    # rectifier=rectifier)`` resamples the model input from ``raw`` as the node does)
    raw: np.ndarray | None = None      # [H,W,3] uint8
    rectifier: Rectifier | None = None
    #: [H,W] bool pixels that see moving objects (the bag's ``gt_moving`` mask at the
    #: image stamp, e.g. a synthetic drive's cars); None when the bag has none
    moving: np.ndarray | None = None


class BagSequence:
    """Indexable targets of one bag (see the module docstring for the steps)."""

    def __init__(self, path: str | Path, config: SampleConfig | None = None, cache=None):
        self.config = config or SampleConfig()
        cfg = self.config
        self.path = Path(path)
        self.reader = BagReader(self.path, cfg.topics)
        self.decode_count = 0
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self._recent_size = 2 * max((abs(o) for o in self.config.offsets), default=0) + 2
        self._cache = cache.view(self.path, cfg.frame_settings()) if cache is not None else None
        # 1. camera
        self.reader.require("image")
        info_topic = self.reader.require("camera_info")
        # the rectified camera (the depth node's rectifier: same maps, same pixels)
        self.rectifier = rectifier(self.reader.calibration(0), cfg.input_image)
        self.source_intrinsics = self.rectifier.intrinsics
        self.camera_frame = self.reader.frame_id("camera_info")
        if not self.camera_frame:
            raise ValueError(f"bag {self.path}: CameraInfo on '{info_topic}' has an empty "
                             "frame_id; expected the camera optical frame")
        self.intrinsics = self._output_intrinsics(self.source_intrinsics)
        self.stamps = self.reader.stamps("image")                     # [N] int64 ns
        n = len(self.stamps)
        periods = np.diff(self.stamps)
        self.period_s = float(np.median(periods)) * 1e-9 if n > 1 else float("nan")
        self.max_gap_s = cfg.max_gap_s if cfg.max_gap_s is not None else 1.5 * self.period_s
        self.condition = cfg.condition or self.reader.condition
        # 2. poses of the camera in the world frame at every image stamp
        self.tf = self.reader.tf_buffer()
        self.poses = self._camera_poses()
        need_poses = bool(cfg.offsets) or cfg.skip_static
        if need_poses and all(p is None for p in self.poses):
            raise ValueError(
                f"bag {self.path}: no camera pose '{cfg.world_frame}' -> '{self.camera_frame}' "
                f"at any image stamp; expected odometry on '{cfg.topics.odom}' or transforms on "
                f"'{cfg.topics.tf}'/'{cfg.topics.tf_static}' "
                f"(known transforms: {self.tf._describe()})")
        self.speeds = self._speeds()
        self.lidar_frame = (self.reader.frame_id("lidar")
                            if cfg.with_lidar and self.reader.has("lidar") else None)
        # 3. targets
        self.dropped = {"edge": 0, "gap": 0, "pose": 0, "static": 0}
        self.targets = [i for i in range(n) if self._keep(i)]
        log.info("bag %s: %d of %d frames are targets (dropped %s)", self.path,
                 len(self.targets), n, self.dropped)

    # -- geometry ---------------------------------------------------------------------
    def _output_intrinsics(self, intr: Intrinsics) -> Intrinsics:
        cfg = self.config
        if cfg.crop is not None:
            intr = intr.cropped(*cfg.crop)
        if cfg.size is not None:
            intr = intr.resized(*cfg.size)
        return intr

    def _camera_poses(self) -> list:
        poses = []
        for stamp in self.stamps:
            try:
                poses.append(self.tf.lookup(self.config.world_frame, self.camera_frame,
                                            int(stamp)))
            except TransformError:
                poses.append(None)
        return poses

    def _speeds(self) -> np.ndarray:
        """[N] m/s: odometry twist nearest in time, else from pose differences."""
        n = len(self.stamps)
        speeds = np.full(n, np.nan)
        if self.reader.has("odom"):
            odom_stamps = self.reader.stamps("odom")
            for i, stamp in enumerate(self.stamps):
                j, dt = self.reader.nearest("odom", int(stamp))
                if dt * 1e-9 <= max(self.max_gap_s, 0.0) or len(odom_stamps) == 1:
                    speeds[i] = self.reader.odometry(j).speed
        for i in np.flatnonzero(np.isnan(speeds)):
            lo, hi = max(i - 1, 0), min(i + 1, n - 1)
            if hi == lo or self.poses[lo] is None or self.poses[hi] is None:
                continue
            dist = np.linalg.norm(self.poses[hi][:3, 3] - self.poses[lo][:3, 3])
            speeds[i] = dist / ((self.stamps[hi] - self.stamps[lo]) * 1e-9)
        return speeds

    def _keep(self, i: int) -> bool:
        cfg, n = self.config, len(self.stamps)
        for o in cfg.offsets:
            j = i + o
            if not 0 <= j < n:
                self.dropped["edge"] += 1
                return False
            lo, hi = min(i, j), max(i, j)
            if np.any(np.diff(self.stamps[lo:hi + 1]) * 1e-9 > self.max_gap_s):
                self.dropped["gap"] += 1
                return False
        if cfg.offsets and any(self.poses[k] is None for k in [i] + [i + o for o in cfg.offsets]):
            self.dropped["pose"] += 1
            return False
        if cfg.skip_static and not (self.speeds[i] >= cfg.min_speed):
            self.dropped["static"] += 1
            return False
        return True

    def relative_pose(self, src: int, tgt: int) -> np.ndarray:
        """[4,4] T_src_tgt between image indices: X_src = T @ X_tgt."""
        return invert_transform(self.poses[src]) @ self.poses[tgt]

    # -- frames -----------------------------------------------------------------------
    def _prepare(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        import cv2

        cfg = self.config
        if cfg.crop is not None:
            x0, y0, w, h = cfg.crop
            image = image[y0:y0 + h, x0:x0 + w]
        if cfg.size is not None and (image.shape[1], image.shape[0]) != cfg.size:
            if nearest:
                interp = cv2.INTER_NEAREST_EXACT
            elif cfg.size[0] < image.shape[1]:
                interp = cv2.INTER_AREA
            else:
                interp = cv2.INTER_LINEAR
            image = cv2.resize(image, cfg.size, interpolation=interp)
        return np.ascontiguousarray(image)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A camera-sized [H0,W0,3] image of this bag (e.g. a translation of one of its
        frames) cropped and resized as its frames are, so the output K holds for it."""
        source = (self.source_intrinsics.height, self.source_intrinsics.width)
        if image.shape[:2] != source:
            raise ValueError(f"bag {self.path}: image of size {image.shape[1]}x{image.shape[0]} "
                             f"(WxH); expected the camera size {source[1]}x{source[0]}")
        return self._prepare(image)

    def prepare_depth(self, depth: np.ndarray) -> np.ndarray:
        """A camera-sized depth map [H0,W0] of one of this bag's frames (e.g. a pseudo
        label) cropped and resized (nearest, NaN stays NaN) as its frames are."""
        source = (self.source_intrinsics.height, self.source_intrinsics.width)
        if depth.shape[:2] != source:
            raise ValueError(f"bag {self.path}: depth map of size {depth.shape[1]}x"
                             f"{depth.shape[0]} (WxH); expected the camera size "
                             f"{source[1]}x{source[0]}")
        return self._prepare(np.asarray(depth, np.float32), nearest=True)

    def _cached(self, name: str, compute):
        if self._cache is None:
            return compute()
        return self._cache.get_or_compute(name, compute)

    def _decode_image(self, i: int) -> np.ndarray:
        return self._prepare(self.rectifier.apply(self._raw_image(i)))

    def _raw_image(self, i: int) -> np.ndarray:
        """[H0,W0,3] uint8 image ``i`` as recorded (checked against the CameraInfo)."""
        self.decode_count += 1
        rgb = self.reader.image(i)
        src = self.source_intrinsics
        if rgb.shape[:2] != (src.height, src.width):
            raise ValueError(
                f"bag {self.path}: image {i} on '{self.reader.topic_name('image')}' is "
                f"{rgb.shape[1]}x{rgb.shape[0]} but the CameraInfo on "
                f"'{self.config.topics.camera_info}' says {src.width}x{src.height}")
        return rgb

    def frame(self, i: int) -> np.ndarray:
        """[H,W,3] uint8 RGB of image index ``i`` at the output size (a fresh copy).

        The last few frames stay in memory: in sequential order every frame serves as
        target and as neighbour but is decoded (or read from the cache) once.
        """
        hit = self._recent.get(i)
        if hit is None:
            hit = self._cached(f"image_{i}", lambda: self._decode_image(i))
            self._recent[i] = hit
            if len(self._recent) > self._recent_size:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(i)
        return hit.copy()

    def lidar_depth(self, i: int) -> np.ndarray | None:
        """[H,W] float32 sparse depth at image ``i``, NaN where no return; None without LiDAR."""
        if self.lidar_frame is None:
            return None
        return self._cached(f"lidar_{i}", lambda: self._project_lidar(i))

    def _project_lidar(self, i: int) -> np.ndarray:
        cfg = self.config
        stamp = int(self.stamps[i])
        j, dt = self.reader.nearest("lidar", stamp)
        if dt * 1e-9 > cfg.max_lidar_gap_s:
            return np.full((self.intrinsics.height, self.intrinsics.width), np.nan, np.float32)
        self.decode_count += 1
        scan_stamp = int(self.reader.stamps("lidar")[j])
        points = self.reader.cloud(j)[:, :3].astype(np.float64)          # [N,3] lidar frame
        T_cam_lidar = camera_from_lidar(self.tf, self.camera_frame, self.lidar_frame, stamp,
                                        scan_stamp, cfg.world_frame, cfg.motion_compensation)
        return project_lidar(points, T_cam_lidar, self.intrinsics, cfg.lidar_rule)

    def _ground_truth_index(self, key: str, wanted: bool, i: int) -> int | None:
        """Message of ground-truth topic ``key`` with the stamp of image ``i`` (within
        ``max_gt_gap_s``), or None (not wanted, not in the bag, no such stamp)."""
        if not wanted or not self.reader.has(key):
            return None
        j, dt = self.reader.nearest(key, int(self.stamps[i]))
        return None if dt * 1e-9 > self.config.max_gt_gap_s else j

    def gt_depth(self, i: int) -> np.ndarray | None:
        """[H,W] float32 ground-truth depth at image ``i`` (nearest stamp) or None."""
        j = self._ground_truth_index("gt_depth", self.config.with_gt, i)
        if j is None:
            return None

        def compute():
            self.decode_count += 1
            # the bag's +inf (REP 117 no return: sky) is NaN (invalid) in a Sample
            gt = units.nan_outside(self.reader.gt_depth(j))
            return self._prepare(gt, nearest=True).astype(np.float32)

        return self._cached(f"gt_{i}", compute)

    def moving_mask(self, i: int) -> np.ndarray | None:
        """[H,W] bool moving-object pixels at image ``i`` (same stamp) or None."""
        j = self._ground_truth_index("gt_moving", self.config.with_moving, i)
        if j is None:
            return None
        return self._prepare(self.reader.moving_mask(j).astype(np.uint8), nearest=True) > 0

    # -- sequence protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, k: int) -> Sample:
        if not -len(self) <= k < len(self):
            raise IndexError(f"bag {self.path}: sample {k} out of range ({len(self)} samples)")
        i = self.targets[k]
        offsets = self.config.offsets
        T = {o: self.relative_pose(i + o, i) for o in offsets}
        raw = self._raw_image(i) if self.config.keep_raw else None
        return Sample(
            image=self.frame(i) if raw is None else self._prepare(self.rectifier.apply(raw)),
            context={o: self.frame(i + o) for o in offsets},
            intrinsics=self.intrinsics,
            T_src_tgt=T,
            distance={o: float(np.linalg.norm(T[o][:3, 3])) for o in offsets},
            speed=float(self.speeds[i]),
            lidar_depth=self.lidar_depth(i) if self.config.with_lidar else None,
            gt_depth=self.gt_depth(i),
            condition=self.condition,
            stamp_ns=int(self.stamps[i]),
            bag=str(self.path),
            index=i,
            raw=raw,
            rectifier=self.rectifier if raw is not None else None,
            moving=self.moving_mask(i) if self.config.with_moving else None,
        )
