"""Promises of memory: a heavy step's reservation, and the pledge a request gets at the door.

A promise is counted in the ledger until its holder says it holds the memory
(``Reservation.hold``), and from then on only in the reading, so a
reservation whose bytes are allocated is no longer counted twice. What a
holder declares must be memory it really holds at that moment (an object it
has in hand, e.g. a model's answer): declaring more than it holds is the one
way to undercount. A transient allocation (a decode in progress) stays
promised until the step releases it; the double count then lasts for that
step only.

A pledge is its request's own: the door makes it in the thread that serves
the request, and the request's first reservations convert it rather than add
to it. A step that cannot start on its pledge and the free room gives the
pledge back before it waits (``forfeit``): waiting holding nothing is what
keeps steps from stalling each other. It is bound to the request's group (its
id) by the first reservation made in that thread or by ``adopt``; from then on
a step of that group in any thread (a pool drawing panels) takes from it, and
no other request can.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import TYPE_CHECKING, Callable

from . import rule
from .probe import MB

if TYPE_CHECKING:
    from .policy import MemoryPolicy


class Reservation:
    """Memory promised to one heavy step.

    ``nbytes`` is the whole promise; ``held`` the part its holder has said it
    holds: the ledger counts only ``nbytes - held``.
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

    def grow_to(self, mb: float, wait_s: float | None = 0.0, deadline: float | None = None) -> None:
        """Make the reservation at least ``mb``, waiting up to ``wait_s`` (and never past
        ``deadline``, a ``time.monotonic()`` instant) for room; raises MemoryPressure."""
        extra = int(mb * MB) - self.nbytes
        if extra > 0:
            end = rule.step_end(time.monotonic(), wait_s, deadline)
            self._policy.acquire(extra, end, self.group, growing=True)
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
    """Memory promised at the door to one admitted request, until its reservations take it over
    or it ends (``release``)."""

    __slots__ = ("_book", "nbytes", "group", "released")

    def __init__(self, book: "PledgeBook", nbytes: int) -> None:
        self._book = book
        self.nbytes = nbytes
        self.group: str | None = None
        self.released = False

    def release(self) -> None:
        self._book.drop(self)


class PledgeBook:
    """This process's door pledges, each findable only by its own request.

    ``lock`` guards every pledge's ``nbytes``; the policy holds it while it
    converts a pledge into a reservation.
    """

    def __init__(self, give_back: Callable[[int], None]) -> None:
        self._give_back = give_back  # stops counting bytes in the ledger
        self.lock = threading.Lock()
        self._by_group: dict[str, Pledge] = {}
        # The pledge of the request this thread serves (threads never share a context).
        self._current: contextvars.ContextVar[Pledge | None] = contextvars.ContextVar(
            "liroo_door_pledge", default=None
        )

    def made(self, nbytes: int) -> Pledge:
        """A new pledge (already counted in the ledger) for the request this thread serves."""
        pledge = Pledge(self, nbytes)
        self._current.set(pledge)
        return pledge

    def adopt(self, group: str) -> None:
        """Bind this thread's pledge to ``group`` (its request's id), so steps of the group in
        other threads find it."""
        with self.lock:
            self.own_locked(group)

    def own_locked(self, group: str | None) -> Pledge | None:
        """The live pledge of ``group``'s request, binding this thread's pledge on first sight."""
        pledge = self._by_group.get(group) if group is not None else None
        if pledge is not None:
            return pledge
        current = self._current.get()
        if current is None or current.released or current.group not in (None, group):
            return None
        if group is not None and current.group is None:
            current.group = group
            self._by_group.setdefault(group, current)
        return current

    def forfeit(self, group: str | None) -> None:
        """Give back what is left of ``group``'s pledge (its request's step waits holding
        nothing); the pledge stays its request's, empty, until the request ends."""
        with self.lock:
            pledge = self.own_locked(group)
            left = pledge.nbytes if pledge is not None else 0
            if left:
                pledge.nbytes = 0  # type: ignore[union-attr]
        if left:
            self._give_back(left)

    def drop(self, pledge: Pledge) -> None:
        """Give back what is left of ``pledge`` (its request ended)."""
        with self.lock:
            left, pledge.nbytes = pledge.nbytes, 0
            pledge.released = True
            if pledge.group is not None and self._by_group.get(pledge.group) is pledge:
                del self._by_group[pledge.group]
        if left:
            self._give_back(left)
