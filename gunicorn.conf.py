"""gunicorn settings, from the same Settings as the app; the hooks are liroo/gunicorn_hooks.py's.

Threaded workers (gthread): generation spends most of its time waiting on the
model, so threads are cheap concurrency; two workers so a recycle never leaves
none accepting. The app is preloaded in the master and its heap frozen, so
workers share those pages; the memory governor's reservation ledger is created
there too, so every worker sees every other worker's reservations.
"""

import os
import tempfile

# prometheus-client picks its multiprocess mode when it is first imported, so
# the folder must be set before anything of Liroo's (which imports it) is; a
# fresh folder per master keeps stale figures of an earlier run out.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="liroo-metrics-"
    )

# Allocator settings (README: "Allocator settings"): none beyond the governor's mmap threshold
# (LIROO_MMAP_THRESHOLD_KB, 8 MB, at and above the cleanup line, so a freed image leaves the
# process at once; 32 MB below it, with the heap trimmed when a worker's work is done).
# PILLOW_BLOCKS_MAX stays at Pillow's 0 on purpose: freed blocks Pillow keeps for reuse are memory
# the governor reads as used and no reservation owns, so a request can wait for room only that
# cache holds (a comic of 3072x3072 pictures under 220 MB: 5 s with 0 blocks, never done with 8).

from liroo.settings import Settings  # noqa: E402  (after the metrics folder is set)

settings = Settings.from_env()

bind = [f"{settings.bind_host}:{settings.port}"]  # LIROO_BIND: loopback unless opened
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
max_requests_jitter = (
    0 if settings.governor_enabled or not settings.max_requests else settings.max_requests_jitter
)
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
# Forwarded headers are the app's to believe, from LIROO_TRUSTED_PROXIES hops only (werkzeug's
# ProxyFix: liroo/security.py), never gunicorn's: it would take any peer's SCRIPT_NAME and
# PATH_INFO headers (re-rooting the app, or a 500 on every route) and X-Forwarded-Proto.
forwarded_allow_ips = ""  # no peer may set them
forwarder_headers = ""  # SCRIPT_NAME, PATH_INFO: never from a header
secure_scheme_headers: dict = {}  # the scheme: ProxyFix's x_proto


# The server hooks: what each does, when and in which process, is said in that module.
from liroo.gunicorn_hooks import (  # noqa: E402,F401  (gunicorn finds hooks by name here)
    child_exit,
    nworkers_changed,
    on_exit_removing,
    on_starting,
    post_worker_init,
    when_ready,
    worker_exit,
)

on_exit = on_exit_removing(_own_metrics_dir)
