"""Fair turns: the door's line (one FIFO for the instance) and the order of waiting heavy steps.

The door's line is shared by every worker: tickets are numbered in shared
memory, only the oldest live ticket may be admitted, the bound counts the
waiters of every worker, and one caller may hold only its share of the places
(so one client cannot fill the line even without a rate limit). Each waiting
thread polls (every 20 ms, at once when its own process releases memory),
because a waiter in another worker cannot be woken directly.

Among waiting heavy steps, the request holding the fewest reservations goes
first, then arrival order, so one comic's eight panels cannot keep another
request out, in this worker or another (each process publishes its most
deserving waiter's rank in the ledger).
"""

from __future__ import annotations

import hashlib
import os
import threading

from .ledger import ReservationLedger
from .shared import SharedTable, alive

LINE_FULL = "queue_full"
CALLER_SHARE_FULL = "caller_share"


def caller_tag(caller: str | None) -> int:
    """A caller's key as a nonzero int64 for the shared table (0: no caller known)."""
    if not caller:
        return 0
    tag = int.from_bytes(hashlib.blake2b(caller.encode(), digest_size=8).digest(), "little") >> 1
    return tag or 1


class AdmissionQueue:
    """The door's FIFO, one for every worker that inherits it (made before gunicorn forks).

    A table of (pid, ticket, caller) slots in shared memory after a header
    holding the last ticket given and the number waiting. Entering and leaving
    take the table's lock; "am I first?" is a lock-free read. A worker killed
    while its threads waited leaves tickets behind; waiters that are kept back
    for long drop tickets of dead processes (``purge_dead``) so the line never
    stalls.
    """

    def __init__(self, slots: int = 512) -> None:
        self._slots = slots
        self._shared = SharedTable(8 * (3 * slots + 2), "door")
        self._locked = self._shared.locked
        # [last ticket, waiters, pid, ticket, caller, pid, ticket, caller, ...]
        self._table = memoryview(self._shared.buffer).cast("q")

    def length(self) -> int:
        """Requests waiting at the door now, in every worker (a lock-free read of a count kept under
        the lock)."""
        return self._table[1]

    def enter(
        self, bound: int, caller: int = 0, caller_bound: int | None = None
    ) -> tuple[int | None, str | None]:
        """(a ticket at the back of the line, None) or (None, why not): ``bound`` requests already
        wait (LINE_FULL) or ``caller_bound`` of them are ``caller``'s (CALLER_SHARE_FULL)."""
        table = self._table
        with self._locked():
            if self.length() >= bound:
                self._purge_dead_locked()
                if self.length() >= bound:
                    return None, LINE_FULL
            if caller and caller_bound is not None:
                if sum(1 for t in table[4::3] if t == caller) >= caller_bound:
                    self._purge_dead_locked()
                    if sum(1 for t in table[4::3] if t == caller) >= caller_bound:
                        return None, CALLER_SHARE_FULL
            free = next((i for i in range(self._slots) if not table[3 * i + 3]), None)
            if free is None:
                return None, LINE_FULL
            ticket = table[0] + 1
            table[0] = ticket
            table[3 * free + 2] = os.getpid()
            table[3 * free + 3] = ticket
            table[3 * free + 4] = caller
            table[1] += 1
            return ticket, None

    def is_first(self, ticket: int) -> bool:
        return min((t for t in self._table[3::3] if t), default=ticket) == ticket

    def leave(self, ticket: int) -> None:
        with self._locked():
            for i in range(self._slots):
                if self._table[3 * i + 3] == ticket:
                    self._clear_locked(i)
                    return

    def purge_dead(self) -> None:
        with self._locked():
            self._purge_dead_locked()

    def _clear_locked(self, i: int) -> None:
        self._table[3 * i + 2] = self._table[3 * i + 3] = self._table[3 * i + 4] = 0
        self._table[1] -= 1

    def _purge_dead_locked(self) -> None:
        for i in range(self._slots):
            pid = self._table[3 * i + 2]
            if pid and self._table[3 * i + 3] and not alive(pid):
                self._clear_locked(i)


class FairTurns:
    """The order in which this process's waiting heavy steps get room.

    ``changed`` is the condition every waiter sleeps on: releases in this
    process wake them at once; other workers' releases are seen at the next
    look. Methods whose names end in ``_locked`` are called holding it.
    """

    def __init__(self, ledger: ReservationLedger) -> None:
        self._ledger = ledger
        self.changed = threading.Condition()
        self.waiting = 0  # heavy steps of this process waiting for room now
        self.door_waiting = 0  # requests of this process in the door's line now
        self._waiters: dict[int, str | None] = {}  # sequence -> group
        self._holding: dict[str | None, int] = {}  # group -> reservations it holds
        self._sequence = 0
        self._rank = ReservationLedger.NO_RANK  # as last published in the ledger

    def holds(self, group: str | None, change: int) -> None:
        """A reservation of ``group`` began (+1) or ended (-1)."""
        with self.changed:
            count = self._holding.get(group, 0) + change
            if count > 0:
                self._holding[group] = count
            else:
                self._holding.pop(group, None)
            self._publish_rank_locked()

    def door(self, change: int) -> None:
        """A request of this process entered (+1) or left (-1) the door's line."""
        with self.changed:
            self.door_waiting += change
            self._publish_rank_locked()
            if change < 0:
                self.changed.notify_all()  # the next in line (in this process) looks at once

    def start_waiting(self, group: str | None, growing: bool) -> int:
        with self.changed:
            self.waiting += 1
            self._sequence += 1
            if not growing:
                self._waiters[self._sequence] = group
                self._publish_rank_locked()
            return self._sequence

    def stop_waiting(self, sequence: int) -> None:
        with self.changed:
            self.waiting -= 1
            if sequence in self._waiters:
                del self._waiters[sequence]
                self._publish_rank_locked()
            self.changed.notify_all()

    def is_turn(self, sequence: int | None, group: str | None) -> bool:
        """First among this process's waiters (``sequence`` None: a step not yet waiting goes only
        when no one waits), and holding no more than the most deserving waiter of any worker."""
        with self.changed:
            holding = self._holding.get(group, 0)
            if sequence is not None and self._waiters:
                first = min(
                    self._waiters.items(), key=lambda item: (self._holding.get(item[1], 0), item[0])
                )
                if first[0] != sequence:
                    return False
            elif self._waiters:
                return False
            return holding == 0 or holding <= self._ledger.min_rank()

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def _publish_rank_locked(self) -> None:
        """Tell other workers what our most deserving waiter holds.

        A request waiting at the door counts as holding one: a request drawing
        more pictures lets it in first, but one drawing a single picture is not
        held back, or a steady line at the door would stall every comic's
        second panel.
        """
        waiters = min(
            (self._holding.get(group, 0) for group in self._waiters.values()),
            default=ReservationLedger.NO_RANK,
        )
        rank = min(waiters, 1) if self.door_waiting else waiters
        if rank != self._rank:
            self._rank = rank
            self._ledger.publish_rank(rank)
