"""Pacing of model calls: one budget per model for the whole service.

``LIROO_GEMINI_RPM`` is the project's quota as Gemini counts it, so the
budget lives where every caller sees it:

- with ``REDIS_URL``: in Redis, one key per model, taken by one atomic Lua
  script per call, so every worker of every instance draws on the same
  budget (and a 429 anywhere holds everyone back);
- else (and while Redis cannot be reached): in shared memory made before
  gunicorn forks, so the workers of one instance draw on one budget.

The rule is GCRA (the generic cell rate algorithm, a token bucket kept as a
single number, the "theoretical arrival time" of the next call): small enough
to state identically in Python and in Lua, and one number per model fits in
a Redis string or a shared-memory slot. A caller reserves its slot (the debt
may run ahead of now) and sleeps outside any lock, so waiting threads queue in
arrival order. ``burst`` calls may start at once (one comic's pictures), then
one every ``60 / per_minute`` seconds. A 429 pushes the next slot back to the
server's Retry-After for everyone.

Hand-written rather than taken from a library: ``limits`` only answers
"allowed now?" and cannot reserve a future slot or be pushed back by a 429;
pyrate-limiter has no cool-down either. Clock and sleep are injectable, so
unit tests never wait on wall time.

While Redis is down each instance paces at the full figure on its own (the
instance count of an autoscaled service is unknown at that moment; Gemini's
429s, which cool each instance's budget, bound the excess). The outage is
logged once per worker, like the job store's, and Redis is tried again at most
every few seconds.

A call made for a request waits within that request's deadline: generation sets
the request's ``WaitBound`` for the thread making the call (``bounded_by``), the
wait never goes past its ``work_by`` (RateLimited instead), and a slot further
away than ``answer_by`` tells the request it will be late (it answers 503 and
keeps working).
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Protocol

from ..governor.shared import SharedTable
from ..outage import RETRY_S, RedisOutage
from .base import RateLimited

log = logging.getLogger("liroo.providers.pacing")


class WaitBound(Protocol):
    """A request's bounds for a wait, in time.monotonic() (generation.context.Context)."""

    def answer_by(self) -> float:
        """The latest a wait may end for the request's answer to be in time."""

    def work_by(self) -> float:
        """The latest a wait may end at all."""

    def late(self) -> None:
        """The wait ends after ``answer_by``: the request answers now and keeps working."""


# The bound of the request the current thread works for (None: only max_wait_s bounds a wait).
_WAIT_BOUND: ContextVar[WaitBound | None] = ContextVar("liroo_wait_bound", default=None)


@contextmanager
def bounded_by(bound: WaitBound) -> Iterator[None]:
    """Pacing waits in this thread (until the block ends) stay within ``bound``."""
    token = _WAIT_BOUND.set(bound)
    try:
        yield
    finally:
        _WAIT_BOUND.reset(token)


def gcra(tat: float, now: float, interval: float, tolerance: float) -> tuple[float, float]:
    """(seconds until a call may start, the arrival time after it) for a budget whose debt runs to
    ``tat``."""
    tat = max(tat, now)
    return max(0.0, tat - tolerance - now), tat + interval


def held_back(tat: float, now: float, seconds: float, tolerance: float) -> float:
    """The arrival time after a 429: no call starts before ``now + seconds``, and the burst is
    spent."""
    return max(tat, now + seconds + tolerance)


class BudgetState(Protocol):
    """Where the per-model arrival times live; ``take`` and ``hold`` are each one atomic step."""

    def take(
        self, model: str, now: float, interval: float, tolerance: float, max_wait_s: float
    ) -> float:
        """Reserve the next slot and return the wait, or raise RateLimited (nothing reserved) beyond
        ``max_wait_s``."""

    def hold(self, model: str, now: float, seconds: float, tolerance: float) -> None: ...


def _refuse(wait: float) -> RateLimited:
    return RateLimited(
        f"pacing: the next slot is {wait:.1f}s away", retry_after_s=max(1, math.ceil(wait))
    )


class SharedMemoryState:
    """Arrival times in shared memory, seen by every process forked after it was made (one
    instance's workers).

    A table of (model hash, arrival time) slots in the governor's
    ``SharedTable``, as its reservation ledger is (a killed worker never
    leaves the budget locked).
    """

    _SLOT = struct.Struct("qd")

    def __init__(self, slots: int = 32) -> None:
        self._slots = slots
        self._shared = SharedTable(self._SLOT.size * slots, "pacing")
        self._map = self._shared.buffer
        self._locked = self._shared.locked

    def _offset(self, model: str) -> int:
        """The model's slot (claimed on first use; linear probing), under the lock."""
        key = (
            int.from_bytes(
                hashlib.blake2b(model.encode(), digest_size=8).digest(), "little", signed=True
            )
            or 1
        )
        for i in range(self._slots):
            offset = ((key + i) % self._slots) * self._SLOT.size
            found, _ = self._SLOT.unpack_from(self._map, offset)
            if found == key:
                return offset
            if found == 0:
                self._SLOT.pack_into(self._map, offset, key, 0.0)
                return offset
        raise RuntimeError(f"pacing: more than {self._slots} models")

    def take(self, model, now, interval, tolerance, max_wait_s):
        with self._locked():
            offset = self._offset(model)
            key, tat = self._SLOT.unpack_from(self._map, offset)
            wait, after = gcra(tat, now, interval, tolerance)
            if wait > max_wait_s:
                raise _refuse(wait)
            self._SLOT.pack_into(self._map, offset, key, after)
        return wait

    def hold(self, model, now, seconds, tolerance):
        with self._locked():
            offset = self._offset(model)
            key, tat = self._SLOT.unpack_from(self._map, offset)
            self._SLOT.pack_into(self._map, offset, key, held_back(tat, now, seconds, tolerance))


# The same rule as gcra() / held_back(), in one atomic step. KEYS[1]: the model's key.
# ARGV: now, interval, tolerance, max_wait ('take') or seconds ('hold'), mode.
# Returns {granted 0/1, wait} with the wait as a string (Redis would truncate a Lua number).
_PACE_LUA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = 0
if ARGV[5] == 'hold' then
  local held = now + tonumber(ARGV[4]) + tolerance
  if held > tat then tat = held end
else
  wait = math.max(0, tat - tolerance - now)
  if wait > tonumber(ARGV[4]) then return {0, string.format('%.6f', wait)} end
  tat = tat + interval
end
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return {1, string.format('%.6f', wait)}
"""


class RedisState:
    """Arrival times in Redis (``liroo:pace:<model>``), shared by every instance; the clock must be
    wall time."""

    PREFIX = "liroo:pace:"

    def __init__(self, url: str) -> None:
        import redis  # only needed when REDIS_URL is set

        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        # Any Redis error (gone, read-only, full, not Redis at all) means: pace on this instance for
        # now.
        self.unavailable_errors = (redis.exceptions.RedisError,)
        self._script = self._redis.register_script(_PACE_LUA)

    def take(self, model, now, interval, tolerance, max_wait_s):
        granted, wait = self._script(
            keys=[self.PREFIX + model],
            args=[repr(now), repr(interval), repr(tolerance), repr(max_wait_s), "take"],
        )
        if not int(granted):
            raise _refuse(float(wait))
        return float(wait)

    def hold(self, model, now, seconds, tolerance):
        self._script(
            keys=[self.PREFIX + model],
            args=[repr(now), "0", repr(tolerance), repr(seconds), "hold"],
        )


class Pacer:
    """``per_minute`` calls a minute per model, ``burst`` at once; ``per_minute`` of 0 turns pacing
    off.

    ``shared`` is the Redis state (None without REDIS_URL); ``local`` the
    instance's shared memory, used when there is no Redis or it cannot be
    reached. Each has its clock: Redis needs wall time (instances compare
    their times there), the instance's memory a monotonic one.
    """

    def __init__(
        self,
        per_minute: float,
        burst: float | None = None,
        *,
        max_wait_s: float = float("inf"),
        shared: RedisState | None = None,
        local: SharedMemoryState | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_s: float = RETRY_S,
    ) -> None:
        self.per_minute = per_minute
        self.burst = max(1.0, burst if burst is not None else per_minute / 10.0)
        self.max_wait_s = max_wait_s
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.tolerance = (self.burst - 1.0) * self.interval  # how far the debt may run ahead of now
        self.shared = shared
        self.local = local if local is not None or per_minute <= 0 else SharedMemoryState()
        self._wall = clock or time.time
        self._monotonic = clock or time.monotonic
        self._sleep = sleep
        self._outage = RedisOutage(
            retry_s,
            log,
            "Redis cannot be reached (%s): Gemini calls are paced by this instance alone, at the "
            "full LIROO_GEMINI_RPM, until it answers again",
            "Redis answers again: Gemini pacing is shared by the service again",
        )

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def acquire(self, model: str) -> float:
        """Wait for the model's next slot; return the seconds waited (RateLimited if that would
        exceed max_wait_s or the request's bound, see ``bounded_by``)."""
        if not self.enabled:
            return 0.0
        bound = _WAIT_BOUND.get()
        max_wait = self.max_wait_s
        if bound is not None:
            max_wait = max(min(max_wait, bound.work_by() - self._monotonic()), 0.0)
        wait = self._on_shared(
            lambda state: state.take(model, self._wall(), self.interval, self.tolerance, max_wait)
        )
        if wait is None:
            wait = self.local.take(
                model, self._monotonic(), self.interval, self.tolerance, max_wait
            )
        if wait > 0:
            if bound is not None and self._monotonic() + wait > bound.answer_by():
                bound.late()
            self._sleep(wait)
        return wait

    def cool_down(self, model: str, seconds: float = 0.0) -> None:
        """After a 429: no call of this model starts for ``seconds``, on any worker (any instance
        with Redis)."""
        if not self.enabled:
            return
        seconds = max(0.0, seconds)
        self._on_shared(lambda state: state.hold(model, self._wall(), seconds, self.tolerance))
        # The instance's budget too, so that losing Redis right now does not forget the 429.
        self.local.hold(model, self._monotonic(), seconds, self.tolerance)

    def _on_shared(self, call: Callable[[RedisState], float | None]) -> float | None:
        """``call(redis_state)``; None when there is no Redis or it cannot be reached (then the
        instance's budget)."""
        shared = self.shared
        if shared is None or not self._outage.may_try:
            return None
        try:
            result = call(shared)
        except shared.unavailable_errors as exc:
            self._outage.failed(type(exc).__name__)
            return None
        self._outage.answered()
        return 0.0 if result is None else result


def service_burst(per_minute: float, max_panels: int) -> float:
    """One comic's pictures start together (LIROO_MAX_PANELS), but never more than a minute's budget
    at once."""
    return max(1.0, min(float(per_minute), float(max(max_panels, math.ceil(per_minute / 10)))))


def make_pacer(settings) -> Pacer:
    """The service's pacer: made once, before gunicorn forks, so its shared memory is the
    instance's."""
    rpm = settings.gemini_rpm
    shared = RedisState(settings.redis_url) if settings.redis_url and rpm > 0 else None
    return Pacer(
        rpm,
        service_burst(rpm, settings.max_panels),
        max_wait_s=settings.gemini_timeout_s,
        shared=shared,
    )
