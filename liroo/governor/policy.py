"""Thresholds, levels, and admission with memory reservations.

Admission happens before work starts, because an after-the-fact check (uWSGI's
reload-on-rss, Celery's max-memory-per-child) cannot stop one request from
exhausting memory. Heavy steps reserve what they expect to use; admission
counts the reservations of every worker on the machine, not only this one,
because the cgroup limit is shared and memory that is promised but not yet
allocated is invisible to any reading.

The accounting invariant: every byte is counted once.
    admitted  <=>  used + unspent + cost < hard limit
``used`` is the reading (everything allocated now, every worker). ``unspent``
is the ledger's total: the part of each promise that its holder has not yet
allocated. A promise is counted in the ledger until its holder says it holds
the memory (``Reservation.hold``), and from then on only in the reading, so
a reservation whose bytes are allocated is no longer counted twice. What a
holder declares must be memory it really holds at that moment (an object it
has in hand, e.g. a model's answer): declaring more than it holds is the one
way to undercount. A transient allocation (a decode in progress) stays
promised until the step releases it; the double count then lasts for that
step only. Pledges made at the door (``pledge``) are promises too: the first
reservations of the pledging process convert them rather than add to them.

The door's queue (``AdmissionQueue``) is one FIFO for the whole instance:
tickets are numbered in shared memory, only the oldest live ticket may be
admitted, and the bound counts the waiters of every worker. Each waiting
thread polls (every 20 ms, at once when its own process releases memory),
because a waiter in another worker cannot be woken directly.
"""

from __future__ import annotations

import enum
import os
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .cleanup import Cleaner
from .events import EventKind, Events
from .probe import MB, MemoryProbe
from .shared import SharedTable

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
    def derive(
        cls,
        cgroup_limit_bytes: int | None,
        limit_mb: float | None = None,
        cleanup_mb: float | None = None,
        warning_mb: float | None = None,
    ) -> "Thresholds":
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


class ReservationLedger:
    """Outstanding reservations of every process that inherits this ledger.

    A table of (pid, bytes, rank) slots in shared memory, created before
    gunicorn forks its workers, so that every worker sees the others'
    promises. ``rank`` is what the process's most deserving waiter holds
    (see MemoryPolicy: fewest reservations first), so turns are fair across
    workers too. Writes hold the table's lock (``shared.SharedTable``).
    """

    _SLOT = struct.Struct("qqq")
    NO_RANK = 1 << 62  # the rank of a process with no one waiting

    def __init__(self, slots: int = 256) -> None:
        self._slots = slots
        self._shared = SharedTable(self._SLOT.size * slots, "ledger")
        self._map = self._shared.buffer
        self._locked = self._shared.locked
        self._table = memoryview(self._map).cast("q")  # the same memory as int64s, for a fast sum
        self._local_slot: tuple[int, int] | None = None  # (pid, index)

    def _total_locked(self) -> int:
        # Every slot is (pid, bytes, rank): the byte counts are every third int64.
        return sum(self._table[1::3])

    def total_bytes(self) -> int:
        """Sum of all outstanding reservations (a lock-free read; exact enough for admission at the
        door)."""
        return self._total_locked()

    def min_rank(self) -> int:
        """The smallest rank any live process has published (a lock-free read)."""
        table = self._table
        return min(
            (table[i + 2] for i in range(0, 3 * self._slots, 3) if table[i]), default=self.NO_RANK
        )

    def publish_rank(self, rank: int) -> None:
        with self._locked():
            self._table[3 * self._slot_index() + 2] = rank

    def _slot_index(self) -> int:
        pid = os.getpid()
        if self._local_slot and self._local_slot[0] == pid:
            return self._local_slot[1]
        free = None
        for i in range(self._slots):
            spid, _, _ = self._SLOT.unpack_from(self._map, i * self._SLOT.size)
            if spid == pid:
                free = i
                break
            if free is None and (spid == 0 or not _alive(spid)):
                free = i
        if free is None:
            raise RuntimeError("reservation ledger is full")
        self._SLOT.pack_into(self._map, free * self._SLOT.size, pid, 0, self.NO_RANK)
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
        self._table[3 * index + 1] = max(self._table[3 * index + 1] + nbytes, 0)

    def forget(self, pid: int) -> None:
        """Drop a dead worker's reservations (called by the master when a worker exits)."""
        with self._locked():
            for i in range(self._slots):
                spid, _, _ = self._SLOT.unpack_from(self._map, i * self._SLOT.size)
                if spid == pid:
                    self._SLOT.pack_into(self._map, i * self._SLOT.size, 0, 0, self.NO_RANK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AdmissionQueue:
    """The door's FIFO, one for every worker that inherits it (made before gunicorn forks).

    A table of (pid, ticket) slots in shared memory after a header holding the
    last ticket given. Entering and leaving take the same two locks as the
    ledger; "am I first?" is a lock-free read. A worker killed while its
    threads waited leaves tickets behind; waiters that are kept back for long
    drop tickets of dead processes (``purge_dead``) so the line never stalls.
    """

    def __init__(self, slots: int = 512) -> None:
        self._slots = slots
        self._shared = SharedTable(16 * (slots + 1), "door")
        self._map = self._shared.buffer
        self._locked = self._shared.locked
        # [last ticket, waiters, pid, ticket, pid, ticket, ...]
        self._table = memoryview(self._map).cast("q")

    def length(self) -> int:
        """Requests waiting at the door now, in every worker (a lock-free read of a count kept under
        the lock)."""
        return self._table[1]

    def enter(self, bound: int) -> int | None:
        """A ticket at the back of the line, or None when ``bound`` requests already wait."""
        with self._locked():
            if self.length() >= bound:
                self._purge_dead_locked()
                if self.length() >= bound:
                    return None
            free = next((i for i in range(self._slots) if not self._table[2 * i + 3]), None)
            if free is None:
                return None
            ticket = self._table[0] + 1
            self._table[0] = ticket
            self._table[2 * free + 2] = os.getpid()
            self._table[2 * free + 3] = ticket
            self._table[1] += 1
            return ticket

    def is_first(self, ticket: int) -> bool:
        return min((t for t in self._table[3::2] if t), default=ticket) == ticket

    def leave(self, ticket: int) -> None:
        with self._locked():
            for i in range(self._slots):
                if self._table[2 * i + 3] == ticket:
                    self._table[2 * i + 2] = self._table[2 * i + 3] = 0
                    self._table[1] -= 1
                    return

    def purge_dead(self) -> None:
        with self._locked():
            self._purge_dead_locked()

    def _purge_dead_locked(self) -> None:
        for i in range(self._slots):
            pid = self._table[2 * i + 2]
            if pid and self._table[2 * i + 3] and not _alive(pid):
                self._table[2 * i + 2] = self._table[2 * i + 3] = 0
                self._table[1] -= 1


class Reservation:
    """Memory promised to one heavy step.

    ``nbytes`` is the whole promise; ``held`` the part its holder has said it
    holds (see the module docstring): the ledger counts only ``nbytes - held``.
    """

    def __init__(self, policy: "MemoryPolicy", nbytes: int, group: str | None = None) -> None:
        self._policy = policy
        self.nbytes = nbytes
        self.held = 0
        self.group = group

    @property
    def mb(self) -> float:
        return self.nbytes / MB

    @property
    def unspent(self) -> int:
        return self.nbytes - self.held

    def hold(self, mb: float) -> None:
        """``mb`` of this promise is allocated now and shows in the reading: stop counting it in the
        ledger.

        Declare only what is in hand (e.g. a model's answer just received).
        """
        target = min(max(int(mb * MB), 0), self.nbytes)
        if target > self.held:
            self._policy.release(target - self.held)
            self.held = target

    def grow_to(self, mb: float, wait_s: float = 0.0) -> None:
        """Make the reservation at least ``mb``, waiting up to ``wait_s`` for room; raises
        MemoryPressure."""
        extra = int(mb * MB) - self.nbytes
        if extra > 0:
            self._policy.acquire(extra, wait_s, growing=True)
            self.nbytes += extra

    def shrink_to(self, mb: float) -> None:
        """Give back what is no longer needed, at once (e.g. once a response turned out small).

        A step that must wait to grow should first shrink to what it really
        holds, so that steps waiting for each other never hold promises they
        do not use (hold-and-wait is how reservations deadlock).
        """
        new = max(int(mb * MB), 0)
        if new >= self.nbytes:
            return
        new_held = min(self.held, new)
        surplus = self.unspent - (new - new_held)
        if surplus > 0:
            self._policy.release(surplus)
        self.nbytes, self.held = new, new_held

    def release(self) -> None:
        if self.unspent:
            self._policy.release(self.unspent)
        self.nbytes = self.held = 0


class Pledge:
    """Memory promised at the door to an admitted request, until its first reservations take it
    over."""

    __slots__ = ("_policy", "nbytes", "made_at")

    def __init__(self, policy: "MemoryPolicy", nbytes: int) -> None:
        self._policy = policy
        self.nbytes = nbytes
        self.made_at = time.monotonic()

    def release(self) -> None:
        self._policy.drop_pledge(self)


@dataclass
class DoorDecision:
    admitted: bool
    waited_s: float = 0.0
    queued: bool = False  # it waited in the line (else it was admitted or refused at once)
    queue_full: bool = False
    pledge: Pledge | None = None


_DOOR_POLL_S = 0.02
_RESERVE_POLL_S = 0.05


class MemoryPolicy:
    """Decides, from a reading and the outstanding reservations, whether work may start."""

    def __init__(
        self,
        probe: MemoryProbe,
        thresholds: Thresholds,
        retry_after_s: int = 5,
        ledger: ReservationLedger | None = None,
        cleaner: Cleaner | None = None,
        events: Events | None = None,
        door: AdmissionQueue | None = None,
    ) -> None:
        self.probe = probe
        self.thresholds = thresholds
        self.retry_after_s = retry_after_s
        self.ledger = ledger or ReservationLedger()
        self.door = door or AdmissionQueue()
        self.cleaner = cleaner  # runs once before refusing a reservation or queueing at the door
        self.events = events or Events()
        self._released = threading.Condition()
        self.waiting = 0  # heavy steps of this process waiting for room now
        # Fair turns among this process's waiting reservations: the request
        # (group) holding the fewest reservations goes first, then arrival order.
        self._waiters: dict[int, str | None] = {}
        self._holding: dict[str | None, int] = {}
        self._sequence = 0
        self._pledges: list[Pledge] = []
        self._pledge_lock = threading.Lock()
        self.door_waiting = 0  # requests of this process in the door's line now
        self._rank = ReservationLedger.NO_RANK  # as last published in the ledger

    def used_mb(self) -> float:
        return self.probe.used_bytes() / MB

    def outstanding_mb(self) -> float:
        return self.ledger.total_bytes() / MB

    def admits(self, cost_mb: float = 0.0, used_mb: float | None = None) -> bool:
        """Would work costing ``cost_mb`` stay under the hard limit now? (reserves nothing)"""
        used = self.used_mb() if used_mb is None else used_mb
        if cost_mb <= 0:
            return used < self.thresholds.limit_mb
        return used + self.ledger.total_bytes() / MB + cost_mb < self.thresholds.limit_mb

    def pressure(self, wanted_mb: float = 0.0, used_mb: float | None = None) -> MemoryPressure:
        return MemoryPressure(
            self.used_mb() if used_mb is None else used_mb,
            self.thresholds.limit_mb,
            self.retry_after_s,
            wanted_mb,
        )

    # --- the door --------------------------------------------------------------
    def admit(self, cost_mb: float, wait_s: float, queue_max: int) -> DoorDecision:
        """Admit a request costing ``cost_mb`` now, or after waiting its turn in the door's FIFO.

        Admitted, it gets a pledge of ``cost_mb`` (release it when the request
        ends). Refused at once when the line is full (``queue_max`` waiters in
        every worker), ``wait_s`` is 0, or the reading alone is at the hard
        limit; else refused when ``wait_s`` passes.
        """
        nbytes = int(cost_mb * MB)
        if self.door.length() == 0 and (pledge := self._try_pledge(nbytes)):
            return DoorDecision(True, pledge=pledge)
        if self.cleaner is not None:
            self.cleaner.run(full=True, reason="room")
            if self.door.length() == 0 and (pledge := self._try_pledge(nbytes)):
                return DoorDecision(True, pledge=pledge)
        if wait_s <= 0 or queue_max <= 0:
            return DoorDecision(False)
        # Over the hard limit by the reading alone, no promise ending can make room:
        # refuse at once, as for any request, rather than hold the client for nothing.
        if not self.admits(0.0):
            return DoorDecision(False)
        ticket = self.door.enter(queue_max)
        if ticket is None:
            return DoorDecision(False, queue_full=True)
        start = time.monotonic()
        deadline = start + wait_s
        next_purge = start + 1.0
        with self._released:
            self.door_waiting += 1
            self._publish_rank()
        try:
            while True:
                if self.door.is_first(ticket) and (pledge := self._try_pledge(nbytes)):
                    return DoorDecision(True, time.monotonic() - start, True, pledge=pledge)
                now = time.monotonic()
                if now >= deadline:
                    return DoorDecision(False, now - start, True)
                if now >= next_purge:
                    self.door.purge_dead()
                    next_purge = now + 1.0
                with self._released:
                    self._released.wait(min(deadline - now, _DOOR_POLL_S))
        finally:
            self.door.leave(ticket)
            with self._released:
                self.door_waiting -= 1
                self._publish_rank()
                self._released.notify_all()  # the next in line (in this process) looks at once

    def _try_pledge(self, nbytes: int) -> Pledge | None:
        with self._pledge_lock:
            if not self.ledger.try_add(nbytes, self._fits(nbytes)):
                return None
            pledge = Pledge(self, nbytes)
            self._pledges.append(pledge)
            return pledge

    def _take(
        self, nbytes: int, pledged_only: bool = False, made_before: float = float("inf")
    ) -> bool:
        """Count ``nbytes`` more for this process, all or nothing: from its pledges made before
        ``made_before`` first (already in the ledger, oldest first), the rest only if it fits now
        (never, if ``pledged_only``).

        Never part of it: a step that waits holding some of what it needs keeps others from
        the memory that would let them finish (hold-and-wait; two growing pictures each holding
        half of the door's pledges stalled a 512 MB survival run until their waits ran out).
        """
        with self._pledge_lock:
            older = (p.nbytes for p in self._pledges if p.made_at < made_before)  # a prefix
            pledged = min(sum(older), nbytes)
            rest = nbytes - pledged
            if rest > 0 and (pledged_only or not self.ledger.try_add(rest, self._fits(rest))):
                return False
            while pledged:
                pledge = self._pledges[0]
                take = min(pledge.nbytes, pledged)
                pledge.nbytes -= take
                pledged -= take
                if pledge.nbytes == 0:
                    self._pledges.pop(0)
            return True

    def drop_pledge(self, pledge: Pledge) -> None:
        """Give back what is left of ``pledge`` (its request ended). For Pledge."""
        with self._pledge_lock:
            left, pledge.nbytes = pledge.nbytes, 0
            if pledge in self._pledges:
                self._pledges.remove(pledge)
        if left:
            self.release(left)

    # --- reservations for heavy steps ----------------------------------------------
    @contextmanager
    def reserve(
        self, mb: float, wait_s: float = 0.0, group: str | None = None, under_way: bool = False
    ) -> Iterator[Reservation]:
        """Hold ``mb`` of the hard limit for a heavy step; wait up to ``wait_s`` for room.

        ``group`` (a request id) takes turns fairly with other groups of this
        process while memory is short; a step ``under_way`` (finishing work that
        holds memory) does not wait for a turn. Raises MemoryPressure when the
        room does not come in time.
        """
        nbytes = int(mb * MB)
        self.acquire(nbytes, wait_s, group=group, growing=under_way)
        reservation = Reservation(self, nbytes, group)
        with self._released:
            self._holding[group] = self._holding.get(group, 0) + 1
            self._publish_rank()
        try:
            yield reservation
        finally:
            reservation.release()
            with self._released:
                count = self._holding[group] - 1
                if count:
                    self._holding[group] = count
                else:
                    del self._holding[group]
                self._publish_rank()

    def _fits(self, nbytes: int) -> Callable[[int], bool]:
        limit = self.thresholds.limit_mb * MB

        def fits(outstanding: int) -> bool:
            return self.probe.used_bytes() + outstanding + nbytes < limit

        return fits

    def _publish_rank(self) -> None:
        """Tell other workers what our most deserving waiter holds (called under self._released).

        Fair turns: a request holding fewer reservations goes first, so one
        comic's eight panels cannot keep another request out, in this worker or
        another. A request waiting at the door counts as holding one: a request
        drawing more pictures lets it in first, but one drawing a single
        picture is not held back, or a steady line at the door would stall
        every comic's second panel.
        """
        waiters = min(
            (self._holding.get(group, 0) for group in self._waiters.values()),
            default=ReservationLedger.NO_RANK,
        )
        rank = min(waiters, 1) if self.door_waiting else waiters
        if rank != self._rank:
            self._rank = rank
            self.ledger.publish_rank(rank)

    def _my_turn(self, sequence: int | None, group: str | None) -> bool:
        # Called under self._released: first among this process's waiters, and
        # holding no more than the most deserving waiter of any worker.
        holding = self._holding.get(group, 0)
        if sequence is not None and self._waiters:
            first = min(
                self._waiters.items(), key=lambda item: (self._holding.get(item[1], 0), item[0])
            )
            if first[0] != sequence:
                return False
        elif self._waiters:
            return False
        return holding == 0 or holding <= self.ledger.min_rank()

    def acquire(
        self, nbytes: int, wait_s: float, group: str | None = None, growing: bool = False
    ) -> None:
        """Count ``nbytes`` more in the ledger for this process (taken from its pledges first),
        waiting up to ``wait_s`` for room and its turn, holding nothing meanwhile; raises
        MemoryPressure. For Reservation."""
        if self._take(nbytes, pledged_only=True):
            return  # the door promised it already: no turn to wait for
        self._acquire_room(nbytes, wait_s, group, growing)

    def _acquire_room(self, nbytes: int, wait_s: float, group: str | None, growing: bool) -> None:
        # A step that grows, or finishes work under way, holds memory: it never waits its
        # turn behind new steps (finishing it frees memory; making it wait could deadlock).
        def turn(sequence: int | None) -> bool:
            if growing:
                return True
            with self._released:
                return self._my_turn(sequence, group)

        if turn(None) and self._take(nbytes):
            return
        if self.cleaner is not None:
            self.cleaner.run(full=True, reason="room")
            if turn(None) and self._take(nbytes):
                return
        started = time.monotonic()
        deadline = started + wait_s
        with self._released:
            self.waiting += 1
            self._sequence += 1
            sequence = self._sequence
            if not growing:
                self._waiters[sequence] = group
                self._publish_rank()
        try:
            while True:
                # Pledges made while it waits are newcomers' (the door let them in ahead of it).
                if turn(sequence) and self._take(nbytes, made_before=started):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pressure = self.pressure(nbytes / MB)
                    self.events.emit(
                        EventKind.REFUSED,
                        wanted_mb=round(pressure.wanted_mb, 1),
                        used_mb=round(pressure.used_mb, 1),
                        limit_mb=round(pressure.limit_mb, 1),
                        outstanding_mb=round(self.outstanding_mb(), 1),
                    )
                    raise pressure
                # Releases in this process wake us at once; other workers' releases
                # and memory falling are seen at the next look, 50 ms later at most.
                with self._released:
                    self._released.wait(min(remaining, _RESERVE_POLL_S))
        finally:
            with self._released:
                self.waiting -= 1
                if self._waiters.pop(sequence, None) is not None or not growing:
                    self._publish_rank()
                self._released.notify_all()

    def release(self, nbytes: int) -> None:
        """Stop counting ``nbytes`` of this process's promises and wake its waiters. For Reservation
        and Pledge."""
        self.ledger.remove(nbytes)
        with self._released:
            self._released.notify_all()
