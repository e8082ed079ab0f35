"""The admission rule and the door's estimates: pure functions of figures, no state, no clock.

Admission happens before work starts, because an after-the-fact check (uWSGI's
reload-on-rss, Celery's max-memory-per-child) cannot stop one request from
exhausting memory. The rule counts every byte once:

    admitted  <=>  used + unspent + cost < hard limit

``used`` is the reading (everything allocated now, every worker); ``unspent``
the ledger's total: the part of each promise (a reservation, a door pledge)
that its holder has not yet allocated (see pledges.Reservation.hold). Work with
no declared cost asks only whether the reading is under the limit: promises are
for heavy work, and a cheap request must not queue behind them.

The door's estimates follow Little's law: with ``running`` costed requests
each taking ``service_s`` on average, one ends every ``service_s / running``
seconds, so the request with ``place`` requests ahead of it is let in after
``(place + 1) * service_s / running``. ``Retry-After`` is that figure for a
newcomer at the back of the line, rounded up.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .probe import MB

# The operations guide's fixed thresholds, used when no cgroup limit is visible.
GUIDE_LIMIT_MB, GUIDE_CLEANUP_MB, GUIDE_WARNING_MB = 1500.0, 1200.0, 1000.0
# Shares of a visible cgroup limit.
LIMIT_SHARE, CLEANUP_SHARE, WARNING_SHARE = 0.75, 0.60, 0.50
# Retry-After never says more than this: past it, a client had better try another instance.
RETRY_AFTER_MAX_S = 300
# How much of the service-time average one new measurement moves (an EWMA's weight).
SERVICE_WEIGHT = 0.3


class Level(enum.IntEnum):
    NORMAL = 0
    WARNING = 1
    CLEANUP = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Thresholds:
    warning_mb: float
    cleanup_mb: float
    limit_mb: float

    @classmethod
    def derive(
        cls,
        cgroup_limit_bytes: int | None,
        limit_mb: float | None = None,
        cleanup_mb: float | None = None,
        warning_mb: float | None = None,
    ) -> "Thresholds":
        """Explicit values win. Missing ones keep the 75/60/50 proportions: of an explicit
        hard limit when one is set, else of the cgroup limit, else the guide's 1500/1200/1000.
        The result is always ordered warning <= cleanup <= limit."""
        if limit_mb is None:
            if cgroup_limit_bytes:
                limit_mb = cgroup_limit_bytes / MB * LIMIT_SHARE
            else:
                limit_mb = GUIDE_LIMIT_MB
        if cleanup_mb is None:
            cleanup_mb = limit_mb * CLEANUP_SHARE / LIMIT_SHARE
        if warning_mb is None:
            warning_mb = limit_mb * WARNING_SHARE / LIMIT_SHARE
        cleanup_mb = min(cleanup_mb, limit_mb)
        warning_mb = min(warning_mb, cleanup_mb)
        return cls(warning_mb=warning_mb, cleanup_mb=cleanup_mb, limit_mb=limit_mb)

    def level(self, used_mb: float) -> Level:
        if used_mb >= self.limit_mb:
            return Level.CRITICAL
        if used_mb >= self.cleanup_mb:
            return Level.CLEANUP
        if used_mb >= self.warning_mb:
            return Level.WARNING
        return Level.NORMAL


def fits(used: float, unspent: float, cost: float, limit: float) -> bool:
    """The admission rule (any one unit): does work costing ``cost`` stay under ``limit``?"""
    if cost <= 0:
        return used < limit
    return used + unspent + cost < limit


def how_many_fit(used: float, unspent: float, cost: float, limit: float) -> int:
    """How many more units of work costing ``cost`` fit in what is neither used nor promised
    under ``limit`` (0 when full or over, or when the cost is not known yet): the most ``n``
    for which ``fits`` admits ``n`` of them at once, so free room of exactly ``k x cost`` holds
    ``k - 1`` (the rule wants to stay under the limit, not reach it)."""
    free = limit - used - unspent
    if cost <= 0 or free <= 0:
        return 0
    return math.ceil(free / cost) - 1


def drain_wait_s(place: int, service_s: float, running: int) -> float:
    """Expected wait of a request with ``place`` requests ahead of it in the door's line."""
    return (place + 1) * service_s / max(running, 1)


def retry_after_s(expected_wait_s: float | None, fallback_s: int) -> int:
    """Whole seconds for ``Retry-After``: the expected wait, rounded up, within [1, 300];
    ``fallback_s`` while nothing is measured."""
    if expected_wait_s is None:
        return fallback_s
    return min(max(math.ceil(expected_wait_s), 1), RETRY_AFTER_MAX_S)


def wait_end(now: float, wait_s: float, deadline: float | None, service_s: float | None) -> float:
    """When a wait at the door must end: after ``wait_s``, and early enough that the request's
    expected service (``service_s``, unknown: 0) still ends by its ``deadline``."""
    end = now + wait_s
    if deadline is not None:
        end = min(end, deadline - (service_s or 0.0))
    return end


def step_end(now: float, wait_s: float | None, deadline: float | None) -> float:
    """When a heavy step's wait for room must end: after ``wait_s``, never past ``deadline``
    (neither given: now, no wait; only a deadline: the deadline)."""
    end = now + (wait_s if wait_s is not None else (0.0 if deadline is None else math.inf))
    return end if deadline is None else min(end, deadline)


def ewma(average: float, count: int, sample: float) -> float:
    """The service-time average after ``sample`` (the first sample is the average)."""
    if count <= 0:
        return sample
    return average + SERVICE_WEIGHT * (sample - average)


def request_deadline(now: float, default_s: float, timeout_ms: str | None) -> float:
    """The request's deadline: ``now`` plus the route's default, or plus the client's own
    ``X-Request-Timeout-Ms`` (relative milliseconds) when shorter; a client never lengthens it.
    Raises ValueError for a value that is not a positive whole number of milliseconds."""
    if timeout_ms is None:
        return now + default_s
    value = timeout_ms.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 12 or int(value) <= 0:
        raise ValueError(timeout_ms)
    return now + min(default_s, int(value) / 1000)


def caller_slots(queue_max: int, share: float) -> int:
    """How many places of a ``queue_max`` line one caller may hold (at least one)."""
    return max(1, int(queue_max * share))
