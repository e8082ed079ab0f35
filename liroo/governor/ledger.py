"""The reservation ledger: what every worker has promised and not yet allocated.

The cgroup limit is shared by all workers, and memory promised but not yet
allocated is invisible to any reading, so admission counts the promises of
every worker on the machine, not only this one.
"""

from __future__ import annotations

import os
import struct
from typing import Callable

from .shared import SharedTable, own_or_free_slot


class ReservationLedger:
    """Outstanding reservations of every process that inherits this ledger.

    A table of (pid, bytes, rank) slots in shared memory, created before
    gunicorn forks its workers, so that every worker sees the others'
    promises. ``rank`` is what the process's most deserving waiter holds
    (see turns.FairTurns), so turns are fair across workers too. Writes hold
    the table's lock (``shared.SharedTable``).
    """

    _SLOT = struct.Struct("qqq")
    NO_RANK = 1 << 62  # the rank of a process with no one waiting

    def __init__(self, slots: int = 256) -> None:
        self._slots = slots
        self._shared = SharedTable(self._SLOT.size * slots, "ledger")
        self._map = self._shared.buffer
        self._locked = self._shared.locked
        self._table = memoryview(self._map).cast("q")  # the same memory as int64s, for a fast sum
        for i in range(slots):  # a free slot ranks last, so min_rank reads every slot in C
            self._table[3 * i + 2] = self.NO_RANK
        self._local_slot: tuple[int, int] | None = None  # (pid, index)

    def total_bytes(self) -> int:
        """Sum of all outstanding reservations (a lock-free read; exact enough for admission at the
        door)."""
        # Every slot is (pid, bytes, rank): the byte counts are every third int64.
        return sum(self._table[1::3])

    def min_rank(self) -> int:
        """The smallest rank any live process has published (a lock-free read)."""
        return min(self._table[2::3])

    def publish_rank(self, rank: int) -> None:
        with self._locked():
            self._table[3 * self._slot_index() + 2] = rank

    def _slot_index(self) -> int:
        pid = os.getpid()
        if self._local_slot and self._local_slot[0] == pid:
            return self._local_slot[1]
        free = own_or_free_slot(pid, enumerate(self._table[0::3]))  # each slot's pid
        if free is None:
            raise RuntimeError("reservation ledger is full")
        self._SLOT.pack_into(self._map, free * self._SLOT.size, pid, 0, self.NO_RANK)
        self._local_slot = (pid, free)
        return free

    def try_add(self, nbytes: int, fits: Callable[[int], bool]) -> bool:
        """Add ``nbytes`` for this process if ``fits(total outstanding)`` says so."""
        with self._locked():
            if not fits(self.total_bytes()):
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
