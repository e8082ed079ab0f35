"""Thresholds, levels, and admission with memory reservations.

Admission happens before work starts, because an after-the-fact check (uWSGI's
reload-on-rss, Celery's max-memory-per-child) cannot stop one request from
exhausting memory. Heavy steps reserve what they expect to use; admission
counts the reservations of every worker on the machine, not only this one,
because the cgroup limit is shared and memory that is promised but not yet
allocated is invisible to any reading.
"""
from __future__ import annotations

import enum
import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .probe import MB, MemoryProbe

# The operations guide's fixed thresholds, used when no cgroup limit is visible.
GUIDE_LIMIT_MB, GUIDE_CLEANUP_MB, GUIDE_WARNING_MB = 1500.0, 1200.0, 1000.0
# Shares of a visible cgroup limit.
LIMIT_SHARE, CLEANUP_SHARE, WARNING_SHARE = 0.75, 0.60, 0.50


class Level(enum.IntEnum):
    NORMAL = 0
    WARNING = 1
    CLEANUP = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Thresholds:
    warning_mb: float
    cleanup_mb: float
    limit_mb: float

    @classmethod
    def derive(cls, cgroup_limit_bytes: int | None, limit_mb: float | None = None,
               cleanup_mb: float | None = None, warning_mb: float | None = None) -> "Thresholds":
        """Explicit values win. Missing ones keep the 75/60/50 proportions: of an explicit
        hard limit when one is set, else of the cgroup limit, else the guide's 1500/1200/1000.
        The result is always ordered warning <= cleanup <= limit."""
        if limit_mb is None:
            if cgroup_limit_bytes:
                limit_mb = cgroup_limit_bytes / MB * LIMIT_SHARE
            else:
                limit_mb = GUIDE_LIMIT_MB
        if cleanup_mb is None:
            cleanup_mb = limit_mb * CLEANUP_SHARE / LIMIT_SHARE
        if warning_mb is None:
            warning_mb = limit_mb * WARNING_SHARE / LIMIT_SHARE
        cleanup_mb = min(cleanup_mb, limit_mb)
        warning_mb = min(warning_mb, cleanup_mb)
        return cls(warning_mb=warning_mb, cleanup_mb=cleanup_mb, limit_mb=limit_mb)

    def level(self, used_mb: float) -> Level:
        if used_mb >= self.limit_mb:
            return Level.CRITICAL
        if used_mb >= self.cleanup_mb:
            return Level.CLEANUP
        if used_mb >= self.warning_mb:
            return Level.WARNING
        return Level.NORMAL


class MemoryPressure(Exception):
    """Heavy work was refused because it would take memory over the hard limit."""

    def __init__(self, used_mb: float, limit_mb: float, retry_after_s: int, wanted_mb: float = 0.0) -> None:
        super().__init__(f"memory pressure: {used_mb:.0f} MB used (+{wanted_mb:.0f} MB wanted) of {limit_mb:.0f} MB")
        self.used_mb = used_mb
        self.limit_mb = limit_mb
        self.retry_after_s = retry_after_s
        self.wanted_mb = wanted_mb


class ReservationLedger:
    """Outstanding reservations of every process that inherits this ledger.

    A table of (pid, bytes) slots in shared memory, created before gunicorn
    forks its workers, so that every worker sees the others' promises. Writes
    take a thread lock (this process) and a ``lockf`` record lock (other
    processes; the kernel drops it if a holder dies). Hand-written because the
    standard library's shared-memory tools either need a manager process or
    leave a semaphore locked forever when a worker is killed holding it.
    """

    _SLOT = struct.Struct("qq")

    def __init__(self, slots: int = 256) -> None:
        self._slots = slots
        self._lockfile = tempfile.TemporaryFile(prefix="liroo-ledger-")
        self._lockfile.write(b"\0")
        self._lockfile.flush()
        self._map = mmap.mmap(-1, self._SLOT.size * slots, flags=mmap.MAP_SHARED)
        self._table = memoryview(self._map).cast("q")  # the same memory as int64s, for a fast sum
        self._thread_lock = threading.Lock()
        self._local_slot: tuple[int, int] | None = None  # (pid, index)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.lockf(self._lockfile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._lockfile, fcntl.LOCK_UN)

    def _total_locked(self) -> int:
        # Every slot is (pid, bytes): the byte counts are every second int64.
        return sum(self._table[1::2])

    def total_bytes(self) -> int:
        """Sum of all outstanding reservations (a lock-free read; exact enough for admission at the door)."""
        return self._total_locked()

    def _slot_index(self) -> int:
        pid = os.getpid()
        if self._local_slot and self._local_slot[0] == pid:
            return self._local_slot[1]
        free = None
        for i in range(self._slots):
            spid, value = self._SLOT.unpack_from(self._map, i * self._SLOT.size)
            if spid == pid:
                free = i
                break
            if free is None and (spid == 0 or not _alive(spid)):
                free = i
        if free is None:
            raise RuntimeError("reservation ledger is full")
        self._SLOT.pack_into(self._map, free * self._SLOT.size, pid, 0)
        self._local_slot = (pid, free)
        return free

    def try_add(self, nbytes: int, fits: Callable[[int], bool]) -> bool:
        """Add ``nbytes`` for this process if ``fits(total outstanding)`` says so."""
        with self._locked():
            if not fits(self._total_locked()):
                return False
            self._add_locked(nbytes)
            return True

    def remove(self, nbytes: int) -> None:
        with self._locked():
            self._add_locked(-nbytes)

    def _add_locked(self, nbytes: int) -> None:
        index = self._slot_index()
        pid, value = self._SLOT.unpack_from(self._map, index * self._SLOT.size)
        self._SLOT.pack_into(self._map, index * self._SLOT.size, pid, max(value + nbytes, 0))

    def forget(self, pid: int) -> None:
        """Drop a dead worker's reservations (called by the master when a worker exits)."""
        with self._locked():
            for i in range(self._slots):
                spid, _ = self._SLOT.unpack_from(self._map, i * self._SLOT.size)
                if spid == pid:
                    self._SLOT.pack_into(self._map, i * self._SLOT.size, 0, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reservation:
    """Memory promised to one heavy step; ``grow`` asks for more once the real size is known."""

    def __init__(self, policy: "MemoryPolicy", nbytes: int) -> None:
        self._policy = policy
        self.nbytes = nbytes

    @property
    def mb(self) -> float:
        return self.nbytes / MB

    def grow_to(self, mb: float, wait_s: float = 0.0) -> None:
        """Make the reservation at least ``mb``, waiting up to ``wait_s`` for room; raises MemoryPressure."""
        extra = int(mb * MB) - self.nbytes
        if extra > 0:
            self._policy._acquire(extra, wait_s)
            self.nbytes += extra

    def shrink_to(self, mb: float) -> None:
        """Give back what is no longer needed, at once (e.g. once a response turned out small).

        A step that must wait to grow should first shrink to what it really
        holds, so that steps waiting for each other never hold promises they
        do not use (hold-and-wait is how reservations deadlock).
        """
        surplus = self.nbytes - max(int(mb * MB), 0)
        if surplus > 0:
            self._policy._release(surplus)
            self.nbytes -= surplus

    def release(self) -> None:
        if self.nbytes:
            self._policy._release(self.nbytes)
            self.nbytes = 0


class MemoryPolicy:
    """Decides, from a reading and the outstanding reservations, whether work may start."""

    def __init__(self, probe: MemoryProbe, thresholds: Thresholds, retry_after_s: int = 5,
                 ledger: ReservationLedger | None = None,
                 cleanup: Callable[[], object] | None = None,
                 on_refused: Callable[[MemoryPressure], None] | None = None) -> None:
        self.probe = probe
        self.thresholds = thresholds
        self.retry_after_s = retry_after_s
        self.ledger = ledger or ReservationLedger()
        self._cleanup = cleanup  # called once before refusing a reservation
        self._on_refused = on_refused
        self._released = threading.Condition()
        self.waiting = 0  # heavy steps of this process waiting for room now

    def used_mb(self) -> float:
        return self.probe.used_bytes() / MB

    def outstanding_mb(self) -> float:
        return self.ledger.total_bytes() / MB

    def admits(self, cost_mb: float = 0.0, used_mb: float | None = None) -> bool:
        """Would work costing ``cost_mb`` stay under the hard limit now? (the door's check; reserves nothing)"""
        used = self.used_mb() if used_mb is None else used_mb
        if cost_mb <= 0:
            return used < self.thresholds.limit_mb
        return used + self.ledger.total_bytes() / MB + cost_mb < self.thresholds.limit_mb

    def pressure(self, wanted_mb: float = 0.0, used_mb: float | None = None) -> MemoryPressure:
        return MemoryPressure(self.used_mb() if used_mb is None else used_mb,
                              self.thresholds.limit_mb, self.retry_after_s, wanted_mb)

    @contextmanager
    def reserve(self, mb: float, wait_s: float = 0.0) -> Iterator[Reservation]:
        """Hold ``mb`` of the hard limit for a heavy step; wait up to ``wait_s`` for room.

        Raises MemoryPressure when the room does not come in time.
        """
        nbytes = int(mb * MB)
        self._acquire(nbytes, wait_s)
        reservation = Reservation(self, nbytes)
        try:
            yield reservation
        finally:
            reservation.release()

    def _fits(self, nbytes: int) -> Callable[[int], bool]:
        limit = self.thresholds.limit_mb * MB

        def fits(outstanding: int) -> bool:
            return self.probe.used_bytes() + outstanding + nbytes < limit
        return fits

    def _acquire(self, nbytes: int, wait_s: float) -> None:
        if self.ledger.try_add(nbytes, self._fits(nbytes)):
            return
        if self._cleanup is not None:
            self._cleanup()
            if self.ledger.try_add(nbytes, self._fits(nbytes)):
                return
        deadline = time.monotonic() + wait_s
        with self._released:
            self.waiting += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pressure = self.pressure(nbytes / MB)
                    if self._on_refused is not None:
                        self._on_refused(pressure)
                    raise pressure
                # Releases in this process wake us at once; other workers' releases
                # and memory falling are seen at the next look, 50 ms later at most.
                with self._released:
                    self._released.wait(min(remaining, 0.05))
                if self.ledger.try_add(nbytes, self._fits(nbytes)):
                    return
        finally:
            with self._released:
                self.waiting -= 1

    def _release(self, nbytes: int) -> None:
        self.ledger.remove(nbytes)
        with self._released:
            self._released.notify_all()
