"""What a generation needs, handed to it explicitly (no Flask): the parts, its progress, its
deadline."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from ..governor import MemoryReserver, Reservation
from ..settings import Settings

log = logging.getLogger("liroo.generation")


# Describes an item a step finished, for progress to show early: (index of the item, its URL) ->
# (kind, item).
Finished = Callable[[int, str], tuple[str, dict]]


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
    """The request ran past LIROO_REQUEST_DEADLINE_S."""


CANCELLED_CODE = "cancelled"


class Cancelled(Exception):
    """Its caller cancelled the request (DELETE /jobs/<id>): no further model call."""


@dataclass
class Context:
    settings: Settings
    provider: Any  # liroo.providers.base.Provider
    storage: Any  # liroo.storage.Storage
    reserver: MemoryReserver
    progress: Progress
    request_id: str
    # BASE_URL, or None: local media URLs stay paths, made absolute per answer
    public_base: str | None
    deadline: float  # time.monotonic() by which the request must end
    cancelled: bool = False  # a step found its caller's cancel (check_deadline)

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        """Before each model call: the request ends here past its deadline or once cancelled."""
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
        """How long a heavy step may wait for memory: LIROO_RESERVATION_WAIT_S, within the deadline.

        Never past the request's deadline, never negative.
        """
        return max(min(self.settings.reservation_wait_s, self.remaining_s()), 0.0)

    def reserve(self, mb: float, under_way: bool = False) -> ContextManager[Reservation]:
        """Memory for one heavy step of this request (a picture, a speech chunk, an encode).

        The request id is the fairness group, so while memory is short this request's
        steps take turns with other requests' rather than queueing behind them. A step
        ``under_way`` finishes work that already holds memory (encoding samples, handing a
        file over): it goes first, since finishing it frees that memory.
        """
        return self.reserver.reserve(
            mb, wait_s=self.reservation_wait_s(), group=self.request_id, under_way=under_way
        )
