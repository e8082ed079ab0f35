"""The cleanup ladder: give memory back to the operating system, rarely and measurably.

``gc.collect()`` frees Python objects, but glibc keeps the freed pages in its
arenas, so the container's figure does not fall; ``malloc_trim(0)`` hands them
back. Both cost milliseconds on a big heap, so they run at most once per
``min_interval_s`` per process, and never on every request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from dataclasses import dataclass

from .events import EventKind, Events
from .probe import MB, MemoryProbe

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
# glibc's own ceiling for its moving threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit).
ROOMY_MMAP_THRESHOLD_KB = 32 * 1024


def pin_mmap_threshold(kb: int) -> bool:
    """Serve every allocation above ``kb`` with its own mmap, so freeing it returns it to the OS at
    once.

    glibc raises its mmap threshold on the fly (up to 32 MB) each time a large
    mmapped block is freed; after that, image buffers (Pillow allocates 16 MB
    blocks) come from the heap and stay in the process after they are freed,
    so the container's figure only falls at the next malloc_trim. A fixed
    threshold turns that off. False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or kb <= 0:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, kb * 1024))


def _load_malloc_trim():
    """glibc's malloc_trim, or None where the C library is not glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MmapThreshold:
    """glibc's mmap threshold by how tight memory is: ``tight_kb`` at and above the cleanup line,
    32 MB below it; 0: glibc's own moving threshold, never changed.

    Tight, every block over ``tight_kb`` is its own mmap, returned the moment it is
    freed, so the reading falls as soon as a picture is let go. Roomy, image and
    audio buffers are reused from the heap instead of being mapped, zeroed on first
    touch and unmapped per allocation: that costs +19% worker CPU per request in
    bench/soak.py and +20% for a burst of narrations. The heap's free pages go
    back to the system when a worker's costed requests are all done ("idle") and
    at every cleanup.
    """

    def __init__(self, tight_kb: int) -> None:
        self.tight_kb = tight_kb
        self.roomy_kb = max(tight_kb, ROOMY_MMAP_THRESHOLD_KB)
        self.tight: bool | None = None  # not set yet
        self.pinned = False
        self._lock = threading.Lock()

    @property
    def kb(self) -> int | None:
        """The threshold set now, or None (glibc's own)."""
        if not self.pinned:
            return None
        return self.tight_kb if self.tight else self.roomy_kb

    def follow(self, tight: bool) -> None:
        """Set the threshold for memory that is ``tight`` (one comparison when it is set so)."""
        if tight is self.tight or self.tight_kb <= 0:
            return
        with self._lock:
            if tight is not self.tight:
                self.pinned = pin_mmap_threshold(self.tight_kb if tight else self.roomy_kb)
                self.tight = tight


@dataclass(frozen=True)
class CleanupResult:
    kind: str  # "trim" (malloc_trim only) or "full" (gc + malloc_trim)
    rss_before: int
    rss_after: int
    collected: int  # objects gc found unreachable
    seconds: float

    @property
    def reclaimed_bytes(self) -> int:
        return max(self.rss_before - self.rss_after, 0)


class Cleaner:
    """Runs cleanups, at most one at a time and one per interval; counts what they reclaim.

    A cleanup for want of memory (at the cleanup line, for a waiting step, before a shed) sets
    ``mmap``'s tight threshold first (the governor sets the roomy one again once a reading is
    under the cleanup line).
    """

    def __init__(
        self,
        probe: MemoryProbe,
        min_interval_s: float = 1.0,
        events: Events | None = None,
        mmap: MmapThreshold | None = None,
    ) -> None:
        self.probe = probe
        self.events = events or Events()
        self.min_interval_s = min_interval_s
        self.mmap = mmap or MmapThreshold(0)
        self._malloc_trim = _load_malloc_trim()
        self._lock = threading.Lock()
        self._last = -float("inf")
        self.rss_after_last = 0  # this process's RSS after the latest cleanup
        self.runs = 0
        self.reclaimed_bytes = 0

    # An idle trim waits until the process has grown this much since the latest cleanup: the
    # free heap of a few pictures, not of every small request (a trim's pages come back as page
    # faults on the next request).
    IDLE_TRIM_GROWTH = 8 * MB

    def idle_trim(self) -> CleanupResult | None:
        """The process's costed requests are all done: hand the heap's free pages back if it grew
        ``IDLE_TRIM_GROWTH`` since the latest cleanup, whenever the last one ran (idle moments
        are rare under load, and one missed would leave the heap full until the next)."""
        if self.probe.rss_bytes() - self.rss_after_last < self.IDLE_TRIM_GROWTH:
            return None
        return self.run(full=False, reason="idle")

    @property
    def can_trim(self) -> bool:
        return self._malloc_trim is not None

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.min_interval_s

    def run(self, full: bool = True, reason: str = "threshold") -> CleanupResult | None:
        """Clean up unless another thread is doing it or the last run was too recent; report what it
        did. An idle trim is not held back by the interval (see ``idle_trim``)."""
        idle = reason == "idle"
        if reason not in ("idle", "warning"):  # memory is short: a cleanup line, a wait, a shed
            self.mmap.follow(tight=True)
        if not (idle or self.due()) or not self._lock.acquire(blocking=False):
            return None
        try:
            if not (idle or self.due()):
                return None
            start = time.monotonic()
            before = self.probe.rss_bytes()
            collected = gc.collect() if full else 0
            if self._malloc_trim is not None:
                self._malloc_trim(0)
            after = self.rss_after_last = self.probe.rss_bytes()
            self._last = time.monotonic()
            result = CleanupResult(
                "full" if full else "trim", before, after, collected, self._last - start
            )
            self.runs += 1
            self.reclaimed_bytes += result.reclaimed_bytes
        finally:
            self._lock.release()
        self.events.emit(
            EventKind.CLEANUP,
            reason=reason,
            kind=result.kind,
            reclaimed_mb=round(result.reclaimed_bytes / MB, 1),
            rss_before_mb=round(result.rss_before / MB, 1),
            rss_after_mb=round(result.rss_after / MB, 1),
            collected=result.collected,
            ms=round(result.seconds * 1000, 2),
        )
        return result
