"""What a generation needs, handed to it explicitly (no Flask): the parts, its progress, its deadline."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..governor import MemoryReserver
from ..settings import Settings

log = logging.getLogger("liroo.generation")


class Progress:
    """Honest steps of one request, written to the job store as they happen (thread-safe)."""

    def __init__(self, store: Any, request_id: str, total_steps: int = 1) -> None:
        self._store = store
        self.request_id = request_id
        self.total_steps = max(total_steps, 1)
        self.step_number = 0
        self._lock = threading.Lock()

    def plan(self, total_steps: int, step: str = "Planning", details: str = "") -> None:
        """Announce how many steps there will be (once the script is known)."""
        with self._lock:
            self.total_steps = max(total_steps, self.step_number + 1)
            self._write(step, details)

    def advance(self, step: str, details: str = "") -> None:
        """One step done."""
        with self._lock:
            self.step_number = min(self.step_number + 1, self.total_steps)
            self._write(step, details)

    def _write(self, step: str, details: str) -> None:
        if self._store is None:
            return
        try:
            self._store.progress(self.request_id, step, self.step_number, self.total_steps, details)
        except Exception:  # progress is for watching: a store hiccup must not fail paid-for work
            log.warning("could not record progress of %s", self.request_id, exc_info=True)


class DeadlineExceeded(Exception):
    """The request ran past LIROO_REQUEST_DEADLINE_S."""


@dataclass
class Context:
    settings: Settings
    provider: Any               # liroo.providers.base.Provider
    storage: Any                # liroo.storage.Storage
    reserver: MemoryReserver
    progress: Progress
    request_id: str
    public_base: str | None     # BASE_URL, or None: local media URLs stay paths, made absolute per answer
    deadline: float             # time.monotonic() by which the request must end

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        if self.remaining_s() <= 0:
            raise DeadlineExceeded()
