"""Prometheus metrics, correct across gunicorn workers.

gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before
the app is imported, so prometheus-client keeps every worker's values in
shared files and ``/metrics`` (answered by any one worker) adds them up.
Outside gunicorn the ordinary in-process registry is used.

Figures that are the same for the whole container (its memory, thresholds,
reservations) are read when scraped rather than stored on every request.
"""

from __future__ import annotations

import os
from typing import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .governor import EventKind, Governor, GovernorEvent
from .governor.probe import MB
from .governor.rule import how_many_fit

REQUESTS = Counter(
    "liroo_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "liroo_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
SHED = Counter("liroo_memory_shed_total", "Requests refused with 503 for memory pressure")
REFUSED = Counter(
    "liroo_memory_reservations_refused_total", "Heavy steps refused for lack of memory"
)
CLEANUPS = Counter("liroo_memory_cleanups_total", "Cleanups run", ["kind", "reason"])
RECLAIMED = Counter("liroo_memory_reclaimed_bytes_total", "Bytes of RSS given back by cleanups")
RECYCLES = Counter("liroo_worker_recycles_total", "Worker recycles", ["reason"])
WORKER_RSS = Gauge(
    "liroo_worker_rss_bytes", "Resident memory of each live worker", multiprocess_mode="liveall"
)
DOOR_WAITS = Histogram(
    "liroo_admission_wait_seconds",
    "Waits in the door's line for memory, by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
)
DOOR_FULL = Counter(
    "liroo_admission_queue_full_total", "Requests refused at once because the door's line was full"
)
IMAGE_CACHE = Counter("liroo_image_cache_total", "Image cache lookups", ["result"])
PROVIDER_CALLS = Counter("liroo_provider_calls_total", "Model calls", ["operation", "outcome"])


def _queued(figures: dict) -> None:
    if figures.get("queue_full"):
        DOOR_FULL.inc()
    else:
        DOOR_WAITS.labels("admitted" if figures.get("admitted") else "shed").observe(
            figures.get("waited_s", 0.0)
        )


def _cleanup(figures: dict) -> None:
    CLEANUPS.labels(figures.get("kind", "full"), figures.get("reason", "threshold")).inc()
    RECLAIMED.inc(max(figures.get("reclaimed_mb", 0.0), 0.0) * MB)


# What each kind of governor event does to the counters (one entry per EventKind).
_ON_EVENT: dict[EventKind, Callable[[dict], None]] = {
    EventKind.SHED: lambda figures: SHED.inc(),
    EventKind.REFUSED: lambda figures: REFUSED.inc(),
    EventKind.QUEUED: _queued,
    EventKind.CLEANUP: _cleanup,
    EventKind.RECYCLE: lambda figures: RECYCLES.labels(figures.get("reason", "rss")).inc(),
    EventKind.RSS: lambda figures: WORKER_RSS.set(figures.get("rss_mb", 0.0) * MB),
}


def on_governor_event(event: GovernorEvent) -> None:
    """Turn the governor's actions into counters."""
    _ON_EVENT[event.kind](event.figures)


class _ContainerMemoryCollector:
    """Container-wide memory figures, read at scrape time."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def collect(self):
        g = self.governor
        used = g.used_bytes()
        yield GaugeMetricFamily(
            "liroo_memory_used_bytes", f"Memory the governor acts on ({g.probe.source})", value=used
        )
        limit = g.probe.limit_bytes
        if limit is not None:
            yield GaugeMetricFamily(
                "liroo_memory_cgroup_limit_bytes", "The container's memory limit", value=limit
            )
        thresholds = GaugeMetricFamily(
            "liroo_memory_threshold_bytes", "Governor thresholds", labels=["level"]
        )
        thresholds.add_metric(["warning"], g.thresholds.warning_mb * MB)
        thresholds.add_metric(["cleanup"], g.thresholds.cleanup_mb * MB)
        thresholds.add_metric(["limit"], g.thresholds.limit_mb * MB)
        yield thresholds
        yield GaugeMetricFamily(
            "liroo_memory_level",
            "0 normal, 1 warning, 2 cleanup, 3 critical",
            value=int(g.level(used / MB)),
        )
        yield GaugeMetricFamily(
            "liroo_memory_reserved_bytes",
            "Outstanding memory reservations, all workers",
            value=g.reserved_bytes(),
        )
        yield GaugeMetricFamily(
            "liroo_admission_queue_length",
            "Requests waiting at the door for memory, all workers",
            value=g.queue_length(),
        )
        per_request_mb = heavy_request_mb()
        yield GaugeMetricFamily(
            "liroo_heavy_request_peak_bytes",
            "What one heavy request is expected to hold at its peak (learned by this worker)",
            value=per_request_mb * MB,
        )
        yield GaugeMetricFamily(
            "liroo_heavy_requests_fit",
            "How many more heavy requests fit under the hard limit now (scale out at 0)",
            value=how_many_fit(
                used / MB, g.reserved_bytes() / MB, per_request_mb, g.thresholds.limit_mb
            ),
        )


def heavy_request_mb() -> float:
    """One heavy request's peak as this worker has learned it: the larger of a picture's
    reservation and a narration's (its chunks in flight at once), floors from the settings
    until a step has been measured. Imported here: generation imports this module."""
    from .generation.images import IMAGE_COSTS
    from .generation.speech import CHUNKS_AHEAD, MAX_CHUNK_CHARS, SPEECH_COSTS
    from .services import services

    settings = services().settings
    picture = IMAGE_COSTS.reserve_mb(settings.image_reserve_mb)
    chunk = SPEECH_COSTS.reserve_mb(settings.speech_reserve_mb, MAX_CHUNK_CHARS)
    return max(picture, CHUNKS_AHEAD * chunk)


def render(governor: Governor) -> bytes:
    """The /metrics text: all workers' values (or this process's, outside gunicorn) plus the
    container figures."""
    container = CollectorRegistry()
    container.register(_ContainerMemoryCollector(governor))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        workers = CollectorRegistry()
        multiprocess.MultiProcessCollector(workers)
    else:
        workers = REGISTRY
    return generate_latest(workers) + generate_latest(container)


def mark_worker_dead(pid: int) -> None:
    """Called by the gunicorn master when a worker exits (multiprocess bookkeeping)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def init_app(app) -> None:
    """Count every request by route (the rule, not the raw path) and status, and time it."""
    import time

    from flask import g, request

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(rule, request.method, str(response.status_code)).inc()
        started = getattr(g, "metrics_started", None)
        if started is not None:
            LATENCY.labels(rule).observe(time.perf_counter() - started)
        return response
