"""How long the rest of a request's work is expected to take, learned from recent runs of its
route.

A request's waits end early enough for its answer to be in time (context.Context.answer_by),
and a request still at work at its deadline tells the client when to retry (its Retry-After):
both need the time the steps still to come will take. Recent successful runs of the same route
say it, as seconds per progress step (a run's wall time over its steps, so the steps' own
parallelism is in the figure). The median of recent runs is used: one slow run under pressure
should not make every request give up its answer early. Per process, as costs.py: a worker
learns from the runs it made.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque


class RouteTimes:
    """The last ``KEEP`` runs' seconds per step, per route."""

    KEEP = 16

    def __init__(self) -> None:
        self._per_step: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, route: str, seconds: float, steps: int) -> None:
        """A run of ``route`` succeeded in ``seconds`` over ``steps`` progress steps."""
        if steps <= 0 or seconds < 0:
            return
        with self._lock:
            self._per_step.setdefault(route, deque(maxlen=self.KEEP)).append(seconds / steps)

    def expected_s(self, route: str, steps_left: int) -> float | None:
        """Seconds ``steps_left`` more steps of ``route`` are expected to take; None until a run of
        it was measured."""
        with self._lock:
            recent = self._per_step.get(route)
            per_step = statistics.median(recent) if recent else None
        return None if per_step is None else per_step * max(steps_left, 0)


ROUTE_TIMES = RouteTimes()
