"""gunicorn settings, from the same Settings as the app, and the governor's hooks.

Threaded workers (gthread): generation spends most of its time waiting on the
model, so threads are cheap concurrency; two workers so a recycle never leaves
none accepting. The app is preloaded in the master and its heap frozen, so
workers share those pages; the memory governor's reservation ledger is created
there too, so every worker sees every other worker's reservations.
"""
import os
import shutil
import tempfile

# prometheus-client picks its multiprocess mode when it is first imported, so
# the folder must be set before anything of Liroo's (which imports it) is; a
# fresh folder per master keeps stale figures of an earlier run out.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="liroo-metrics-")
    _own_metrics_dir = True
else:
    _own_metrics_dir = False

from liroo.settings import Settings  # noqa: E402  (after the metrics folder is set)

settings = Settings.from_env()

bind = [f"0.0.0.0:{settings.port}"]
# gthread, answering the malformed requests gunicorn refuses itself with JSON (liroo/server.py).
worker_class = "liroo.server.JsonErrorWorker"
workers = settings.workers
threads = settings.threads
timeout = settings.worker_timeout_s
graceful_timeout = settings.graceful_timeout_s
keepalive = 5
# With the governor on, request-count recycling is the governor's (liroo/governor/workers.py):
# gunicorn's own gives in-flight work only the short SIGTERM grace and leaves the
# slot empty until the old worker exits. With the governor off, gunicorn's is used.
max_requests = 0 if settings.governor_enabled else settings.max_requests
max_requests_jitter = 0 if settings.governor_enabled or not settings.max_requests else settings.max_requests_jitter
preload_app = True
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
loglevel = settings.log_level.lower()
# gunicorn's error and access logs go through the app's handler: JSON lines on
# Cloud Run (or LIROO_LOG_FORMAT=json), text locally. Configured now so that
# the master's first lines have the same shape.
from liroo.logs import configure_logging  # noqa: E402
configure_logging(settings)
logger_class = "liroo.logs.GunicornLogger"
# Cloud Run's front end is the only peer that sets these headers.
forwarded_allow_ips = "*"


def _services(server):
    return server.app.wsgi().extensions["liroo"]


def _governor(server):
    return _services(server).governor


def when_ready(server):
    from liroo.governor import freeze_heap
    freeze_heap()


def on_starting(server):
    # Made in the master, before any fork, so all workers share one recycle token.
    if settings.governor_enabled:
        from liroo.governor import WorkerRecycler
        server.app.liroo_recycler = WorkerRecycler(
            _governor(server), configured_workers=settings.workers, max_requests=settings.max_requests,
            max_requests_jitter=settings.max_requests_jitter, drain_s=settings.request_deadline_s)


def post_worker_init(worker):
    recycler = getattr(worker.app, "liroo_recycler", None)
    if recycler is not None:
        recycler.attach(worker)


def worker_exit(server, worker):
    """In the exiting worker: let a retiring worker's background jobs finish; hand back the rest."""
    recycler = getattr(worker.app, "liroo_recycler", None)
    runner = _services(worker).runner
    if recycler is not None and recycler.retiring and not recycler.stopping:
        runner.wait_idle(settings.request_deadline_s, beat=worker.notify)
    runner.hand_back()


def child_exit(server, worker):
    """In the master, once a worker is gone."""
    from liroo import metrics
    _governor(server).policy.ledger.forget(worker.pid)
    # A worker killed outright ran no worker_exit: give its jobs back now (a retry runs at once).
    _services(server).runner.hand_back_dead_worker(worker.pid)
    metrics.mark_worker_dead(worker.pid)
    recycler = getattr(server.app, "liroo_recycler", None)
    if recycler is not None:
        recycler.restore_count(server, worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
