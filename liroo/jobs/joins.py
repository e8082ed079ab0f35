"""Retries that wait for a running request (joins): parked in the worker's loop, woken by its end.

Under liroo/server.py's worker a join is parked (``Parking``): it holds no
thread, only its connection in the worker's loop and an entry here, until its
job ends, its owner dies or its deadline comes; then ``wake`` hands the
connection back to a thread, which answers the request afresh (a replay, the
503 still_working, or a claim of its own). One thread per process watches
every parked join: ends in this process come from ``ENDINGS``, ends on other
instances and workers from one Redis pattern subscription, and a look every
``LOOK_S`` (one read per parked request, not per join) sees an owner die and an
end in another worker without Redis. No cap: a parked join costs a socket and
a few hundred bytes, bounded by gunicorn's worker_connections.

Without that worker (a test client, TLS) a join waits in its thread (``Joins.wait``).
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
from typing import Callable, Iterator

from .endings import ENDINGS
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
        self.parking = Parking(store)
        ENDINGS.listen(self.parking.ended)

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


class Parking:
    """Joins waiting in the worker's loop, by request id: (deadline, wake) each; ``wake`` is
    called once, from any thread, and must not block."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._parked: dict[str, list[tuple[float, Callable[[], None]]]] = {}
        self._changed = threading.Event()
        self._watcher: threading.Thread | None = None

    def park(self, request_id: str, deadline: float, wake: Callable[[], None]) -> None:
        with self._lock:
            self._parked.setdefault(request_id, []).append((deadline, wake))
            if self._watcher is None:  # made lazily: each forked worker has its own
                self._watcher = threading.Thread(
                    target=self._watch, name="liroo-joins", daemon=True
                )
                self._watcher.start()
        self._changed.set()
        try:  # registered first: an end just before this look is not missed
            running = _running(self.store.get(request_id))
        except Exception:  # the store cannot be asked: the answer afresh will say
            running = False
        if not running:
            self.ended(request_id)

    def ended(self, request_id: str) -> None:
        with self._lock:
            parked = self._parked.pop(request_id, ())
        for _, wake in parked:
            wake()

    def parked(self) -> int:
        with self._lock:
            return sum(len(joins) for joins in self._parked.values())

    def _watch(self) -> None:
        listener = _redis_of(self.store)
        next_look = time.monotonic() + LOOK_S
        while True:
            self._changed.clear()  # before the snapshot: a park after it cuts the wait short
            with self._lock:
                deadlines = [d for joins in self._parked.values() for d, _ in joins]
            if not deadlines:
                self._changed.wait()  # nothing parked: nothing to watch
                continue
            now = time.monotonic()
            timeout = min([LOOK_S, *(d - now for d in deadlines)])
            if timeout > 0:
                self._listen(listener, timeout)
            now = time.monotonic()
            self._wake_late(now)
            if now >= next_look:
                next_look = now + LOOK_S
                self._look()

    def _listen(self, listener, timeout: float) -> None:
        """Until ``timeout``: ends signalled through Redis, else only this process's (ENDINGS)."""
        if listener is not None and getattr(self.store, "redis_available", True):
            try:
                listener.listen_for_ends(self.ended, timeout)
                return
            except Exception:  # Redis is down: the looks and this process's ends go on
                pass
        self._changed.wait(timeout)

    def _wake_late(self, now: float) -> None:
        late = []
        with self._lock:
            for request_id, joins in list(self._parked.items()):
                keep = [(d, wake) for d, wake in joins if d > now]
                late += [wake for d, wake in joins if d <= now]
                if keep:
                    self._parked[request_id] = keep
                else:
                    del self._parked[request_id]
        for wake in late:
            wake()

    def _look(self) -> None:
        with self._lock:
            request_ids = list(self._parked)
        for request_id in request_ids:
            try:
                running = _running(self.store.get(request_id))
            except Exception:
                running = False
            if not running:
                self.ended(request_id)


def _redis_of(store: JobStore):
    """The store's Redis (itself, or the one a FallbackJobStore prefers), if it has one."""
    redis = getattr(store, "redis", store)
    return redis if hasattr(redis, "listen_for_ends") else None
