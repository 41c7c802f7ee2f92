"""Reused large byte buffers for outgoing messages.

Filling a fresh multi-MB buffer every frame faults in every page of it again (a
stride-1 1280x720 cloud is 14.7 MB). :func:`reusable_bytes` hands out an
``array('B')`` of the requested size, reusing one that nothing refers to any more:
a buffer goes back into service only when the pool itself holds its last reference
(the message that carried it was published and dropped). A message a caller still
holds is therefore never overwritten. The contents of a reused buffer are stale; the
caller overwrites every byte.
"""
from __future__ import annotations

import array
import sys
import threading

PER_SIZE = 3      # buffers kept per size (frames in flight)
MAX_SIZES = 4     # sizes kept (a camera geometry change forgets older ones)

_pool: dict[int, list] = {}
_lock = threading.Lock()


def reusable_bytes(nbytes: int) -> array.array:
    """An ``array('B')`` of ``nbytes`` bytes, unreferenced elsewhere; stale contents."""
    nbytes = int(nbytes)
    with _lock:
        buffers = _pool.setdefault(nbytes, [])
        for i in range(len(buffers)):
            # 2 references: the pool's list and getrefcount's argument
            if sys.getrefcount(buffers[i]) == 2:
                return buffers[i]
        fresh = array.array("B", [0]) * nbytes
        if len(buffers) < PER_SIZE:
            buffers.append(fresh)
        if len(_pool) > MAX_SIZES:
            for size in [k for k in _pool if k != nbytes]:
                del _pool[size]
        return fresh


def clear() -> None:
    """Forget every pooled buffer (tests, memory pressure)."""
    with _lock:
        _pool.clear()
