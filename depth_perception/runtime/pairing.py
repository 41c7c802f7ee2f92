"""Image <-> CameraInfo pairing by exact stamp, with a bounded wait and a fallback.

Without ROS types (tests run it with plain objects): the node feeds every CameraInfo
(already checked: valid or rejected with a reason) and every image, keyed by frame_id
and header stamp, and acts on the :class:`Pairing` decisions it gets back.

* An image is paired with the CameraInfo of its frame that has the same stamp (exact
  time synchronisation), whichever of the two arrives first.
* An image whose CameraInfo was rejected (zero K, wrong size, ...) is rejected too: a
  rejected CameraInfo never pairs with any image, and never stands in for a later one.
* An image waits at most ``wait_s`` for its CameraInfo; then it is paired with the
  newest valid CameraInfo of its frame (``kind='fallback'``, ``first_fallback`` True
  the first time for that frame so the caller says so once), or rejected when the
  frame has none (``kind='no_info'``).
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass


@dataclass
class Pairing:
    """A decision about one image.

    ``kind``: 'exact' (its own CameraInfo), 'fallback' (the newest valid one of its
    frame after the wait), 'rejected_info' (its own CameraInfo was rejected: ``why``),
    'no_info' (nothing valid for its frame: ``why``).
    """

    image: object
    info: object | None
    kind: str
    why: str = ""
    first_fallback: bool = False

    @property
    def ok(self) -> bool:
        return self.info is not None


class StampPairer:
    """Pairs images with CameraInfos by (frame_id, stamp); thread-safe.

    ``keep``: CameraInfos remembered per frame (and images waiting in all); ``clock``:
    monotonic seconds (tests pass their own).
    """

    def __init__(self, wait_s: float = 0.1, keep: int = 64, clock=time.monotonic):
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.wait_s = float(wait_s)
        self.keep = int(keep)
        self._clock = clock
        self._lock = threading.Lock()
        # frame_id -> OrderedDict stamp_ns -> (info or None when rejected, why)
        self._infos: dict[str, collections.OrderedDict] = {}
        self._newest_valid: dict[str, tuple[int, object]] = {}
        self._waiting: collections.OrderedDict = collections.OrderedDict()  # (frame, stamp) -> (image, deadline)
        self._fallback_said: set[str] = set()
        self.fallbacks = 0

    # -- CameraInfo -----------------------------------------------------------------
    def add_info(self, frame_id: str, stamp_ns: int, info, why_rejected: str = "") -> list[Pairing]:
        """Record a CameraInfo (``why_rejected`` non-empty: it was refused). Returns the
        decisions for images that were waiting for this stamp."""
        with self._lock:
            infos = self._infos.setdefault(frame_id, collections.OrderedDict())
            infos[stamp_ns] = (None if why_rejected else info, why_rejected)
            infos.move_to_end(stamp_ns)
            while len(infos) > self.keep:
                infos.popitem(last=False)
            if not why_rejected:
                newest = self._newest_valid.get(frame_id)
                if newest is None or stamp_ns >= newest[0]:
                    self._newest_valid[frame_id] = (stamp_ns, info)
            waiting = self._waiting.pop((frame_id, stamp_ns), None)
            if waiting is None:
                return []
            return [self._own(waiting[0], infos[stamp_ns])]

    def reject_info(self, frame_id: str, stamp_ns: int, why: str) -> None:
        """A CameraInfo turned out unusable with its image (e.g. its size): never use it
        again, not even as a fallback."""
        with self._lock:
            infos = self._infos.setdefault(frame_id, collections.OrderedDict())
            infos[stamp_ns] = (None, why)
            newest = self._newest_valid.get(frame_id)
            if newest is not None and newest[0] == stamp_ns:
                del self._newest_valid[frame_id]
                for stamp in reversed(infos):
                    if infos[stamp][0] is not None:
                        self._newest_valid[frame_id] = (stamp, infos[stamp][0])
                        break

    # -- images ---------------------------------------------------------------------
    def add_image(self, frame_id: str, stamp_ns: int, image) -> list[Pairing]:
        """Decisions now: the image's own pairing when its CameraInfo is known (or
        ``wait_s`` is 0), plus images forced out of the wait by the ``keep`` bound."""
        with self._lock:
            entry = self._infos.get(frame_id, {}).get(stamp_ns)
            if entry is not None:
                return [self._own(image, entry)]
            if self.wait_s <= 0:
                return [self._fallback(frame_id, image)]
            self._waiting[(frame_id, stamp_ns)] = (image, self._clock() + self.wait_s)
            out = []
            while len(self._waiting) > self.keep:
                (old_frame, _), (old_image, _) = self._waiting.popitem(last=False)
                out.append(self._fallback(old_frame, old_image))
            return out

    def expire(self, now: float | None = None) -> list[Pairing]:
        """Decisions for the images whose wait is over (fallback or no_info)."""
        now = self._clock() if now is None else now
        with self._lock:
            due = [key for key, (_, deadline) in self._waiting.items() if deadline <= now]
            return [self._fallback(key[0], self._waiting.pop(key)[0]) for key in due]

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def frames(self) -> list[str]:
        """frame_ids with a valid CameraInfo."""
        with self._lock:
            return sorted(self._newest_valid)

    def clear(self) -> None:
        with self._lock:
            self._infos.clear()
            self._newest_valid.clear()
            self._waiting.clear()

    # -- decisions (caller holds the lock) --------------------------------------------
    @staticmethod
    def _own(image, entry) -> Pairing:
        info, why = entry
        if info is None:
            return Pairing(image, None, "rejected_info", f"its CameraInfo was rejected: {why}")
        return Pairing(image, info, "exact")

    def _fallback(self, frame_id: str, image) -> Pairing:
        newest = self._newest_valid.get(frame_id)
        if newest is None:
            return Pairing(image, None, "no_info",
                           f"no valid CameraInfo for frame_id '{frame_id}' within "
                           f"{self.wait_s * 1e3:.0f} ms (have: {sorted(self._newest_valid)})")
        first = frame_id not in self._fallback_said
        self._fallback_said.add(frame_id)
        self.fallbacks += 1
        return Pairing(image, newest[1], "fallback",
                       f"no CameraInfo with the image's stamp within {self.wait_s * 1e3:.0f} "
                       f"ms: using the newest valid one of frame_id '{frame_id}' (stamp "
                       f"{newest[0] * 1e-9:.6f} s)", first)
