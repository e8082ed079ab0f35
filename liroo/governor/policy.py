"""The policy: the door (admit) and heavy steps' reservations (reserve), on the rule in rule.py.

Its parts, each in its own module: the rule (``rule.fits``), the ledger of
every worker's unspent promises (ledger.py), the pledges and reservations
(pledges.py: a request's pledge is its own), and fair turns (turns.py: the
door's line and the order of waiting steps). This module only puts them in
order: a request is admitted when its cost fits and no one is ahead of it; a
step takes its request's pledge first and the rest only when it fits and it is
its turn; nothing waits past the end its caller gave it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from . import rule
from .cleanup import Cleaner
from .events import EventKind, Events
from .ledger import ReservationLedger
from .pledges import Pledge, PledgeBook, Reservation
from .probe import MB, MemoryProbe
from .rule import Level, Thresholds
from .turns import AdmissionQueue, FairTurns

__all__ = [
    "DoorDecision",
    "DoorTerms",
    "Level",
    "MemoryPolicy",
    "MemoryPressure",
    "Pledge",
    "Reservation",
    "ReservationLedger",
    "Thresholds",
]

_DOOR_POLL_S = 0.02
_RESERVE_POLL_S = 0.05


class MemoryPressure(Exception):
    """Heavy work was refused because it would take memory over the hard limit."""

    def __init__(
        self, used_mb: float, limit_mb: float, retry_after_s: int, wanted_mb: float = 0.0
    ) -> None:
        super().__init__(
            f"memory pressure: {used_mb:.0f} MB used (+{wanted_mb:.0f} MB wanted) of "
            f"{limit_mb:.0f} MB"
        )
        self.used_mb = used_mb
        self.limit_mb = limit_mb
        self.retry_after_s = retry_after_s
        self.wanted_mb = wanted_mb


@dataclass
class DoorDecision:
    admitted: bool
    waited_s: float = 0.0
    queued: bool = False  # it waited in the line (else it was admitted or refused at once)
    queue_full: bool = False  # refused at once: the line, or the caller's share of it, was full
    ahead: int = 0  # requests ahead of it in the line when it entered
    pledge: Pledge | None = None
    # Why it was refused: "no_wait" (no time to wait), "over_limit" (the reading alone),
    # "late" (its place in line would not come in time), "queue_full", "caller_share", "waited".
    refusal: str | None = None


@dataclass(frozen=True)
class DoorTerms:
    """The door's fixed terms: the longest wait in its line (0: refuse at once), the most
    requests waiting there (all workers together), and how many of them one caller may hold
    (None: no share)."""

    wait_s: float
    queue_max: int
    caller_bound: int | None = None


class MemoryPolicy:
    """Decides, from a reading and the outstanding promises, whether work may start."""

    def __init__(
        self,
        probe: MemoryProbe,
        thresholds: Thresholds,
        retry_after_s: int | Callable[[], int] = 5,
        ledger: ReservationLedger | None = None,
        cleaner: Cleaner | None = None,
        events: Events | None = None,
        door: AdmissionQueue | None = None,
    ) -> None:
        self.probe = probe
        self.thresholds = thresholds
        self._retry_after = retry_after_s if callable(retry_after_s) else (lambda: retry_after_s)
        self.ledger = ledger or ReservationLedger()
        self.door = door or AdmissionQueue()
        self.cleaner = cleaner  # runs once before refusing a reservation or queueing at the door
        self.events = events or Events()
        self.turns = FairTurns(self.ledger)
        self.pledges = PledgeBook(self.release)
        self._limit_bytes = thresholds.limit_mb * MB

    @property
    def waiting(self) -> int:
        """Heavy steps of this process waiting for room now."""
        return self.turns.waiting

    @property
    def door_waiting(self) -> int:
        """Requests of this process in the door's line now."""
        return self.turns.door_waiting

    def used_mb(self) -> float:
        return self.probe.used_bytes() / MB

    def outstanding_mb(self) -> float:
        return self.ledger.total_bytes() / MB

    def admits(self, cost_mb: float = 0.0, used_mb: float | None = None) -> bool:
        """Would work costing ``cost_mb`` stay under the hard limit now? (reserves nothing)"""
        used = self.used_mb() if used_mb is None else used_mb
        return rule.fits(used, self.outstanding_mb(), cost_mb, self.thresholds.limit_mb)

    def _fits(self, nbytes: int) -> Callable[[int], bool]:
        """The rule for ``nbytes`` more, given the ledger's total (read under its lock)."""
        return lambda unspent: rule.fits(
            self.probe.used_bytes(), unspent, nbytes, self._limit_bytes
        )

    def pressure(self, wanted_mb: float = 0.0, used_mb: float | None = None) -> MemoryPressure:
        return MemoryPressure(
            self.used_mb() if used_mb is None else used_mb,
            self.thresholds.limit_mb,
            self._retry_after(),
            wanted_mb,
        )

    # --- the door --------------------------------------------------------------
    def admit(
        self,
        cost_mb: float,
        terms: DoorTerms,
        deadline: float | None = None,
        service_s: float | None = None,
        expected_wait: Callable[[int], float | None] | None = None,
        caller: int = 0,
    ) -> DoorDecision:
        """Admit a request costing ``cost_mb`` now, or after waiting its turn in the door's FIFO
        for up to ``terms.wait_s``, and only while its expected service time (``service_s``) still
        fits before its ``deadline`` (a ``time.monotonic()`` instant): rule.wait_end.

        Admitted, it gets a pledge of ``cost_mb`` (release it when the request
        ends). Refused at once when there is no time to wait, the reading alone
        is at the hard limit, the cost alone is over it, ``expected_wait(place)``
        says its turn would come after that end, or the line (``terms.queue_max``
        waiters in every worker; ``terms.caller_bound`` of them ``caller``'s) is
        full; else when the end passes.
        """
        # A cost the hard limit cannot hold even with nothing else in memory: no wait and no
        # cleanup helps, so neither is tried.
        if not rule.fits(0.0, 0.0, cost_mb, self.thresholds.limit_mb):
            return DoorDecision(False, refusal="never_fits")
        wait_s, queue_max = terms.wait_s, terms.queue_max
        nbytes = int(cost_mb * MB)
        if self.door.length() == 0 and (pledge := self._try_pledge(nbytes)):
            return DoorDecision(True, pledge=pledge)
        if self.cleaner is not None:
            self.cleaner.run(full=True, reason="room")
            if self.door.length() == 0 and (pledge := self._try_pledge(nbytes)):
                return DoorDecision(True, pledge=pledge)
        now = time.monotonic()
        wait_end = rule.wait_end(now, wait_s, deadline, service_s)
        if wait_end <= now or queue_max <= 0:
            return DoorDecision(False, refusal="no_wait")
        # Over the hard limit by the reading alone, no promise ending can make room:
        # refuse at once, as for any request, rather than hold the client for nothing.
        if not self.admits(0.0):
            return DoorDecision(False, refusal="over_limit")
        ahead = self.door.length()
        expected = expected_wait(ahead) if expected_wait is not None else None
        if expected is not None and now + expected > wait_end:
            return DoorDecision(False, refusal="late")
        ticket, full = self.door.enter(queue_max, caller, terms.caller_bound)
        if ticket is None:
            return DoorDecision(False, queue_full=True, refusal=full)
        return self._wait_at_door(ticket, nbytes, now, wait_end, ahead)

    def _wait_at_door(
        self, ticket: int, nbytes: int, start: float, end: float, ahead: int
    ) -> DoorDecision:
        next_purge = start + 1.0
        self.turns.door(+1)
        try:
            while True:
                if self.door.is_first(ticket) and (pledge := self._try_pledge(nbytes)):
                    waited = time.monotonic() - start
                    return DoorDecision(True, waited, True, ahead=ahead, pledge=pledge)
                now = time.monotonic()
                if now >= end:
                    return DoorDecision(False, now - start, True, ahead=ahead, refusal="waited")
                if now >= next_purge:
                    self.door.purge_dead()
                    next_purge = now + 1.0
                self.turns.wait(min(end - now, _DOOR_POLL_S))
        finally:
            self.door.leave(ticket)
            self.turns.door(-1)

    def _try_pledge(self, nbytes: int) -> Pledge | None:
        # A step holding no reservation waits somewhere (rank 0): it goes before newcomers, who
        # count as holding one (turns.FairTurns), or they would take the room it waits for.
        if self.ledger.min_rank() <= 0:
            return None
        if not self.ledger.try_add(nbytes, self._fits(nbytes)):
            return None
        return self.pledges.made(nbytes)

    def adopt_pledge(self, group: str) -> None:
        """Bind the pledge of the request this thread serves to ``group`` (its id)."""
        self.pledges.adopt(group)

    # --- reservations for heavy steps ----------------------------------------------
    @contextmanager
    def reserve(
        self,
        mb: float,
        wait_s: float | None = None,
        group: str | None = None,
        under_way: bool = False,
        deadline: float | None = None,
    ) -> Iterator[Reservation]:
        """Hold ``mb`` of the hard limit for a heavy step, waiting up to ``wait_s`` and never past
        ``deadline`` (a ``time.monotonic()`` instant; neither given: no wait) for room; raises
        MemoryPressure when the room does not come in time. The one signature of reserving:
        ``Governor.reserve`` is this method, ``MemoryReserver`` names it for callers.

        ``group`` (a request id) takes its request's door pledge first, and
        turns fairly with other groups while memory is short. ``under_way``: the
        step finishes work that already holds memory and frees it (an encode, a
        hand-over): it goes before new steps rather than waiting its turn.
        """
        nbytes = int(mb * MB)
        self.acquire(nbytes, rule.step_end(time.monotonic(), wait_s, deadline), group, under_way)
        reservation = Reservation(self, nbytes, group)
        self.turns.holds(group, +1)
        try:
            yield reservation
        finally:
            reservation.release()
            self.turns.holds(group, -1)

    def acquire(self, nbytes: int, end: float, group: str | None, growing: bool = False) -> None:
        """Count ``nbytes`` more in the ledger for ``group``'s request (from its pledge first),
        waiting until ``end`` (``rule.step_end``) for room and its turn, holding nothing meanwhile;
        raises MemoryPressure. For Reservation."""
        if self._take(nbytes, group, pledged_only=True):
            return  # the door promised it already: no turn to wait for
        self._acquire_room(nbytes, end, group, growing)

    def _take(self, nbytes: int, group: str | None, pledged_only: bool = False) -> bool:
        """Count ``nbytes`` more, all or nothing: from the request's own pledge first, the rest
        only if it fits now (never, if ``pledged_only``).

        Never part of it: a step that waits holding some of what it needs keeps others from
        the memory that would let them finish (hold-and-wait; two growing pictures each holding
        half of the door's pledges stalled a 512 MB survival run until their waits ran out).
        """
        with self.pledges.lock:
            pledge = self.pledges.own_locked(group)
            pledged = min(pledge.nbytes, nbytes) if pledge is not None else 0
            rest = nbytes - pledged
            if rest > 0 and (pledged_only or not self.ledger.try_add(rest, self._fits(rest))):
                return False
            if pledged:
                pledge.nbytes -= pledged  # type: ignore[union-attr]
            return True

    def _acquire_room(self, nbytes: int, end: float, group: str | None, growing: bool) -> None:
        # A step that grows, or finishes work under way, holds memory: it never waits its
        # turn behind new steps (finishing it frees memory; making it wait could deadlock).
        def turn(sequence: int | None) -> bool:
            return growing or self.turns.is_turn(sequence, group)

        if turn(None) and self._take(nbytes, group):
            return
        if self.cleaner is not None:
            # A trim, no gc: a step's room is in buffers freed as they go out of scope, and a
            # full collection stops every thread of the worker (a burst of narrations ran ~30 of
            # them, tens of ms each). The door still collects before it refuses a request.
            self.cleaner.run(full=False, reason="room")
            if turn(None) and self._take(nbytes, group):
                return
        # It waits holding nothing: what is left of its request's pledge goes back, so that room
        # promised to requests whose steps wait can combine for the step whose turn comes first
        # (with every admitted request sitting on a pledge smaller than its first step, none
        # could start: a 512 MB survival burst served 5 of 30). The door lets no newcomer in
        # while such a step waits (see _try_pledge).
        self.pledges.forfeit(group)
        sequence = self.turns.start_waiting(group, growing)
        try:
            while True:
                if turn(sequence) and self._take(nbytes, group):
                    return
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise self._refused(nbytes)
                if self.cleaner is not None and self.cleaner.due():
                    # What siblings freed may sit in the heap (MmapThreshold): hand it back.
                    if self.cleaner.run(full=False, reason="room") is not None:
                        continue
                # Releases in this process wake us at once; other workers' releases
                # and memory falling are seen at the next look, 50 ms later at most.
                self.turns.wait(min(remaining, _RESERVE_POLL_S))
        finally:
            self.turns.stop_waiting(sequence)

    def _refused(self, nbytes: int) -> MemoryPressure:
        pressure = self.pressure(nbytes / MB)
        self.events.emit(
            EventKind.REFUSED,
            wanted_mb=round(pressure.wanted_mb, 1),
            used_mb=round(pressure.used_mb, 1),
            limit_mb=round(pressure.limit_mb, 1),
            outstanding_mb=round(self.outstanding_mb(), 1),
        )
        return pressure

    def release(self, nbytes: int) -> None:
        """Stop counting ``nbytes`` of this process's promises and wake its waiters. For Reservation
        and Pledge."""
        self.ledger.remove(nbytes)
        self.turns.notify()
