"""/health, /memory and /metrics: cheap, never shed, no upstream calls; /ready for Cloud Run's
startup probe."""

from __future__ import annotations

import os
import time

from flask import Blueprint, Response, jsonify

from . import metrics, routes
from .clock import utc_timestamp
from .error_answer import ErrorAnswer
from .governor import Level
from .governor.probe import MB
from .services import services
from .storage import STORAGE_HEALTH

bp = Blueprint("monitoring", __name__)


@routes.SERVICE.view(bp)
def service_description():
    """What this service is (also at / for clients that do not ask for HTML); cheap, and
    governed."""
    return jsonify(
        {
            "service": "liroo-backend",
            "status": "ok",
            "health": "/health",
            "openapi": "/openapi.json",
        }
    )


@routes.HEALTH.view(bp)
def health():
    governor = services().governor
    used = governor.used_mb()
    level = governor.level(used)
    critical = level >= Level.CRITICAL
    # what real writes met lately: no probe, nothing slow
    storage_problem = STORAGE_HEALTH.problem()
    if critical:
        message = "Memory is at the hard limit; heavy requests are being refused for now."
    elif storage_problem:
        message = storage_problem + " Requests that store media are refused for now."
    else:
        message = "Liroo backend is running."
    body = {
        "status": "degraded" if critical or storage_problem else "healthy",
        "message": message,
        "memory_usage_mb": round(used, 2),
        "memory_warning": level >= Level.WARNING,
        "memory_critical": critical,
        "timestamp": utc_timestamp(),
    }
    if storage_problem:
        body["storage_error"] = storage_problem
    return jsonify(body)


_SAYS = {"unreachable": "cannot be reached", "refuses writes": "refuses writes"}


@routes.READY.view(bp)
def ready():
    """Cloud Run's startup probe: 503 while a configured Redis cannot be reached or refuses writes
    (a read-only replica, a full Redis), so that an instance that would keep its jobs, budgets and
    limits to itself never takes traffic. One PING and one small write, each waiting at most
    LIROO_REDIS_READ_TIMEOUT_S. (/health stays cheap and never asks Redis: the app calls it before
    every generation.)"""
    store = services().runner.store
    redis_status = getattr(store, "redis_status", None)
    if redis_status is None:
        return jsonify({"status": "ready", "redis": "not configured", "timestamp": utc_timestamp()})
    status = redis_status()
    if status == "ok":
        return jsonify({"status": "ready", "redis": "ok", "timestamp": utc_timestamp()})
    return ErrorAnswer(
        503,
        "redis_unavailable",
        f"Redis (REDIS_URL) {_SAYS[status]}; this instance is not ready.",
        {"timestamp": utc_timestamp()},
        {"Retry-After": "1"},
        lead={"status": "unready", "redis": status},
    ).flask_response()


@routes.MEMORY.view(bp)
def memory():
    svc = services()
    governor = svc.governor
    details = governor.probe.details()
    used = governor.used_mb()
    level = governor.level(used)
    status = {Level.NORMAL: "normal", Level.WARNING: "warning"}.get(level, "critical")
    cgroup = details.get("cgroup")
    return jsonify(
        {
            "memory_usage_mb": round(used, 2),
            "memory_warning_threshold_mb": round(governor.thresholds.warning_mb, 2),
            "memory_limit_mb": round(governor.thresholds.limit_mb, 2),
            "memory_status": status,
            "memory_details": {
                "rss_mb": round(details["rss_bytes"] / MB, 2),
                "vms_mb": round(details["vms_bytes"] / MB, 2)
                if details.get("vms_bytes") is not None
                else None,
                "percent": round(details["percent"], 2)
                if details.get("percent") is not None
                else None,
            },
            "psutil_available": details.get("psutil_available", False),
            "timestamp": utc_timestamp(),
            "source": governor.probe.source,
            "cgroup": None
            if cgroup is None
            else {
                "version": cgroup["version"],
                "usage_mb": _mb(cgroup["usage_bytes"]),
                "working_set_mb": _mb(cgroup["working_set_bytes"]),
                "limit_mb": _mb(cgroup["limit_bytes"]),
            },
            "worker": {
                "pid": os.getpid(),
                "age_s": round(time.monotonic() - governor.started_at, 1),
                "requests_served": governor.requests_served,
                "rss_mb": round(details["rss_bytes"] / MB, 2),
            },
            "governor": {"enabled": svc.settings.governor_enabled, **governor.snapshot()},
        }
    )


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 2)


@routes.METRICS.view(bp)
def prometheus_metrics():
    return Response(metrics.render(services().governor), mimetype="text/plain; version=0.0.4")
