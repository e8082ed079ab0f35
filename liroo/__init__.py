"""Liroo's backend: a Flask app behind a memory governor."""

from __future__ import annotations

import logging

from flask import Flask

from . import api, errors, limiter, logs, media, metrics, monitoring, requestid, security, studio
from .api import comics, content, openapi, progress
from .api.replay import ReplayLayer
from .api.runner import Runner
from .governor import Governor, GovernorConfig, MemoryGovernorMiddleware, Unreserved
from .jobs import make_job_store
from .limiter import make_limiter
from .providers import make_provider
from .security import KeyRing
from .services import Services
from .settings import Settings
from .storage import make_storage

log = logging.getLogger("liroo")


def governor_config(settings: Settings) -> GovernorConfig:
    return GovernorConfig(
        limit_mb=settings.memory_limit_mb,
        cleanup_mb=settings.force_gc_threshold_mb,
        warning_mb=settings.memory_warning_mb,
        cleanup_min_interval_s=settings.gc_min_interval_s,
        retry_after_s=settings.retry_after_s,
        recycle_mb=settings.worker_recycle_mb,
        recycle_strikes=settings.recycle_strikes,
        recycle_min_age_s=settings.recycle_min_age_s,
        recycle_check_interval_s=settings.recycle_check_interval_s,
        mmap_threshold_kb=settings.mmap_threshold_kb if settings.governor_enabled else 0,
        admission_wait_s=settings.admission_wait_s,
        admission_queue=settings.admission_queue,
    )


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, governor, blueprints, and the governor's middleware around it
    all."""
    settings = settings or Settings.from_env()
    logs.configure_logging(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False

    governor = Governor(governor_config(settings))
    governor.subscribe(metrics.on_governor_event)
    governor.subscribe(logs.log_governor_event)
    app.extensions["liroo"] = Services(
        settings=settings,
        governor=governor,
        reserver=governor if settings.governor_enabled else Unreserved(),
        provider=make_provider(settings),
        storage=make_storage(settings),
        runner=Runner(
            make_job_store(settings),
            max_async=settings.threads,
            joins_per_request=settings.joins_per_request,
        ),
        keyring=KeyRing.from_settings(settings),
        limiter=make_limiter(settings),
    )

    errors.register_error_handlers(app)
    requestid.init_app(app)
    security.init_app(app)  # after request ids, so its 401/403 carry one
    limiter.init_app(app)  # after the guard: a request without a valid key spends no budget
    metrics.init_app(app)
    app.register_blueprint(studio.bp)
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(progress.bp)
    app.register_blueprint(comics.bp)
    app.register_blueprint(content.bp)
    app.register_blueprint(openapi.bp)
    if settings.storage_backend == "local":
        app.register_blueprint(media.bp)  # GCS serves its own URLs

    if settings.governor_enabled:
        without_door = app.wsgi_app
        app.wsgi_app = MemoryGovernorMiddleware(
            without_door,
            governor,
            # The studio page and its files too: a few kB, and at the hard limit they are how an
            # operator sees why work is refused (its gauge reads /health).
            exempt_paths=("/health", "/ready", "/memory", "/metrics", "/"),
            # The app stops polling after one failed poll: progress is a cheap read, never shed.
            exempt_prefixes=("/progress/", "/jobs/", "/studio/static/"),
            route_costs_mb=_route_costs(app, settings),
            request_id=requestid.request_id_from_environ,
            extra_fields=api.shed_fields,
        )
        # Outside the door: a retry whose answer is stored, or that joins its running first
        # attempt, costs no memory and is never refused for memory (liroo/api/replay.py).
        app.wsgi_app = ReplayLayer(app, without_door, app.wsgi_app, settings.max_body_bytes)
    log.info(
        "liroo ready: governor %s, limit %.0f MB (%s)",
        "on" if settings.governor_enabled else "off",
        governor.thresholds.limit_mb,
        governor.probe.source,
    )
    return app


def _route_costs(app: Flask, settings: Settings) -> dict[str, float]:
    """Paths whose views declare a memory cost (see liroo.api.costs_one_image), for the governor's
    door."""
    costs = {}
    for rule in app.url_map.iter_rules():
        cost = getattr(app.view_functions.get(rule.endpoint), "memory_cost", None)
        if cost is not None and not rule.arguments:
            costs[rule.rule] = float(cost(settings))
    return costs
