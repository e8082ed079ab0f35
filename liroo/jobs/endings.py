"""Wakes the retries waiting in this process for a job when it ends here (no polling).

A job that ends in another process or instance is signalled through Redis
(RedisJobStore.wait_for_end); one that ends in this process sets its event here,
from JobStore.finish, whatever the store.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Endings:
    """Events keyed by request id, held while someone waits on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, int]] = {}
        self._listeners: list[Callable[[str], None]] = []  # parked joins (jobs/joins.Parking)

    def listen(self, on_end: Callable[[str], None]) -> None:
        """Call ``on_end(request_id)`` at every end in this process (it must not block)."""
        self._listeners.append(on_end)

    @contextmanager
    def waiting(self, request_id: str) -> Iterator[threading.Event]:
        """An event set when ``request_id`` ends in this process; register before looking at the
        job, so an end between the look and the wait is not missed."""
        with self._lock:
            event, waiters = self._waiting.get(request_id, (threading.Event(), 0))
            self._waiting[request_id] = (event, waiters + 1)
        try:
            yield event
        finally:
            with self._lock:
                event, waiters = self._waiting[request_id]
                if waiters == 1:
                    del self._waiting[request_id]
                else:
                    self._waiting[request_id] = (event, waiters - 1)

    def ended(self, request_id: str) -> None:
        with self._lock:
            entry = self._waiting.get(request_id)
        if entry is not None:
            entry[0].set()
        for on_end in self._listeners:
            on_end(request_id)


ENDINGS = Endings()  # per process: a forked worker starts with nobody waiting
