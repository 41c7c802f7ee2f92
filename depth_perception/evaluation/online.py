"""Online scoring of a live depth stream, without rclpy.

:class:`OnlineScorer` is what the evaluator node (:mod:`depth_perception.ros.evaluator_node`)
delegates to: it pairs depth images with references by stamp
(:class:`~depth_perception.evaluation.ground_truth.StampMatcher`), holds a LiDAR frame
back until its depth/camera_info and (with motion compensation) the odometry up to both
stamps have arrived, projects the scan through the camera<-lidar transform and adds the
frame to :class:`~depth_perception.evaluation.report.EvaluationResults` - the same
reference and metrics as the offline tool. The node feeds it messages already turned
into numpy and reports what it returns.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from depth_perception import units
from depth_perception.camera import Intrinsics
from depth_perception.data.projection import camera_from_lidar, project_lidar
from depth_perception.data.tf import TransformError
from depth_perception.evaluation.ground_truth import StampMatcher
from depth_perception.evaluation.report import EvaluationResults
from depth_perception.evaluation.temporal import TemporalTracker

log = logging.getLogger(__name__)


class OnlineScorer:
    """Scores depth frames against LiDAR scans (``use_lidar``) or dense references.

    ``T_cam_lidar``: fixed [4,4] camera<-lidar (None: from ``tf``, a
    :class:`depth_perception.data.tf.TfBuffer` fed by the caller, with motion
    compensation through ``world_frame`` when ``motion_compensation``).
    ``camera_frame``: optical frame of the depth images ('' = their frame_id).
    ``on_scored(stamp_ns, frame_id, metrics)`` and ``on_failed(stamp_ns, reason)`` are
    called for every decided frame. ``with_confidence``: each depth frame also waits for
    its confidence image (same stamp, :meth:`add_confidence`) and is scored with it
    (AUSE/AURG, as the offline tool scores a row with a confidence). ``temporal``: the
    TAE of each scored frame with the previous one
    (:mod:`depth_perception.evaluation.temporal`), as the offline tool computes it: the
    camera's poses in ``world_frame`` from ``tf`` at both stamps (a frame waits for the
    motion up to its stamp), the reference's valid pixels compared; with
    ``with_moving`` each frame also waits for its moving-object mask
    (:meth:`add_moving`) and only static pixels count, with ``with_ground_truth`` for
    its dense ground truth (:meth:`add_ground_truth`) and only pixels both frames see
    count; without them every pixel is static and co-visible. A frame the depth node
    dropped leaves a longer pair, not a gap.
    """

    def __init__(self, results: EvaluationResults, model_name: str, condition: str,
                 use_lidar: bool, tolerance_ns: int, T_cam_lidar: np.ndarray | None = None,
                 tf=None, world_frame: str = "odom", motion_compensation: bool = True,
                 camera_frame: str = "", on_scored=None, on_failed=None,
                 with_confidence: bool = False, temporal: bool = False,
                 with_moving: bool = False, with_ground_truth: bool = False):
        self.results = results
        self.model_name = model_name
        self.condition = condition
        self.use_lidar = use_lidar
        self.matcher = StampMatcher(tolerance_ns, nearest=use_lidar)
        self.T_cam_lidar = T_cam_lidar
        self.tf = tf
        self.world_frame = world_frame
        self.motion_compensation = motion_compensation
        self.camera_frame = camera_frame
        self.on_scored = on_scored or (lambda stamp, frame_id, metrics: None)
        self.on_failed = on_failed or (lambda stamp, reason: None)
        self.lock = threading.RLock()
        self.frames_scored = 0
        self.frames_failed = 0
        self.intrinsics: dict[str, Intrinsics] = {}   # frame_id -> K of the depth images
        self.images: dict[int, np.ndarray] = {}       # stamp_ns -> rgb (sample figure only)
        self.with_confidence = with_confidence
        self.confidences: dict[int, np.ndarray] = {}  # stamp_ns -> [H,W] confidence
        self.dynamic_until: int | None = None         # newest odometry / dynamic TF stamp
        self._ready: list = []                        # matched, waiting for info/odometry
        self.temporal = temporal
        self.frames_without_pose = 0                  # scored, left out of the TAE
        self.with_moving = temporal and with_moving
        self.with_ground_truth = temporal and with_ground_truth
        self.moving: dict[int, np.ndarray] = {}       # stamp_ns -> [H,W] bool moving
        self.ground_truth: dict[int, np.ndarray] = {} # stamp_ns -> [H,W] metres, NaN none
        self._tracker = None                          # TemporalTracker of the camera
        self._tracked: tuple | None = None            # (K, position, stamp) of the last

    # -- inputs --------------------------------------------------------------------
    def add_intrinsics(self, frame_id: str, K: Intrinsics) -> None:
        with self.lock:
            new = frame_id not in self.intrinsics
            self.intrinsics[frame_id] = K
            if new:
                self._drain(final=False)

    def add_image(self, stamp_ns: int, rgb: np.ndarray, keep: int = 30) -> None:
        with self.lock:
            self.images[stamp_ns] = rgb
            while len(self.images) > keep:
                del self.images[min(self.images)]

    def add_confidence(self, stamp_ns: int, confidence: np.ndarray, keep: int = 100) -> None:
        """The confidence image of the depth frame of ``stamp_ns`` (``with_confidence``)."""
        self._keep(self.confidences, stamp_ns, confidence, keep)

    def add_moving(self, stamp_ns: int, mask: np.ndarray, keep: int = 100) -> None:
        """The moving-object mask ([H,W], non-zero: moving) of the frame of ``stamp_ns``."""
        self._keep(self.moving, stamp_ns, np.asarray(mask) != 0, keep)

    def add_ground_truth(self, stamp_ns: int, depth: np.ndarray, keep: int = 100) -> None:
        """Dense ground-truth depth [H,W] metres of the frame of ``stamp_ns`` (what is
        not a usable distance counts as none)."""
        self._keep(self.ground_truth, stamp_ns, units.nan_outside(depth), keep)

    def _keep(self, store: dict, stamp_ns: int, value, keep: int) -> None:
        with self.lock:
            store[stamp_ns] = value
            while len(store) > keep:                               # frames never matched
                del store[min(store)]
            self._drain(final=False)

    def add_depth(self, stamp_ns: int, frame_id: str, depth: np.ndarray) -> None:
        with self.lock:
            self._ready.extend(self.matcher.add_prediction(stamp_ns, (depth, frame_id)))
            self._drain(final=False)

    def add_reference(self, stamp_ns: int, data, lidar_frame: str | None = None) -> None:
        """A LiDAR scan ([N,3] in ``lidar_frame``) or a dense reference depth [H,W]."""
        with self.lock:
            self._ready.extend(self.matcher.add_reference(stamp_ns, (data, lidar_frame)))
            self._drain(final=False)

    def moved(self, stamp_ns: int | None) -> None:
        """Odometry or dynamic TF is known up to ``stamp_ns``."""
        with self.lock:
            if stamp_ns is not None and (self.dynamic_until is None
                                         or stamp_ns > self.dynamic_until):
                self.dynamic_until = stamp_ns
            self._drain(final=False)

    def flush(self) -> None:
        """Score the frames still waiting for a later reference with what arrived."""
        with self.lock:
            self._ready.extend(self.matcher.flush())
            self._drain(final=True)

    # -- scoring -------------------------------------------------------------------
    def _reference_depth(self, depth, frame_id, stamp, ref_stamp, ref) -> np.ndarray:
        data, lidar_frame = ref
        if not self.use_lidar:
            return data
        K = self.intrinsics.get(frame_id)
        if K is None:
            raise ValueError(f"no depth/camera_info received for frame '{frame_id}'")
        if (K.height, K.width) != depth.shape:
            raise ValueError(f"depth/camera_info is {K.width}x{K.height} but the depth "
                             f"image is {depth.shape[1]}x{depth.shape[0]}")
        T = self.T_cam_lidar
        if T is None:
            T = camera_from_lidar(self.tf, self.camera_frame or frame_id, lidar_frame, stamp,
                                  ref_stamp, self.world_frame, self.motion_compensation)
        return project_lidar(data, T, K)

    def _must_wait(self, match) -> bool:
        """A frame waits for its confidence image (``with_confidence``); a LiDAR frame
        for its depth/camera_info (a separate topic that may come second) and, with
        motion compensation, for odometry up to both stamps (TF does not extrapolate)."""
        stamp, (_, frame_id), ref_stamp, _ = match
        if self.with_confidence and stamp not in self.confidences:
            return True
        if self.temporal and (frame_id not in self.intrinsics or self.dynamic_until is None
                              or self.dynamic_until < stamp
                              or (self.with_moving and stamp not in self.moving)
                              or (self.with_ground_truth and stamp not in self.ground_truth)):
            return True
        if not self.use_lidar:
            return False
        if frame_id not in self.intrinsics:
            return True
        if not self.motion_compensation or self.T_cam_lidar is not None:
            return False
        return self.dynamic_until is None or self.dynamic_until < max(stamp, ref_stamp)

    def _drain(self, final: bool) -> None:
        """Score the matched frames that need nothing more (caller holds the lock)."""
        ready, self._ready = self._ready, []
        now = []
        for match in ready:
            if not final and self._must_wait(match):
                self._ready.append(match)
            else:
                now.append(match)
        for stamp, (depth, frame_id), ref_stamp, ref in now:
            try:
                gt = self._reference_depth(depth, frame_id, stamp, ref_stamp, ref)
                m = self.results.add_frame(self.model_name, gt, depth, self.condition,
                                           "online", self.frames_scored, stamp,
                                           self.images.get(stamp),
                                           confidence=self.confidences.pop(stamp, None))
                if self.temporal:
                    self._track(stamp, frame_id, depth, gt, m)
                self.frames_scored += 1
            except ValueError as exc:
                self.frames_failed += 1
                self.on_failed(stamp, str(exc))
                continue
            self.on_scored(stamp, frame_id, m)

    def _track(self, stamp: int, frame_id: str, depth: np.ndarray, reference: np.ndarray,
               metrics: dict) -> None:
        """The TAE of this scored frame with the previous one (``temporal``)."""
        K = self.intrinsics.get(frame_id)
        if K is None or (K.height, K.width) != depth.shape or self.tf is None:
            return
        pose = None
        try:
            pose = self.tf.lookup(self.world_frame, self.camera_frame or frame_id, stamp)
        except TransformError as exc:                # scored, but in no TAE pair
            self.frames_without_pose += 1
            log.warning("frame %d: no camera pose in '%s' for the TAE (%s)", stamp,
                        self.world_frame, exc)
        last = self._tracked
        if last is None or last[0] != K or stamp <= last[2]:   # new camera, or out of order
            self._tracker = TemporalTracker(self.results, K, "online")
            position = 0
        else:
            position = last[1] + 1
        self._tracked = (K, position, stamp)
        self._tracker.frame(position, pose, self.results.scored_mask(reference),
                            self.moving.pop(stamp, None), self.ground_truth.pop(stamp, None))
        self._tracker.add(self.model_name, position, depth, metrics, self.condition,
                          self.frames_scored, stamp)
