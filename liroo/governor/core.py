"""The governor: one object per process tree that owns the readings, thresholds,
reservations, cleanups and counters, and tells listeners what it did."""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol

from . import rule
from .cleanup import Cleaner, CleanupResult, MmapThreshold
from .events import EventKind, Events, GovernorEvent, Listener
from .ledger import ReservationLedger
from .pledges import Reservation
from .policy import DoorDecision, DoorTerms, MemoryPolicy
from .probe import MB, MemoryProbe
from .rule import Level, Thresholds
from .timings import ALL_ROUTES, ServiceTimes
from .turns import caller_tag


@dataclass(frozen=True)
class GovernorConfig:
    """The governor's few settings; ``None`` thresholds are derived from the cgroup limit."""

    limit_mb: float | None = None
    cleanup_mb: float | None = None
    warning_mb: float | None = None
    cleanup_min_interval_s: float = 1.0
    retry_after_s: int = 5
    recycle_mb: float | None = None  # None: half the hard limit
    recycle_strikes: int = 3
    recycle_min_age_s: float = 10.0
    recycle_check_interval_s: float = 5.0
    # glibc's mmap threshold while memory is tight (at or above the cleanup line; below it
    # 32 MB); 0: leave glibc's moving threshold alone (see cleanup.MmapThreshold)
    mmap_threshold_kb: int = 8192
    # Longest a costed request waits in the door's line (0: refuse at once); a deadline
    # ends it sooner (deadline minus expected service)
    admission_wait_s: float = 40.0
    admission_queue: int = 32  # most requests waiting in the line, all workers together
    admission_caller_share: float = 0.5  # of the line's places, the most one caller may hold
    # Deadlines (None: off, today's fixed waits and Retry-After): the time a request's answer
    # must be sent by, for routes with a state-changing method, and for the rest.
    deadline_s: float | None = None
    read_deadline_s: float | None = None


class MemoryReserver(Protocol):
    """What generation needs from the governor: memory for a heavy step, or MemoryPressure."""

    # Called as MemoryPolicy.reserve, the one place its signature and meaning are written.
    reserve: Callable[..., ContextManager[Reservation]]

    def adopt_pledge(self, group: str) -> None: ...


class Governor:
    """Readings, thresholds, reservations, cleanup and counters for one service.

    Its parts (probe, policy, cleaner) report what they do as events
    (``EventKind``); the governor counts them for ``snapshot`` as the first
    listener, and its users (the middleware, the recycler, the app) go through
    the methods below rather than through its parts.
    """

    def __init__(
        self, config: GovernorConfig | None = None, probe: MemoryProbe | None = None
    ) -> None:
        self.config = config or GovernorConfig()
        self.probe = probe or MemoryProbe()
        self.thresholds = Thresholds.derive(
            self.probe.limit_bytes,
            self.config.limit_mb,
            self.config.cleanup_mb,
            self.config.warning_mb,
        )
        self.events = Events()
        self.events.subscribe(self._count_event)
        self.mmap = MmapThreshold(self.config.mmap_threshold_kb)
        self.mmap.follow(tight=False)
        self.cleaner = Cleaner(
            self.probe, self.config.cleanup_min_interval_s, self.events, self.mmap
        )
        self.timings = ServiceTimes()
        self.deadlines = self.config.deadline_s is not None
        self.policy = MemoryPolicy(
            self.probe,
            self.thresholds,
            self.retry_after_s,
            ReservationLedger(),
            cleaner=self.cleaner,
            events=self.events,
        )
        self.door_terms = DoorTerms(
            self.config.admission_wait_s,
            self.config.admission_queue,
            rule.caller_slots(self.config.admission_queue, self.config.admission_caller_share),
        )
        # Memory for a heavy step, or MemoryPressure: the policy's own method, its signature
        # written once (MemoryPolicy.reserve).
        self.reserve = self.policy.reserve
        self._warning_bytes = self.thresholds.warning_mb * MB
        self._cleanup_bytes = self.thresholds.cleanup_mb * MB
        self.limit_bytes = self.thresholds.limit_mb * MB
        # The probe's own bound method, so the middleware's one reading per request costs no extra
        # call.
        self.used_bytes = self.probe.used_bytes
        self.recycle_mb = (
            self.config.recycle_mb
            if self.config.recycle_mb is not None
            else self.thresholds.limit_mb / 2
        )
        self._count_lock = threading.Lock()
        self.started_at = time.monotonic()
        self.pid = os.getpid()
        self.requests_served = 0
        self.shed_count = 0
        self.refused_reservations = 0
        self.recycles = 0
        self._reset_door_counters()
        if hasattr(os, "register_at_fork"):
            # A weak reference, so the hook does not keep a discarded governor (and its files)
            # alive.
            ref = weakref.ref(self)
            os.register_at_fork(
                after_in_child=lambda: (g := ref()) is not None and g._reset_after_fork()
            )

    def _reset_after_fork(self) -> None:
        # Counters and age are per worker; the ledger stays shared on purpose.
        self.started_at = time.monotonic()
        self.pid = os.getpid()
        self.requests_served = self.shed_count = self.refused_reservations = self.recycles = 0
        self.cleaner.runs = self.cleaner.reclaimed_bytes = 0
        self._reset_door_counters()

    def _reset_door_counters(self) -> None:
        self.door_queued = self.door_admitted_after_wait = self.door_shed_after_wait = (
            self.door_shed_full
        ) = self.door_shed_late = 0
        self.door_wait_s_total = self.door_wait_s_max = 0.0

    def count_request(self) -> None:
        # Under a lock: "+= 1" from 20 threads loses counts, and max_requests recycling reads this.
        with self._count_lock:
            self.requests_served += 1

    # --- events and counters ----------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self.events.subscribe(listener)

    def _count_event(self, event: GovernorEvent) -> None:
        # The first listener: the counters /memory shows follow the events. (The door's
        # figures are counted in admit, from the unrounded wait.)
        kind = event.kind
        if kind is EventKind.SHED:
            with self._count_lock:
                self.shed_count += 1
        elif kind is EventKind.REFUSED:
            with self._count_lock:
                self.refused_reservations += 1
        elif kind is EventKind.RECYCLE:
            with self._count_lock:
                self.recycles += 1

    def shed(self, path: str, cost_mb: float, request_id: str, waited_s: float = 0.0) -> float:
        """Count and report a request refused with 503; returns the reading (MB) to show the
        client."""
        used = self.used_mb()
        self.events.emit(
            EventKind.SHED,
            path=path,
            used_mb=round(used, 1),
            limit_mb=round(self.thresholds.limit_mb, 1),
            cost_mb=cost_mb,
            request_id=request_id,
            waited_s=round(waited_s, 3),
        )
        return used

    def retiring(self, reason: str, **figures) -> None:
        """Count and report that this worker is retiring (the recycler's decision)."""
        self.events.emit(EventKind.RECYCLE, reason=reason, pid=self.pid, **figures)

    def read_rss_mb(self) -> float:
        """This process's RSS in MB, reported to listeners (the recycler's periodic reading)."""
        rss_mb = self.probe.rss_bytes() / MB
        self.events.emit(EventKind.RSS, rss_mb=round(rss_mb, 1))
        return rss_mb

    # --- the small interface for heavy work (and reserve, set in __init__) -----
    def adopt_pledge(self, group: str) -> None:
        """Make the door's pledge of the request this thread serves ``group``'s (its id), so its
        steps in other threads take it (see pledges.py)."""
        self.policy.adopt_pledge(group)

    def outstanding_mb(self) -> float:
        """Memory promised and not yet allocated, every worker together."""
        return self.policy.outstanding_mb()

    def waiting_reservations(self) -> int:
        """Heavy steps of this process waiting for room now."""
        return self.policy.waiting

    def forget_worker(self, pid: int) -> None:
        """Drop a dead worker's promises (called by the master when a worker exits)."""
        self.policy.ledger.forget(pid)
        self.timings.forget(pid)

    # --- the door ------------------------------------------------------------------
    def admit(
        self,
        cost_mb: float,
        deadline: float | None = None,
        route: str | None = None,
        caller: str | None = None,
    ) -> DoorDecision:
        """Admit a request costing ``cost_mb``, waiting in the door's line if it does not fit now.

        With a ``deadline`` (a ``time.monotonic()`` instant) it waits no longer than the deadline
        minus ``route``'s expected service time, and is refused at once when its place in line
        says it would not be let in by then. ``caller`` (a key or an address) may hold only its
        share of the line's places.
        """
        decision = self.policy.admit(
            cost_mb,
            self.door_terms,
            deadline,
            self.timings.expected_s(route) if deadline is not None and route else None,
            expected_wait=self.expected_wait_s if deadline is not None else None,
            caller=caller_tag(caller),
        )
        self._count_door(decision, cost_mb)
        if decision.admitted and decision.queued:
            self.timings.record_line_wait(decision.waited_s, decision.ahead)
        return decision

    def _count_door(self, decision: DoorDecision, cost_mb: float) -> None:
        if not (decision.queued or decision.queue_full or decision.refusal == "late"):
            return
        with self._count_lock:
            if decision.refusal == "late":
                self.door_shed_late += 1
            elif decision.queue_full:
                self.door_shed_full += 1
            else:
                self.door_queued += 1
                self.door_wait_s_total += decision.waited_s
                self.door_wait_s_max = max(self.door_wait_s_max, decision.waited_s)
                if decision.admitted:
                    self.door_admitted_after_wait += 1
                else:
                    self.door_shed_after_wait += 1
        self.events.emit(
            EventKind.QUEUED,
            admitted=decision.admitted,
            waited_s=round(decision.waited_s, 3),
            queue_full=decision.queue_full,
            cost_mb=cost_mb,
            refusal=decision.refusal,
        )

    def expected_wait_s(self, place: int) -> float | None:
        """How long a request with ``place`` requests ahead of it is expected to wait at the door
        (rule.drain_wait_s): by the line's measured time per place, or by the service times of
        the requests running, whichever is sooner; None while nothing is measured.

        Service times alone overestimate: the line moves when memory frees, often before a
        request ends (refusing by them served fewer users than not refusing: README, "Answer in
        time"). The line's own figure alone could stick: a newcomer refused for it never waits,
        so never corrects it; the running requests' figure stays fresh."""
        waits = []
        if (service_s := self.timings.expected_s(ALL_ROUTES)) is not None:
            waits.append(rule.drain_wait_s(place, service_s, self.timings.running()))
        if (place_s := self.timings.line_place_s()) is not None:
            waits.append(rule.drain_wait_s(place, place_s, 1))
        return min(waits, default=None)

    def retry_after_s(self, place: int | None = None) -> int:
        """``Retry-After`` for a refusal: the expected wait of a request at ``place`` (default: the
        back of the line), rounded up; LIROO_RETRY_AFTER_S with deadlines off or nothing
        measured."""
        if not self.deadlines:
            return self.config.retry_after_s
        place = self.queue_length() if place is None else place
        return rule.retry_after_s(self.expected_wait_s(place), self.config.retry_after_s)

    def expected_service_s(self, route: str) -> float | None:
        """The route's learned service time (admission to close, every worker), or None."""
        return self.timings.expected_s(route)

    def register_route(self, route: str) -> None:
        """Give a costed route its own service-time average (before workers fork)."""
        self.timings.register(route)

    def service_began(self) -> None:
        """A costed request was admitted (the drain rate counts it as running)."""
        self.timings.started(+1)

    def service_ended(self, route: str, seconds: float | None) -> None:
        """A costed request closed; ``seconds`` from admission, when it measured a full service.
        The last of this worker's: the heap's free pages go back (``MmapThreshold``,
        ``Cleaner.idle_trim``)."""
        idle = self.timings.started(-1) == 0
        if seconds is not None:
            self.timings.record(route, seconds)
        if idle and not self.mmap.tight:
            self.cleaner.idle_trim()

    def admits(self, cost_mb: float = 0.0) -> bool:
        """Would work costing ``cost_mb`` stay under the hard limit now? (a fresh reading; reserves
        nothing)"""
        return self.policy.admits(cost_mb)

    def queue_length(self) -> int:
        """Requests waiting at the door now, every worker together."""
        return self.policy.door.length()

    # --- readings --------------------------------------------------------------
    def used_mb(self) -> float:
        return self.used_bytes() / MB

    def reserved_bytes(self) -> int:
        """The ledger's total: promises of every worker not yet allocated."""
        return self.policy.ledger.total_bytes()

    def level(self, used_mb: float | None = None) -> Level:
        return self.thresholds.level(self.used_mb() if used_mb is None else used_mb)

    # --- cleanup -----------------------------------------------------------------
    def cleanup(self, full: bool, reason: str) -> CleanupResult | None:
        return self.cleaner.run(full=full, reason=reason)

    def after_response(self) -> None:
        """Clean up after a response when memory is high: trim at warning, gc + trim at the cleanup
        line.

        The latest reading (taken at this or another request's admission) decides
        whether a fresh one is worth taking: under load it is a few milliseconds
        old, and below the warning line there is nothing to do either way.
        """
        last = self.probe.last_used_bytes
        self.mmap.follow(tight=last >= self._cleanup_bytes)
        if last < self._warning_bytes or not self.cleaner.due():
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
            "outstanding_reservations_mb": round(self.outstanding_mb(), 2),
            "waiting_reservations": self.waiting_reservations(),
            "admission": {
                "queue_length": self.queue_length(),  # every worker
                "queue_max": self.config.admission_queue,
                "wait_max_s": self.config.admission_wait_s,
                "waiting_here": self.policy.door_waiting,  # this worker, as the rest below
                "queued": self.door_queued,
                "admitted_after_wait": self.door_admitted_after_wait,
                "shed_after_wait": self.door_shed_after_wait,
                "shed_queue_full": self.door_shed_full,
                "shed_late": self.door_shed_late,
                "caller_share": self.config.admission_caller_share,
                "service_s": _rounded(self.timings.expected_s(ALL_ROUTES)),
                "running": self.timings.running(),  # costed requests, every worker
                "line_place_s": _rounded(self.timings.line_place_s()),
                "retry_after_s": self.retry_after_s(),
                "wait_seconds_total": round(self.door_wait_s_total, 3),
                "longest_wait_s": round(self.door_wait_s_max, 3),
            },
            "recycles": self.recycles,
            "recycle_rss_mb": round(self.recycle_mb, 1),
            "malloc_trim": self.cleaner.can_trim,
            "mmap_threshold_pinned": self.mmap.pinned,
            "mmap_threshold_kb": self.mmap.kb,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Unreserved:
    """A reserver that always says yes: used when the governor is switched off."""

    def reserve(self, mb: float, *_: object, **__: object) -> ContextManager[Reservation]:
        """Room at once, whatever the wait asked (MemoryPolicy.reserve's arguments)."""
        return nullcontext(_NullReservation())

    def adopt_pledge(self, group: str) -> None:
        return None


class _NullReservation:
    nbytes = 0
    mb = 0.0

    def hold(self, mb: float) -> None:
        return None

    def grow_to(self, mb: float, wait_s: float | None = 0.0, deadline: float | None = None) -> None:
        return None

    def shrink_to(self, mb: float) -> None:
        return None

    def release(self) -> None:
        return None
