"""gunicorn integration: graceful worker recycling and a frozen heap after preload.

A worker is retired when its RSS stays above the line for several
consecutive checks (like uWSGI's reload-on-rss, but spikes pass), or after
about ``max_requests`` requests (like gunicorn's own setting, with jitter).
Retiring is graceful in a way gunicorn's built-in recycling is not:

- its replacement starts *before* it stops accepting (the master is asked
  for one more worker with SIGTTIN and given the count back when the old one
  exits), so capacity never dips, even with a single worker;
- in-flight work may run to its end (``drain_s``, the request deadline),
  instead of gunicorn's shutdown grace of a few seconds meant for SIGTERM;
- only one worker retires at a time, and never one younger than ``min_age_s``.

SIGTERM (a Cloud Run shutdown) keeps the short grace: the worker's own grace
is set a little under the master's so that it exits on its own, handing back
unfinished jobs, before the master kills it.

Only gunicorn's worker object is touched (``alive``, ``cfg``, ``ppid``,
``notify``), so nothing here imports gunicorn.
"""

from __future__ import annotations

import fcntl
import gc
import os
import random
import signal
import tempfile
import threading
import time

from .core import Governor

# A SIGTERMed worker exits this much before the master's grace runs out, so that
# its exit hook (handing back unfinished work) runs before any SIGKILL.
_EXIT_MARGIN_S = 2.0


def freeze_heap() -> None:
    """Move everything loaded so far out of the collector's reach.

    Called in the master after the app is preloaded: forked workers then share
    those pages instead of copying them when the collector touches them.
    """
    gc.collect()
    gc.freeze()


class WorkerRecycler:
    """Watches one gunicorn worker from a background thread and retires it gracefully.

    Make it in the master before the workers fork (``on_starting``), call
    ``attach(worker)`` from ``post_worker_init`` and ``restore_count(server)``
    from ``child_exit`` (the app's hooks: liroo/gunicorn_hooks.py).
    """

    def __init__(
        self,
        governor: Governor,
        *,
        configured_workers: int,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        drain_s: float = 1800.0,
    ) -> None:
        self.governor = governor
        config = governor.config
        self.limit_mb = governor.recycle_mb
        self.strikes_needed = max(config.recycle_strikes, 1)
        self.min_age_s = config.recycle_min_age_s
        self.interval_s = config.recycle_check_interval_s
        self.configured_workers = configured_workers
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.drain_s = drain_s
        self.retiring = False  # this worker is retiring (set in the worker after fork)
        self.stopping = False  # this worker got SIGTERM
        # One token for the whole process tree: the worker that holds its lock
        # is the one retiring (its pid is written in the file, for the master).
        # The kernel releases the lock when that worker exits.
        self._token = tempfile.TemporaryFile(prefix="liroo-recycle-")

    # --- in the worker ---------------------------------------------------------
    def attach(self, worker) -> threading.Thread:
        """Start watching ``worker``; keep SIGTERM's grace short."""
        self.retiring = self.stopping = False
        on_term = signal.getsignal(signal.SIGTERM)
        master_grace = worker.cfg.graceful_timeout

        def handle_term(sig, frame):
            self.stopping = True
            worker.cfg.set("graceful_timeout", int(max(master_grace - _EXIT_MARGIN_S, 1)))
            if callable(on_term):
                on_term(sig, frame)

        signal.signal(signal.SIGTERM, handle_term)
        limit = 0
        if self.max_requests > 0:
            limit = self.max_requests + random.randint(0, max(self.max_requests_jitter, 0))
        thread = threading.Thread(
            target=self._watch, args=(worker, limit), name="liroo-recycler", daemon=True
        )
        thread.start()
        return thread

    def _take_token(self) -> bool:
        try:
            fcntl.lockf(self._token, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _watch(self, worker, request_limit: int) -> None:
        strikes = 0
        wake = threading.Event()
        # Jitter the first check so that workers started together do not check together.
        wake.wait(self.interval_s * random.uniform(0.5, 1.0))
        while getattr(worker, "alive", False) and not self.stopping:
            rss_mb = self.governor.read_rss_mb()
            strikes = strikes + 1 if rss_mb > self.limit_mb else 0
            age = time.monotonic() - self.governor.started_at
            reason = None
            if strikes >= self.strikes_needed and age >= self.min_age_s:
                reason = "rss"
            elif request_limit and self.governor.requests_served >= request_limit:
                reason = "max_requests"
            if reason and self._take_token():
                self.retire(
                    worker,
                    reason,
                    rss_mb=round(rss_mb, 1),
                    limit_mb=round(self.limit_mb, 1),
                    strikes=strikes,
                    age_s=round(age, 1),
                    requests=self.governor.requests_served,
                )
                return
            wake.wait(self.interval_s)

    def retire(self, worker, reason: str, **figures) -> None:
        """Start a replacement, stop accepting, let in-flight work finish, exit."""
        self.retiring = True
        os.pwrite(self._token.fileno(), str(os.getpid()).encode().ljust(16), 0)
        # Counted by the governor and logged once, by its listener (the app's: liroo/logs.py), with
        # these figures.
        self.governor.retiring(reason, **figures)
        worker.cfg.set("graceful_timeout", int(self.drain_s))
        try:
            os.kill(worker.ppid, signal.SIGTTIN)  # the master starts one more worker now
        except OSError:
            pass
        worker.alive = False  # gunicorn stops accepting, finishes in-flight requests, exits

    # --- in the master -----------------------------------------------------------
    def restore_count(self, server, pid: int) -> None:
        """A worker exited: if it was the retiring one, give back the extra slot it asked for."""
        try:
            retiring_pid = int(os.pread(self._token.fileno(), 16, 0).strip() or 0)
        except (OSError, ValueError):
            retiring_pid = 0
        if pid == retiring_pid and server.num_workers > self.configured_workers:
            server.num_workers -= 1
            os.pwrite(self._token.fileno(), b" " * 16, 0)
