"""How long costed requests take, learned from recent runs and shared by every worker.

The door plans with these figures: a request waits in line no longer than its
deadline minus its route's expected service time, is refused at once when its
place in line times the drain rate says it could not be let in in time, and a
refusal's ``Retry-After`` is the expected wait. Service times are measured
when a costed request's response closes (from admission to close), as an EWMA
per route and one for all routes, like the memory costs generation learns. The
drain rate is measured by the line itself: a request let in after waiting W
with P requests ahead of it saw one place go every W / (P + 1) seconds.
"""

from __future__ import annotations

import os
import threading

from . import rule
from .shared import SharedTable, own_or_free_slot

ALL_ROUTES = "*"
DOOR_LINE = " line"  # the slot of the door line's time per place (not a route: paths start "/")


class ServiceTimes:
    """EWMAs of service times per route and costed requests running now, in shared memory.

    Layout (float64s): ``routes`` slots of (average, count), slot 0 for all
    routes together, slot 1 the door line's time per place, then ``processes``
    slots of (pid, running). Routes get
    their slot when first named (``register``), which the middleware does
    before gunicorn forks; reads are lock-free.
    """

    def __init__(self, routes: int = 64, processes: int = 256) -> None:
        self._routes = routes
        self._processes = processes
        self._shared = SharedTable(8 * 2 * (routes + processes), "timings")
        self._table = memoryview(self._shared.buffer).cast("d")
        self._index: dict[str, int] = {ALL_ROUTES: 0, DOOR_LINE: 1}
        self._local: tuple[int, int] | None = None  # (pid, process slot)
        self._count_lock = threading.Lock()

    def register(self, route: str) -> None:
        if route not in self._index and len(self._index) < self._routes:
            self._index[route] = len(self._index)

    def expected_s(self, route: str = ALL_ROUTES) -> float | None:
        """The route's average service time, or None while nothing is measured."""
        index = self._index.get(route)
        if index is None or self._table[2 * index + 1] <= 0:
            return None
        return self._table[2 * index]

    def record(self, route: str, seconds: float) -> None:
        self._learn({0, self._index.get(route, 0)}, seconds)

    def record_line_wait(self, waited_s: float, ahead: int) -> None:
        """A request was let in from the door's line after ``waited_s`` behind ``ahead`` others."""
        self._learn({self._index[DOOR_LINE]}, waited_s / (ahead + 1))

    def line_place_s(self) -> float | None:
        """Measured seconds for the door's line to move one place, or None while nobody waited."""
        return self.expected_s(DOOR_LINE)

    def _learn(self, indexes: set[int], seconds: float) -> None:
        with self._shared.locked():
            for index in indexes:
                average, count = self._table[2 * index], self._table[2 * index + 1]
                self._table[2 * index] = rule.ewma(average, int(count), seconds)
                self._table[2 * index + 1] = count + 1

    def running(self) -> int:
        """Costed requests admitted and not yet closed, every worker together."""
        start = 2 * self._routes
        return int(sum(self._table[start + 1 :: 2]))

    def started(self, change: int) -> int:
        """A costed request of this process was admitted (+1) or closed (-1); how many of this
        process's run now."""
        if self._local is None or self._local[0] != os.getpid():
            with self._shared.locked():
                self._slot_locked()
        slot = self._local[1]  # type: ignore[index]
        with self._count_lock:  # only this process writes its slot: no lock across processes
            running = self._table[slot + 1] = max(self._table[slot + 1] + change, 0)
        return int(running)

    def forget(self, pid: int) -> None:
        """A dead worker's requests run no more (called by the master when a worker exits)."""
        with self._shared.locked():
            for slot in range(2 * self._routes, 2 * (self._routes + self._processes), 2):
                if self._table[slot] == pid:
                    self._table[slot] = self._table[slot + 1] = 0

    def _slot_locked(self) -> int:
        pid = os.getpid()
        if self._local and self._local[0] == pid:
            return self._local[1]
        slots = range(2 * self._routes, 2 * (self._routes + self._processes), 2)
        free = own_or_free_slot(pid, ((slot, int(self._table[slot])) for slot in slots))
        if free is None:
            raise RuntimeError("service-time table is full")
        if int(self._table[free]) != pid:
            self._table[free], self._table[free + 1] = pid, 0
        self._local = (pid, free)
        return free
