"""Retries that wait for a running request (joins): woken by its end, a few per request.

A join holds one of its worker's threads while it waits, so this worker lets
at most ``per_request`` joins wait for one request at once; another gets
JoinsFull (a 503 with Retry-After: the app retries). The cap is per worker on
purpose: what it protects is the worker's own thread pool.

A join does not poll: it sleeps until the job's end wakes it (this process's
ends through ``ENDINGS``, any instance's through Redis pub/sub; see
JobStore.wait_for_end), and looks at the job again at least every ``LOOK_S``,
which is how it sees an owner die (a stale heartbeat) and a job that ended in
another worker of this instance without Redis.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .model import RUNNING, Job, JobStore

LOOK_S = 2.0


class JoinsFull(Exception):
    """This worker already lets as many retries wait for the request as it may."""


class Joins:
    def __init__(self, store: JobStore, per_request: int) -> None:
        self.store = store
        self.per_request = per_request
        self._lock = threading.Lock()
        self._waiting: dict[str, int] = {}

    @contextmanager
    def _slot(self, request_id: str) -> Iterator[None]:
        with self._lock:
            waiting = self._waiting.get(request_id, 0)
            if waiting >= self.per_request:
                raise JoinsFull()
            self._waiting[request_id] = waiting + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._waiting.pop(request_id) - 1
                if left:
                    self._waiting[request_id] = left

    def wait(self, request_id: str, deadline: float) -> Job | None:
        """The job once it no longer runs (None if it is gone), or as it is at ``deadline``
        (``time.monotonic()``), still running. JoinsFull past the cap; JobStoreUnavailable when
        its store cannot be asked."""
        with self._slot(request_id):
            while True:
                job = self.store.get(request_id)
                left = deadline - time.monotonic()
                if not _running(job) or left <= 0:
                    return job
                self.store.wait_for_end(
                    request_id, min(left, LOOK_S), lambda: _running(self.store.get(request_id))
                )


def _running(job: Job | None) -> bool:
    return job is not None and job.status == RUNNING and not job.stale
