"""gunicorn's server hooks for Liroo, all in one place; gunicorn.conf.py imports them by name.

A worker's life spans two processes: the master (which preloads the app,
forks the workers and reaps them) and the worker itself. Each hook below says
when gunicorn calls it and where, in the order of a worker's life (as
gunicorn's own examples/example_config.py does). The governor's gunicorn
integration (liroo/governor/workers.py: the recycler, ``freeze_heap``) knows
nothing of the app; what the app adds (handing a worker's unfinished jobs
back, the metrics of a dead worker) is wired here.

on_starting(server)
    Master, once, after the app is preloaded and before any worker forks.
    Makes the worker recycler (governor on only), so that every worker shares
    its one recycle token and its line to the master (who is retiring).

when_ready(server)
    Master, once, when the listening sockets are open, before the first fork.
    Freezes the preloaded heap so the workers share its pages.

post_worker_init(worker)
    Worker, once, after it has loaded the app and before it serves. Starts the
    recycler's watch over this worker (RSS and request count) and shortens
    SIGTERM's grace so the worker exits before the master's SIGKILL.

worker_exit(server, worker)
    Worker, once, when its serving loop has ended (SIGTERM, or retiring). A
    retiring worker lets its background jobs finish (up to the request
    deadline); then every job still running in it is handed back as
    ``interrupted`` (a retry runs it afresh at once). A request still in the
    app is answered by the worker itself (liroo/server.py).

child_exit(server, worker)
    Master, once per worker that is gone, however it ended (even SIGKILL or
    the OOM killer, which run no worker_exit). Forgets its memory
    reservations and its metrics, hands back the jobs it was running, and
    sets the worker count back to the setting plus the retiring workers still
    alive (so the extra slot a retiring worker asked for goes with it).

nworkers_changed(server, new_value, old_value)
    Master, whenever gunicorn changes its worker count (a retiring worker's
    SIGTTIN asking for its replacement): sets it to the setting plus the
    retiring workers still alive, the same rule as child_exit, so the count
    never drifts whatever order the signals arrive in.

on_exit(server)
    Master, once, just before it exits: removes the metrics folder it made.

Each action is logged once: a recycle by the governor's event (liroo/logs.py,
"retiring worker"), a dead worker's jobs by the runner.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from .governor import WorkerRecycler, freeze_heap
from .settings import Settings

# Made in the master by on_starting; each forked worker inherits it (None with the governor off).
_recycler: WorkerRecycler | None = None


def _services(server_or_worker):
    """The app's services (the app is preloaded: the master and every worker hold the same one)."""
    return server_or_worker.app.wsgi().extensions["liroo"]


def app_settings(server_or_worker) -> Settings:
    """The app's one Settings (also read by the worker class, liroo/server.py)."""
    return _services(server_or_worker).settings


def on_starting(server) -> None:
    global _recycler
    settings = app_settings(server)
    if settings.governor_enabled:
        _recycler = WorkerRecycler(
            _services(server).governor,
            configured_workers=settings.workers,
            max_requests=settings.max_requests,
            max_requests_jitter=settings.max_requests_jitter,
            drain_s=settings.request_deadline_s,
        )


def when_ready(server) -> None:
    freeze_heap()


def post_worker_init(worker) -> None:
    if _recycler is not None:
        _recycler.attach(worker)


def worker_exit(server, worker) -> None:
    runner = _services(worker).runner
    if _recycler is not None and _recycler.retiring and not _recycler.stopping:
        runner.wait_idle(app_settings(worker).request_deadline_s, beat=worker.notify)
    runner.hand_back()


def child_exit(server, worker) -> None:
    from . import metrics

    services = _services(server)
    services.governor.forget_worker(worker.pid)
    services.runner.hand_back_dead_worker(worker.pid)
    metrics.mark_worker_dead(worker.pid)
    if _recycler is not None:
        _recycler.restore_count(server)


def nworkers_changed(server, new_value, old_value) -> None:
    if _recycler is not None:
        _recycler.restore_count(server)


def on_exit_removing(metrics_dir: str | None) -> Callable:
    """The on_exit hook: removes ``metrics_dir`` (the folder gunicorn.conf.py made), if any."""

    def on_exit(server) -> None:
        if metrics_dir and os.path.isdir(metrics_dir):
            shutil.rmtree(metrics_dir, ignore_errors=True)

    return on_exit
