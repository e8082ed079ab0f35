"""What a generation needs, handed to it explicitly (no Flask): the parts, its progress, its
deadline."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, TypeVar

from ..governor import MemoryPressure, MemoryReserver, Reservation
from ..settings import Settings
from .timing import ROUTE_TIMES

if TYPE_CHECKING:  # a name for annotations: results is the room above (the answers' models)
    from .results import PartialItem

T = TypeVar("T")

log = logging.getLogger("liroo.generation")


# Describes an item a step finished, for progress to show early: (index of the item, its URL) ->
# the item (results.PartialItem: its kind and fields).
Finished = Callable[[int, str], "PartialItem"]


class Progress:
    """Honest steps of one request, written to the job store as they happen (thread-safe).

    A step may also hand over an item it finished (a drawn panel, a recorded
    clip): items are kept by kind and written with every step as the job's
    ``partial``, so that a watcher can show them before the request ends.
    """

    def __init__(self, store: Any, request_id: str, total_steps: int = 1) -> None:
        self._store = store
        self.request_id = request_id
        self.total_steps = max(total_steps, 1)
        self.step_number = 0
        self.partial: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def plan(self, total_steps: int, step: str = "Planning", details: str = "") -> None:
        """Announce how many steps there will be (once the script is known)."""
        with self._lock:
            self.total_steps = max(total_steps, self.step_number + 1)
            self._write(step, details)

    def advance(
        self, step: str, details: str = "", finished: tuple[str, dict] | None = None
    ) -> None:
        """One step done; ``finished`` is (kind, item): an item it made that can be shown
        already."""
        with self._lock:
            self.step_number = min(self.step_number + 1, self.total_steps)
            if finished is not None:
                kind, item = finished
                self.partial.setdefault(kind, []).append(item)
            self._write(step, details)

    def cancel_requested(self) -> bool:
        """Its caller asked to stop it (DELETE /jobs/<id>); a store hiccup reads as no."""
        if self._store is None:
            return False
        try:
            return self._store.cancel_requested(self.request_id)
        except Exception:
            log.warning("could not read whether %s was cancelled", self.request_id, exc_info=True)
            return False

    def _write(self, step: str, details: str) -> None:
        if self._store is None:
            return
        try:
            self._store.progress(
                self.request_id,
                step,
                self.step_number,
                self.total_steps,
                details,
                partial=self.partial or None,
            )
        except Exception:  # progress is for watching: a store hiccup must not fail paid-for work
            log.warning("could not record progress of %s", self.request_id, exc_info=True)


class DeadlineExceeded(Exception):
    """The work ran past LIROO_REQUEST_DEADLINE_S."""


CANCELLED_CODE = "cancelled"


class Cancelled(Exception):
    """Its caller cancelled the request (DELETE /jobs/<id>): no further model call."""


@dataclass
class Context:
    """What one generation runs with.

    Two times bound it: ``deadline``, by which its answer must be sent (the
    request's deadline: a 503 with Retry-After if the work is not done, see
    runner.run_generation), and ``work_deadline``, by which the work itself
    must stop (LIROO_REQUEST_DEADLINE_S): past its answer a request keeps
    working, so that the client's retry joins it and gets the result.
    """

    settings: Settings
    provider: Any  # liroo.providers.base.Provider
    storage: Any  # liroo.storage.Storage
    reserver: MemoryReserver
    progress: Progress
    request_id: str
    # BASE_URL, or None: local media URLs stay paths, made absolute per answer
    public_base: str | None
    deadline: float  # time.monotonic() by which the answer must be sent
    # time.monotonic() by which the work must stop (None: the deadline)
    work_deadline: float | None = None
    route: str = ""  # the route whose recent runs say how long the rest takes (see timing.py)
    # Set when the answer cannot wait any longer: the work ended, or a wait cannot end in time.
    answer_now: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False  # a step found its caller's cancel (check_deadline)

    def __post_init__(self) -> None:
        if self.work_deadline is None or self.work_deadline < self.deadline:
            self.work_deadline = self.deadline

    def remaining_s(self) -> float:
        """Seconds until the work must stop."""
        return self.work_deadline - time.monotonic()

    def check_deadline(self) -> None:
        """Before each model call: the work ends here past its deadline or once cancelled."""
        if self.remaining_s() <= 0:
            raise DeadlineExceeded()
        if self.cancelled or self.progress.cancel_requested():
            self.cancelled = True
            raise Cancelled()

    def stop_if_cancelled(self) -> None:
        """After steps that absorb one another's failures (pictures, clips): a cancel seen by any
        of them ends the request."""
        if self.cancelled:
            raise Cancelled()

    def reservation_wait_s(self) -> float:
        """How long a heavy step may wait for memory: LIROO_RESERVATION_WAIT_S, within the work's
        deadline, never negative."""
        return max(min(self.settings.reservation_wait_s, self.remaining_s()), 0.0)

    # --- waits within the deadline (pacing.WaitBound) ------------------------------
    def answer_by(self) -> float:
        """The latest time a wait may end for the answer to be in time: the deadline minus what
        the rest of the work is expected to take (learned from recent runs of the route)."""
        return self.deadline - (expected_rest_s(self) or 0.0)

    def work_by(self) -> float:
        """The latest time a wait may end at all: LIROO_RESERVATION_WAIT_S from now, within the
        work's deadline."""
        return time.monotonic() + self.reservation_wait_s()

    def late(self) -> None:
        """A wait cannot end in time for the answer: the request answers now (503 with
        Retry-After) and the work goes on, for the client's retry to join."""
        if not self.answer_now.is_set():
            log.info("request %s will be late: it answers now and keeps working", self.request_id)
            self.answer_now.set()

    def wait_within(self, attempt: Callable[[float], T]) -> T:
        """``attempt(wait_s)``, a wait that raises MemoryPressure when ``wait_s`` runs out: first
        up to ``answer_by``; if that runs out, the request is told it is late and the wait goes
        on up to ``work_by``."""
        work_by = self.work_by()
        in_time = self.answer_by() - time.monotonic()
        if self.answer_now.is_set() or in_time >= work_by - time.monotonic():
            return attempt(max(work_by - time.monotonic(), 0.0))
        if in_time > 0:
            try:
                return attempt(in_time)
            except MemoryPressure:
                pass
        self.late()
        return attempt(max(work_by - time.monotonic(), 0.0))

    @contextmanager
    def reserve(self, mb: float, under_way: bool = False) -> Iterator[Reservation]:
        """Memory for one heavy step of this request (a picture, a speech chunk, an encode),
        waiting within the deadline (``wait_within``).

        The request id is the fairness group, so while memory is short this request's
        steps take turns with other requests' rather than queueing behind them. A step
        ``under_way`` finishes work that already holds memory (encoding samples, handing a
        file over): it goes first, since finishing it frees that memory.
        """
        with ExitStack() as stack:
            yield self.wait_within(
                lambda wait_s: stack.enter_context(self.reserve_once(mb, wait_s, under_way))
            )

    def reserve_once(
        self, mb: float, wait_s: float, under_way: bool = False
    ) -> ContextManager[Reservation]:
        """One reservation waiting up to ``wait_s`` (the one call to the governor's reserve)."""
        return self.reserver.reserve(mb, wait_s=wait_s, group=self.request_id, under_way=under_way)

    def grow(self, reservation: Reservation, mb: float) -> None:
        """Grow a reservation to ``mb``, waiting within the deadline (``wait_within``)."""
        self.wait_within(lambda wait_s: reservation.grow_to(mb, wait_s=wait_s))


def expected_rest_s(ctx: Context) -> float | None:
    """Seconds the rest of ``ctx``'s work is expected to take, or None before any run of its
    route was measured."""
    return ROUTE_TIMES.expected_s(ctx.route, ctx.progress.total_steps - ctx.progress.step_number)
