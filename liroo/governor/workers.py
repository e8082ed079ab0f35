"""gunicorn integration: graceful worker recycling and a frozen heap after preload.

A worker is retired when its RSS stays above the line for several
consecutive checks (like uWSGI's reload-on-rss, but spikes pass), or after
about ``max_requests`` requests (like gunicorn's own setting, with jitter).
Retiring is graceful in a way gunicorn's built-in recycling is not:

- its replacement starts *before* it stops accepting (the retiring worker
  tells the master its pid, then wakes it with SIGTTIN; the master keeps
  ``configured + live retiring workers`` running), so capacity never dips,
  even with a single worker;
- in-flight work may run to its end (``drain_s``, the request deadline),
  instead of gunicorn's shutdown grace of a few seconds meant for SIGTERM;
- only one worker retires at a time, and never one younger than ``min_age_s``.

SIGTERM (a Cloud Run shutdown) keeps the short grace: the worker's own grace
is set a little under the master's so that it exits on its own, handing back
unfinished jobs, before the master kills it.

The master never counts up and down: whenever its worker count changes or a
worker exits, it sets the count to the configured one plus the retiring
workers still alive, each of which announced itself with a message of its
own (a counter or one shared "who is retiring" slot drifts when one worker
retires just as the previous one exits). So the count always comes back to
the setting; with the governor on, SIGTTIN and SIGTTOU are not a way to
change it.

Only gunicorn's worker object (``alive``, ``cfg``, ``ppid``, ``notify``) and
the master's ``num_workers`` and ``WORKERS`` are touched, so nothing here
imports gunicorn.
"""

from __future__ import annotations

import fcntl
import gc
import os
import random
import signal
import struct
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


class RetiringWorkers:
    """Which workers are retiring, as each tells the master: one message per worker, so none
    overwrites another's.

    A pipe made in the master before the workers fork: a worker writes its pid
    (4 bytes: an atomic pipe write) in ``announce``; the master drains it in
    ``wanted_workers``. Nothing to clean up: the kernel frees the pipe.
    """

    _PID = struct.Struct("=i")

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._pids: set[int] = set()  # the master's view

    def announce(self, pid: int) -> None:
        """In the worker, before it asks for its replacement."""
        try:
            os.write(self._write_fd, self._PID.pack(pid))
        except OSError:  # a full pipe: the master is not reading; nothing better to do here
            pass

    def wanted_workers(self, configured: int, live_pids) -> int:
        """In the master: ``configured`` plus the announced workers among ``live_pids``."""
        while True:
            try:
                data = os.read(self._read_fd, 4096)  # a multiple of 4: only whole pids
            except BlockingIOError:
                break
            if not data:
                break
            self._pids.update(pid for (pid,) in self._PID.iter_unpack(data))
        live = set(live_pids)
        self._pids &= live  # forget the ones that have exited
        return configured + len(self._pids)


class WorkerRecycler:
    """Watches one gunicorn worker from a background thread and retires it gracefully.

    Make it in the master before the workers fork (``on_starting``), call
    ``attach(worker)`` from ``post_worker_init`` and ``restore_count(server)``
    from ``child_exit`` and ``nworkers_changed`` (the app's hooks:
    liroo/gunicorn_hooks.py).
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
        # One token for the whole process tree: only the worker that holds its lock
        # may retire. The kernel releases the lock when that worker exits.
        self._token = tempfile.TemporaryFile(prefix="liroo-recycle-")
        self._retiring_workers = RetiringWorkers()

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
        self._retiring_workers.announce(os.getpid())
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
    def restore_count(self, server) -> None:
        """A worker exited or the count changed: run the configured count plus one per live
        retiring worker (whose replacement it asked for)."""
        wanted = self._retiring_workers.wanted_workers(self.configured_workers, server.WORKERS)
        if server.num_workers != wanted:
            server.num_workers = wanted  # gunicorn's manage_workers spawns up to it next
