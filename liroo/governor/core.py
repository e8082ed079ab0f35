"""The governor: one object per process tree that owns the readings, thresholds,
reservations, cleanups and counters, and tells listeners what it did."""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Protocol

from .cleanup import Cleaner, CleanupResult, pin_mmap_threshold
from .policy import DoorDecision, Level, MemoryPolicy, MemoryPressure, ReservationLedger, Reservation, Thresholds
from .probe import MB, MemoryProbe

log = logging.getLogger("liroo.governor")


@dataclass(frozen=True)
class GovernorConfig:
    """The governor's few settings; ``None`` thresholds are derived from the cgroup limit."""
    limit_mb: float | None = None
    cleanup_mb: float | None = None
    warning_mb: float | None = None
    cleanup_min_interval_s: float = 1.0
    retry_after_s: int = 5
    recycle_mb: float | None = None       # None: half the hard limit
    recycle_strikes: int = 3
    recycle_min_age_s: float = 10.0
    recycle_check_interval_s: float = 5.0
    mmap_threshold_kb: int = 128          # 0: leave glibc's moving threshold alone (see cleanup.pin_mmap_threshold)
    admission_wait_s: float = 15.0        # longest a costed request waits in the door's line (0: refuse at once)
    admission_queue: int = 32             # most requests waiting in the line, all workers together


@dataclass(frozen=True)
class GovernorEvent:
    kind: str                       # "shed", "queued" (a wait at the door ended), "cleanup", "refused"
                                    # (a reservation), "recycle" or "rss" (a reading)
    figures: dict = field(default_factory=dict)


class MemoryReserver(Protocol):
    """What generation needs from the governor: memory for a heavy step, or MemoryPressure."""

    def reserve(self, mb: float, wait_s: float = 0.0, group: str | None = None) -> ContextManager[Reservation]: ...


class Governor:
    """Readings, thresholds, reservations, cleanup and counters for one service."""

    def __init__(self, config: GovernorConfig | None = None, probe: MemoryProbe | None = None) -> None:
        self.config = config or GovernorConfig()
        self.probe = probe or MemoryProbe()
        self.thresholds = Thresholds.derive(
            self.probe.limit_bytes, self.config.limit_mb, self.config.cleanup_mb, self.config.warning_mb)
        self.cleaner = Cleaner(self.probe, self.config.cleanup_min_interval_s)
        self.mmap_threshold_pinned = pin_mmap_threshold(self.config.mmap_threshold_kb)
        self.policy = MemoryPolicy(self.probe, self.thresholds, self.config.retry_after_s,
                                   ReservationLedger(), cleanup=self._cleanup_for_room,
                                   on_refused=self._on_refused)
        self._warning_bytes = self.thresholds.warning_mb * MB
        self.recycle_mb = self.config.recycle_mb if self.config.recycle_mb is not None else self.thresholds.limit_mb / 2
        self._listeners: list[Callable[[GovernorEvent], None]] = []
        self._count_lock = threading.Lock()
        self.started_at = time.monotonic()
        self.pid = os.getpid()
        self.requests_served = 0
        self.shed_count = 0
        self.refused_reservations = 0
        self.recycles = 0
        self._reset_door_counters()
        if hasattr(os, "register_at_fork"):
            # A weak reference, so the hook does not keep a discarded governor (and its files) alive.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (g := ref()) is not None and g._reset_after_fork())

    def _reset_after_fork(self) -> None:
        # Counters and age are per worker; the ledger stays shared on purpose.
        self.started_at = time.monotonic()
        self.pid = os.getpid()
        self.requests_served = self.shed_count = self.refused_reservations = self.recycles = 0
        self.cleaner.runs = self.cleaner.reclaimed_bytes = 0
        self._reset_door_counters()

    def _reset_door_counters(self) -> None:
        self.door_queued = self.door_admitted_after_wait = self.door_shed_after_wait = self.door_shed_full = 0
        self.door_wait_s_total = self.door_wait_s_max = 0.0

    def count_request(self) -> None:
        # Under a lock: "+= 1" from 20 threads loses counts, and max_requests recycling reads this.
        with self._count_lock:
            self.requests_served += 1

    # --- listeners -----------------------------------------------------------
    def subscribe(self, listener: Callable[[GovernorEvent], None]) -> None:
        self._listeners.append(listener)

    def emit(self, kind: str, /, **figures) -> None:
        event = GovernorEvent(kind, figures)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break admission
                log.exception("governor listener failed")

    def count(self, name: str) -> None:
        with self._count_lock:
            setattr(self, name, getattr(self, name) + 1)

    # --- the small interface for heavy work -----------------------------------
    def reserve(self, mb: float, wait_s: float = 0.0, group: str | None = None) -> ContextManager[Reservation]:
        """Hold ``mb`` for a heavy step, waiting up to ``wait_s``; raises MemoryPressure.

        ``group`` (a request id) shares turns fairly with other requests while memory is short."""
        return self.policy.reserve(mb, wait_s, group)

    # --- the door ------------------------------------------------------------------
    def admit(self, cost_mb: float) -> DoorDecision:
        """Admit a request costing ``cost_mb``, waiting in the door's line if it does not fit now."""
        decision = self.policy.admit(cost_mb, self.config.admission_wait_s, self.config.admission_queue)
        if decision.queued or decision.queue_full:
            with self._count_lock:
                if decision.queue_full:
                    self.door_shed_full += 1
                else:
                    self.door_queued += 1
                    self.door_wait_s_total += decision.waited_s
                    self.door_wait_s_max = max(self.door_wait_s_max, decision.waited_s)
                    if decision.admitted:
                        self.door_admitted_after_wait += 1
                    else:
                        self.door_shed_after_wait += 1
            self.emit("queued", admitted=decision.admitted, waited_s=round(decision.waited_s, 3),
                      queue_full=decision.queue_full, cost_mb=cost_mb)
        return decision

    def _on_refused(self, pressure: MemoryPressure) -> None:
        self.count("refused_reservations")
        self.emit("refused", wanted_mb=round(pressure.wanted_mb, 1), used_mb=round(pressure.used_mb, 1),
                  limit_mb=round(pressure.limit_mb, 1), outstanding_mb=round(self.policy.outstanding_mb(), 1))

    # --- readings --------------------------------------------------------------
    def used_mb(self) -> float:
        return self.probe.used_bytes() / MB

    def level(self, used_mb: float | None = None) -> Level:
        return self.thresholds.level(self.used_mb() if used_mb is None else used_mb)

    # --- cleanup -----------------------------------------------------------------
    def _cleanup_for_room(self) -> None:
        self.cleanup(full=True, reason="room")

    def cleanup(self, full: bool, reason: str) -> CleanupResult | None:
        result = self.cleaner.run(full=full)
        if result is not None:
            self.emit("cleanup", reason=reason, kind=result.kind,
                      reclaimed_mb=round(result.reclaimed_bytes / MB, 1),
                      rss_before_mb=round(result.rss_before / MB, 1), rss_after_mb=round(result.rss_after / MB, 1),
                      collected=result.collected, ms=round(result.seconds * 1000, 2))
        return result

    def after_response(self) -> None:
        """Clean up after a response when memory is high: trim at warning, gc + trim at the cleanup line.

        The latest reading (taken at this or another request's admission) decides
        whether a fresh one is worth taking: under load it is a few milliseconds
        old, and below the warning line there is nothing to do either way.
        """
        if self.probe.last_used_bytes < self._warning_bytes or not self.cleaner.due():
            return
        used = self.probe.used_bytes() / MB
        if used >= self.thresholds.cleanup_mb:
            self.cleanup(full=True, reason="threshold")
        elif used >= self.thresholds.warning_mb:
            self.cleanup(full=False, reason="warning")

    def snapshot(self) -> dict:
        """Counters and figures for /memory (not for the hot path)."""
        used = self.used_mb()
        return {
            "level": self.level(used).label,
            "used_mb": round(used, 2),
            "thresholds_mb": {
                "warning": round(self.thresholds.warning_mb, 1),
                "cleanup": round(self.thresholds.cleanup_mb, 1),
                "limit": round(self.thresholds.limit_mb, 1),
            },
            "shed_count": self.shed_count,
            "refused_reservations": self.refused_reservations,
            "cleanups": self.cleaner.runs,
            "reclaimed_mb": round(self.cleaner.reclaimed_bytes / MB, 2),
            "outstanding_reservations_mb": round(self.policy.outstanding_mb(), 2),
            "waiting_reservations": self.policy.waiting,
            "admission": {
                "queue_length": self.policy.door.length(),      # every worker
                "queue_max": self.config.admission_queue,
                "wait_max_s": self.config.admission_wait_s,
                "waiting_here": self.policy.door_waiting,       # this worker, as the rest below
                "queued": self.door_queued,
                "admitted_after_wait": self.door_admitted_after_wait,
                "shed_after_wait": self.door_shed_after_wait,
                "shed_queue_full": self.door_shed_full,
                "wait_seconds_total": round(self.door_wait_s_total, 3),
                "longest_wait_s": round(self.door_wait_s_max, 3),
            },
            "recycles": self.recycles,
            "recycle_rss_mb": round(self.recycle_mb, 1),
            "malloc_trim": self.cleaner.can_trim,
            "mmap_threshold_pinned": self.mmap_threshold_pinned,
        }


class Unreserved:
    """A reserver that always says yes: used when the governor is switched off."""

    def reserve(self, mb: float, wait_s: float = 0.0, group: str | None = None) -> ContextManager[Reservation]:
        from contextlib import nullcontext
        return nullcontext(_NullReservation())


class _NullReservation:
    nbytes = 0
    mb = 0.0

    def hold(self, mb: float) -> None:
        return None

    def grow_to(self, mb: float, wait_s: float = 0.0) -> None:
        return None

    def shrink_to(self, mb: float) -> None:
        return None

    def release(self) -> None:
        return None
