"""Reference depth for evaluation: LiDAR projected through TF, or a dense depth topic.

Pure numpy (no rclpy): used by the offline evaluation (bags) and by the online
evaluator node (live topics) so both score frames against exactly the same reference.

* ``parse_reference("lidar")`` -> LiDAR scans projected into the camera
  (:mod:`depth_perception.data.projection`: nearest scan in time, camera<-lidar from TF
  with ego-motion compensation, z-buffer);
* ``parse_reference("/ground_truth/depth")`` -> a dense 32FC1/16UC1 depth topic with
  the image's stamps (e.g. the synthetic bags' ground truth).

:class:`StampMatcher` pairs predictions with references by stamp for live streams, where
either side may arrive first.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

LIDAR = "lidar"
DEFAULT_LIDAR_TOPIC = "/lidar/points"


@dataclass(frozen=True)
class ReferenceSpec:
    """What a prediction is scored against: ``kind`` "lidar" or "topic" (dense depth)."""

    kind: str
    topic: str

    @property
    def label(self) -> str:
        return f"LiDAR ({self.topic})" if self.kind == LIDAR else f"depth topic {self.topic}"


def parse_reference(spec: str, lidar_topic: str = DEFAULT_LIDAR_TOPIC) -> ReferenceSpec:
    """``"lidar"`` or an absolute topic name of a dense depth image -> ReferenceSpec."""
    spec = (spec or "").strip()
    if spec == LIDAR:
        return ReferenceSpec(LIDAR, lidar_topic)
    if spec.startswith("/") and len(spec) > 1:
        return ReferenceSpec("topic", spec)
    raise ValueError(f"reference '{spec}': expected 'lidar' or an absolute depth image topic "
                     f"such as /ground_truth/depth")


class StampMatcher:
    """Pairs predictions with references by stamp (nanoseconds) on live streams.

    ``nearest=False`` (dense depth topics): a prediction matches the reference whose stamp
    differs by at most ``tolerance_ns`` (normally identical stamps).
    ``nearest=True`` (LiDAR scans on their own clock): a prediction matches the reference
    nearest in time within ``tolerance_ns``; the choice is made once a reference at or after
    the prediction's stamp has arrived (or on :meth:`flush`), so a later, nearer scan is
    never missed. References are assumed to arrive in stamp order.
    """

    def __init__(self, tolerance_ns: int, nearest: bool = False, max_buffer: int = 200):
        if tolerance_ns < 0:
            raise ValueError(f"stamp tolerance must be >= 0, got {tolerance_ns} ns")
        self.tolerance_ns = int(tolerance_ns)
        self.nearest = nearest
        self.max_buffer = int(max_buffer)
        self._ref_stamps: list[int] = []
        self._refs: list = []
        self._pending: dict[int, object] = {}
        self.unmatched = 0

    def add_reference(self, stamp_ns: int, item) -> list:
        i = bisect.bisect_left(self._ref_stamps, stamp_ns)
        if i < len(self._ref_stamps) and self._ref_stamps[i] == stamp_ns:
            self._refs[i] = item
        else:
            self._ref_stamps.insert(i, stamp_ns)
            self._refs.insert(i, item)
        if len(self._refs) > self.max_buffer:
            del self._ref_stamps[0], self._refs[0]
        return self._resolve(final=False)

    def add_prediction(self, stamp_ns: int, item) -> list:
        self._pending[int(stamp_ns)] = item
        if len(self._pending) > self.max_buffer:
            oldest = min(self._pending)
            del self._pending[oldest]
            self.unmatched += 1
        return self._resolve(final=False)

    def flush(self) -> list:
        """Decide every pending prediction with what has arrived; unmatched ones are counted."""
        matches = self._resolve(final=True)
        self.unmatched += len(self._pending)
        self._pending.clear()
        return matches

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _resolve(self, final: bool) -> list:
        """[(stamp_ns, prediction, reference_stamp_ns, reference)] decided now."""
        out = []
        for stamp in sorted(self._pending):
            j = self._best(stamp, final)
            if j is None:
                continue
            if j >= 0:
                out.append((stamp, self._pending[stamp], self._ref_stamps[j], self._refs[j]))
            else:
                self.unmatched += 1
            del self._pending[stamp]
        return out

    def _best(self, stamp: int, final: bool):
        """Index of the matching reference, -1 for "no match, give up", None for "wait"."""
        stamps = self._ref_stamps
        i = bisect.bisect_left(stamps, stamp)
        candidates = [k for k in (i - 1, i) if 0 <= k < len(stamps)]
        close = [k for k in candidates if abs(stamps[k] - stamp) <= self.tolerance_ns]
        later_seen = i < len(stamps)           # a reference at or after the stamp arrived
        if not self.nearest:
            if close:
                return min(close, key=lambda k: abs(stamps[k] - stamp))
            # wait while a matching reference may still come
            return -1 if final or (later_seen and stamps[-1] > stamp + self.tolerance_ns) \
                else None
        if not later_seen and not final:
            return None
        if close:
            return min(close, key=lambda k: abs(stamps[k] - stamp))
        return -1
