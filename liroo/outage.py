"""One process's view of a Redis outage, for the parts that fall back to the instance while Redis
cannot be used.

The job store (liroo/jobs/fallback.py), the rate-limit counts (liroo/ratelimits.py)
and Gemini pacing (liroo/providers/pacing.py) each keep working on the instance
alone while Redis is down; each tries Redis again at most every ``retry_s``
seconds, and logs the outage once (WARNING) when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time

RETRY_S = 3.0  # while Redis is down, it is tried again at most this often


class RedisOutage:
    """Whether Redis may be tried now; the start and the end of an outage, each logged once."""

    def __init__(self, retry_s: float, log: logging.Logger, started: str, ended: str) -> None:
        self.retry_s = retry_s
        self._log = log
        self._started = started  # a %-format of the log call's arguments given to failed()
        self._ended = ended
        self._lock = threading.Lock()
        self._down_until = 0.0  # time.monotonic() before which Redis is not tried
        self._outage = False

    @property
    def may_try(self) -> bool:
        """False while an outage is known and its retry interval has not passed."""
        return time.monotonic() >= self._down_until

    def failed(self, *args: object) -> None:
        """Redis could not be used: not tried again for ``retry_s``; the first failure of an outage
        is logged."""
        with self._lock:
            self._down_until = time.monotonic() + self.retry_s
            first, self._outage = not self._outage, True
        if first:
            self._log.warning(self._started, *args)

    def answered(self, wrote: bool = True) -> None:
        """Redis answered: the end of an outage, if there was one, is logged. Only a write ends
        one: a read-only replica or a full Redis still answers reads, and must not flap."""
        if wrote and self._outage:
            with self._lock:
                back, self._outage = self._outage, False
            if back:
                self._log.warning(self._ended)
