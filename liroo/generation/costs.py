"""What recent heavy steps of one kind cost in memory, to size the reservation made before the next.

A step's cost is only known once it is done (the size of a picture or of a
speech chunk's audio comes with the model's answer), so reservations are sized
by what recent steps of the same kind turned out to cost, per unit of work
(one picture; one character read aloud), and never below a configured floor.
The largest recent figure is used, so that after warm-up a step rarely needs
more than it reserved. Per process: a worker learns from the steps it ran.
"""

from __future__ import annotations

from collections import deque


class RecentCosts:
    """The last ``KEEP`` costs of one kind of step, in MB per unit of work."""

    KEEP = 32

    def __init__(self) -> None:
        self._per_unit: deque[float] = deque(maxlen=self.KEEP)

    def record_mb(self, cost_mb: float, units: float = 1.0) -> None:
        """A finished step held ``cost_mb`` at its peak for ``units`` of work."""
        if units > 0:
            self._per_unit.append(cost_mb / units)

    def reserve_mb(self, floor_mb: float, units: float = 1.0) -> float:
        """What to reserve for ``units`` of work: the largest recent cost per unit, at least
        ``floor_mb``."""
        return max(floor_mb, max(self._per_unit, default=0.0) * units)
