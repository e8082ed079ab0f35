"""Liroo's backend: a Flask app behind a memory governor."""

from __future__ import annotations

import logging
from typing import Callable

from flask import Flask

from . import (
    errors,
    limiter,
    logs,
    media,
    metrics,
    monitoring,
    requestid,
    routes,
    security,
    studio,
)
from .api import cancel, comics, content, openapi, progress
from .api.replay import ReplayLayer
from .api.runner import Runner
from .governor import Governor, GovernorConfig, MemoryGovernorMiddleware, Unreserved
from .jobs import make_job_store
from .limiter import make_limiter
from .providers import make_provider
from .security import API_KEY_HEADER, KeyRing
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
        admission_caller_share=settings.admission_caller_share,
        deadline_s=settings.deadline_s if settings.deadline_enabled else None,
        read_deadline_s=settings.read_deadline_s,
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
    app.register_blueprint(cancel.bp)
    app.register_blueprint(comics.bp)
    app.register_blueprint(content.bp)
    app.register_blueprint(openapi.bp)
    if app.extensions["liroo"].storage.serves_media:
        app.register_blueprint(media.bp)  # local files, or redirects to signed Cloud Storage URLs

    if settings.governor_enabled:
        without_door = app.wsgi_app
        app.wsgi_app = MemoryGovernorMiddleware(
            without_door,
            governor,
            # Monitoring, progress and the studio (a few kB, and at the hard limit how an operator
            # sees why work is refused): liroo/routes.py says which.
            exempt_paths=routes.door_exempt_paths(),
            exempt_prefixes=(),
            route_costs_mb=routes.door_costs_mb(settings),
            request_id=requestid.request_id_from_environ,
            render_error=errors.door_error,  # its answers in the app's shape
            # Looked up by the rule the request matches, as Flask routes it: "//generate_image" too.
            route_of=routes.RouteLookup(app.url_map),
            caller=_door_caller(app.extensions["liroo"].keyring, settings.trusted_proxies),
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


def _door_caller(keyring: KeyRing, trusted_proxies: int) -> Callable[[dict], str]:
    """Who a request comes from, for a caller's share of the door's line (before Flask and the
    key check run): a valid API key's id, else the client's address (through trusted proxies
    only, as the rate limit reads it)."""
    key_header = "HTTP_" + API_KEY_HEADER.upper().replace("-", "_")

    def caller(environ: dict) -> str:
        if keyring.keys_required:
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
            credential = token.strip() if scheme.lower() == "bearer" else ""
            credential = credential or environ.get(key_header, "").strip()
            if credential and (key_id := keyring.identify(credential, True).key_id):
                return "key:" + key_id
        hops = [hop.strip() for hop in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if trusted_proxies and len(hops) >= trusted_proxies and hops[-trusted_proxies]:
            return "addr:" + hops[-trusted_proxies]
        return "addr:" + environ.get("REMOTE_ADDR", "")

    return caller
