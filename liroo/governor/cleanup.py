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
    """Runs cleanups, at most one at a time and one per interval; counts what they reclaim."""

    def __init__(
        self, probe: MemoryProbe, min_interval_s: float = 1.0, events: Events | None = None
    ) -> None:
        self.probe = probe
        self.events = events or Events()
        self.min_interval_s = min_interval_s
        self._malloc_trim = _load_malloc_trim()
        self._lock = threading.Lock()
        self._last = -float("inf")
        self.runs = 0
        self.reclaimed_bytes = 0

    @property
    def can_trim(self) -> bool:
        return self._malloc_trim is not None

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.min_interval_s

    def run(self, full: bool = True, reason: str = "threshold") -> CleanupResult | None:
        """Clean up unless another thread is doing it or the last run was too recent; report what it
        did."""
        if not self.due() or not self._lock.acquire(blocking=False):
            return None
        try:
            if not self.due():
                return None
            start = time.monotonic()
            before = self.probe.rss_bytes()
            collected = gc.collect() if full else 0
            if self._malloc_trim is not None:
                self._malloc_trim(0)
            after = self.probe.rss_bytes()
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
