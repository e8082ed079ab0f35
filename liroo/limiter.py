"""The rate limit (``LIROO_RATE_LIMIT``): one budget for all generation routes per caller.

The caller is the API key's hash with keys on, else the client address
(``X-Forwarded-For`` counts only through ``LIROO_TRUSTED_PROXIES`` proxies,
see security.py); the budget is kept by Flask-Limiter for the whole service in
Redis when ``REDIS_URL`` is set, else for the instance in a file all its
workers share (where the counts live: ratelimits.py); over it, 429 with
``Retry-After``. Installed after security.init_app, so that its guard runs
first and a request without a valid key is refused without spending anyone's
budget.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from flask import Flask, request

from .error_answer import ApiError
from .errors import request_answer
from .requestid import REPLAY_LOOKED
from .security import caller, is_generation_request
from .services import services
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask_limiter import Limiter, RateLimitExceeded

# Flask-Limiter and limits are imported only when a rate limit is set: they are ~0.3 s of every
# start (a Cloud Run cold start, each worker's boot) for a feature that is off by default.

log = logging.getLogger("liroo.security")

RATE_LIMIT_SCOPE = "generation"


def _rate_limit_key() -> str:
    current = caller()
    if services().keyring.keys_required and current.key_id:
        return "key:" + current.key_id
    return "addr:" + (request.remote_addr or "unknown")


def make_limiter(settings: Settings) -> Limiter | None:
    """A Flask-Limiter with one shared budget for all generation routes, or None when no limit is
    set."""
    if not settings.rate_limit:
        return None
    from flask_limiter import ApplicationLimit, Limiter
    from limits import parse_many

    from . import ratelimits

    try:
        parse_many(settings.rate_limit)
    except ValueError:
        raise SettingsError(
            f"LIROO_RATE_LIMIT: expected e.g. '30 per minute', got {settings.rate_limit!r}"
        ) from None
    storage_uri, storage_options = ratelimits.storage_settings(settings.redis_url)
    return Limiter(
        key_func=_rate_limit_key,
        default_limits=[],
        application_limits=[
            ApplicationLimit(
                settings.rate_limit,
                scope=RATE_LIMIT_SCOPE,
                # A request the replay layer looked at was counted by the look (api/replay.py).
                exempt_when=lambda: (
                    not is_generation_request() or bool(request.environ.get(REPLAY_LOOKED))
                ),
            )
        ],
        # moving-window: exact counts, no double burst at a window edge.
        strategy="moving-window",
        # The service's count in Redis, else the instance's (shared by its workers); see
        # liroo/ratelimits.py.
        storage_uri=storage_uri,
        storage_options=storage_options,
        key_prefix="liroo",
        # Retry-After is set on the 429 below; other answers stay as they were
        headers_enabled=False,
        # Redis down: the storage itself falls back to the instance's count (not per-process
        # memory).
        in_memory_fallback_enabled=False,
    )


def _rate_limited(exc: "RateLimitExceeded"):
    limiter: Limiter | None = services().limiter
    retry_after = 1
    current = limiter.current_limit if limiter is not None else None
    if current is not None:
        try:
            retry_after = max(1, math.ceil(current.reset_at - time.time()))
        except Exception:  # the window could not be read: the store is down; 1 s is a safe hint
            log.warning("rate-limit window unreadable", exc_info=True)
    return request_answer(
        ApiError(
            429,
            "rate_limited",
            f"Too many requests; please retry in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after_s=retry_after,
        )
    )


def init_app(app: Flask) -> None:
    """Install the rate limiter, if one is set; call after ``security.init_app``."""
    svc = app.extensions["liroo"]
    settings, limiter = svc.settings, svc.limiter
    if limiter is not None:
        from flask_limiter import RateLimitExceeded

        limiter.init_app(app)
        app.register_error_handler(RateLimitExceeded, _rate_limited)
    log.info(
        "security: rate limit %s",
        f"{settings.rate_limit} per {'key' if svc.keyring.keys_required else 'client address'} "
        f"({'redis, for the service' if settings.redis_url else 'for this instance'})"
        if limiter
        else "off",
    )
