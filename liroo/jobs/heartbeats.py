"""Heartbeats: this process's running jobs refreshed in the store, so that retries elsewhere keep
waiting."""

from __future__ import annotations

import logging
import os
import threading

from .model import HEARTBEAT_S, JobStore

log = logging.getLogger("liroo.jobs")


class Heartbeats:
    """Keeps this process's running jobs fresh, so that retries elsewhere keep waiting for them."""

    def __init__(self, store: JobStore, interval_s: float = HEARTBEAT_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = None

    def add(self, request_id: str) -> None:
        with self._lock:
            self._running.add(request_id)
            # one thread per worker, started after fork
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._beat, name="liroo-heartbeat", daemon=True
                )
                self._thread.start()

    def discard(self, request_id: str) -> None:
        with self._lock:
            self._running.discard(request_id)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _beat(self) -> None:
        tick = threading.Event()
        while True:
            tick.wait(self.interval_s)
            with self._lock:
                running = list(self._running)
            try:
                self.store.heartbeat(running)
            except Exception:  # the store is down: the next beat tries again
                log.warning("could not refresh %d running jobs", len(running), exc_info=True)
