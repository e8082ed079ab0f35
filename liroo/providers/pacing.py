"""Pacing of model calls: one token bucket per model, shared by a process's threads.

Hand-written rather than taken from a library: ``limits`` (already pinned
through Flask-Limiter) only answers "allowed now?" against wall-clock windows
and cannot wait for a slot or be pushed back; pyrate-limiter would be a new
dependency and has no cool-down either. What is needed here is small: wait
for a token (never longer than ``max_wait_s``), let a 429 empty the bucket and
hold it for the server's Retry-After, and take an injectable clock and sleep
so tests never wait on wall time.

A caller reserves its token under the lock (the balance may go negative) and
sleeps outside it, so waiting threads queue in arrival order without holding
the lock.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from .base import RateLimited


class TokenBucket:
    """``per_minute`` calls a minute on average, at most ``burst`` at once."""

    def __init__(self, per_minute: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive (no bucket means unpaced)")
        self.rate_per_s = per_minute / 60.0
        # A tenth of a minute's budget at once: short bursts (a comic's first
        # panels) go out together, and no sliding minute sees much above the rate.
        self.capacity = burst if burst is not None else max(1.0, per_minute / 10.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._as_of = clock()      # the balance is as of this time (in the future during a cool-down)

    def _refill(self, now: float) -> None:
        if now > self._as_of:
            self._tokens = min(self.capacity, self._tokens + (now - self._as_of) * self.rate_per_s)
            self._as_of = now

    def acquire(self, max_wait_s: float = float("inf")) -> float:
        """Take one token, sleeping until it is due; return the seconds waited.

        Raises RateLimited, without taking a token, when the wait would exceed ``max_wait_s``.
        """
        with self._lock:
            now = self._clock()
            self._refill(now)
            wait = max(0.0, self._as_of - now) + max(0.0, 1.0 - self._tokens) / self.rate_per_s
            if wait > max_wait_s:
                raise RateLimited(f"pacing: the next slot is {wait:.1f}s away", retry_after_s=max(1, round(wait)))
            self._tokens -= 1.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def cool_down(self, seconds: float = 0.0) -> None:
        """After a 429: empty the bucket, and give no token for ``seconds`` more."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, 0.0)
            self._as_of = max(self._as_of, now + max(0.0, seconds))


class Pacer:
    """A bucket per model, made on first use; ``per_minute`` of 0 turns pacing off."""

    def __init__(self, per_minute: float, *, max_wait_s: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.per_minute = per_minute
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, model: str) -> TokenBucket | None:
        if self.per_minute <= 0:
            return None
        with self._lock:
            bucket = self._buckets.get(model)
            if bucket is None:
                bucket = self._buckets[model] = TokenBucket(self.per_minute, clock=self._clock, sleep=self._sleep)
            return bucket

    def acquire(self, model: str) -> float:
        bucket = self.bucket(model)
        return bucket.acquire(self.max_wait_s) if bucket else 0.0

    def cool_down(self, model: str, seconds: float = 0.0) -> None:
        bucket = self.bucket(model)
        if bucket:
            bucket.cool_down(seconds)
