"""gunicorn integration: graceful RSS recycling and a frozen heap after preload.

Like uWSGI's reload-on-rss, but safer: a worker is recycled only after its RSS
stays above the line for several consecutive checks (spikes pass), only when
it is old enough, only one worker at a time (so one always accepts), and
gracefully: it stops accepting, finishes in-flight requests, and exits;
gunicorn's master starts the replacement.

Only gunicorn's worker object is touched (its ``alive`` flag, the same switch
gunicorn's own ``max_requests`` uses), so nothing here imports gunicorn.
"""
from __future__ import annotations

import fcntl
import gc
import logging
import random
import tempfile
import threading
import time

from .core import Governor
from .probe import MB

log = logging.getLogger("liroo.governor")


def freeze_heap() -> None:
    """Move everything loaded so far out of the collector's reach.

    Called in the master after the app is preloaded: forked workers then share
    those pages instead of copying them when the collector touches them.
    """
    gc.collect()
    gc.freeze()


class WorkerRecycler:
    """Watches one worker's RSS from a background thread and retires it gracefully."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor
        config = governor.config
        self.limit_mb = governor.recycle_mb
        self.strikes_needed = max(config.recycle_strikes, 1)
        self.min_age_s = config.recycle_min_age_s
        self.interval_s = config.recycle_check_interval_s
        # One token for the whole process tree: the worker that holds its lock
        # is the one recycling. The kernel releases it when that worker exits.
        self._token = tempfile.TemporaryFile(prefix="liroo-recycle-")

    def attach(self, worker) -> threading.Thread:
        """Start watching ``worker`` (call from gunicorn's ``post_worker_init`` hook)."""
        thread = threading.Thread(target=self._watch, args=(worker,), name="liroo-recycler", daemon=True)
        thread.start()
        return thread

    def _take_token(self) -> bool:
        try:
            fcntl.lockf(self._token, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _watch(self, worker) -> None:
        strikes = 0
        wake = threading.Event()
        # Jitter the first check so that workers started together do not check together.
        wake.wait(self.interval_s * random.uniform(0.5, 1.0))
        while getattr(worker, "alive", False):
            rss_mb = self.governor.probe.rss_bytes() / MB
            self.governor.emit("rss", rss_mb=round(rss_mb, 1))
            strikes = strikes + 1 if rss_mb > self.limit_mb else 0
            age = time.monotonic() - self.governor.started_at
            if strikes >= self.strikes_needed and age >= self.min_age_s and self._take_token():
                self.governor.count("recycles")
                self.governor.emit("recycle", reason="rss", rss_mb=round(rss_mb, 1),
                                   limit_mb=round(self.limit_mb, 1), strikes=strikes, age_s=round(age, 1))
                log.warning("recycling worker %s: RSS %.0f MB above %.0f MB for %d checks",
                            self.governor.pid, rss_mb, self.limit_mb, strikes)
                worker.alive = False  # stop accepting, finish in-flight requests, exit
                return
            wake.wait(self.interval_s)
