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

from liroo.settings import Settings

settings = Settings.from_env()

# prometheus-client's multiprocess mode must be set up before the app (and so
# prometheus_client) is imported; a fresh folder per master keeps stale
# figures of an earlier run out.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="liroo-metrics-")
    _own_metrics_dir = True
else:
    _own_metrics_dir = False

bind = [f"0.0.0.0:{settings.port}"]
worker_class = "gthread"
workers = settings.workers
threads = settings.threads
timeout = settings.worker_timeout_s
graceful_timeout = settings.graceful_timeout_s
keepalive = 5
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter if settings.max_requests else 0
preload_app = True
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
loglevel = settings.log_level.lower()
# Cloud Run's front end is the only peer that sets these headers.
forwarded_allow_ips = "*"


def _governor(server):
    app = server.app.wsgi()
    return app.extensions["liroo"].governor


def when_ready(server):
    from liroo.governor import freeze_heap
    freeze_heap()


def on_starting(server):
    # Made in the master, before any fork, so all workers share one recycle token.
    if settings.governor_enabled:
        from liroo.governor import WorkerRecycler
        server.app.liroo_recycler = WorkerRecycler(_governor(server))


def post_worker_init(worker):
    recycler = getattr(worker.app, "liroo_recycler", None)
    if recycler is not None:
        recycler.attach(worker)


def worker_exit(server, worker):
    if max_requests and getattr(worker, "nr", 0) >= getattr(worker, "max_requests", float("inf")):
        governor = _governor(worker)
        governor.count("recycles")
        governor.emit("recycle", reason="max_requests", requests=worker.nr)


def child_exit(server, worker):
    from liroo import metrics
    _governor(server).policy.ledger.forget(worker.pid)
    metrics.mark_worker_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
