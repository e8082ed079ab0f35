"""Who may call what: API keys for generation, an admin token for internals, rate limits, safe headers.

Everything is off unless configured, because the app sends no credentials
today:

- ``LIROO_API_KEYS`` / ``LIROO_API_KEYS_FILE``: every generation route (every
  route answering a state-changing method, so endpoints added later are
  covered without a list to keep up to date) requires ``Authorization: Bearer
  <key>`` or ``X-API-Key: <key>``; else 401.
- ``LIROO_ADMIN_TOKEN``: ``/memory`` and ``/metrics`` require it (401 without a
  credential, 403 with another one).
- Jobs (``/jobs/<id>``, ``/progress/<id>``, any GET route with a ``request_id``)
  record their caller (a hash of the API key) when claimed; only that caller or
  the admin may read them. With keys off there is no caller to record: the
  unguessable request id is the capability, as before.
- ``LIROO_RATE_LIMIT``: one budget for all generation routes per caller (the
  key's hash with keys on, else the client address; ``X-Forwarded-For`` counts
  only through ``LIROO_TRUSTED_PROXIES`` proxies), kept by Flask-Limiter for
  the whole service in Redis when ``REDIS_URL`` is set, else for the instance
  in a file all its workers share (liroo/ratelimits.py); 429 with ``Retry-After``.
- ``X-Content-Type-Options: nosniff`` on every response Flask answers.

``/health`` and the media files stay open: the app fetches pictures by URL.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass

from flask import Flask, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import parse_many
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from . import ratelimits
from .errors import ApiError, error_response
from .requestid import valid_request_id
from .services import services
from .settings import Settings, SettingsError

log = logging.getLogger("liroo.security")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PATHS = frozenset({"/memory", "/metrics"})
API_KEY_HEADER = "X-API-Key"
RATE_LIMIT_SCOPE = "generation"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """Who sent this request, as far as its credential tells."""

    presented: bool = False      # a credential header was sent (valid or not)
    key_id: str | None = None    # hash of the API key (or admin token) that matched
    admin: bool = False

    @property
    def authenticated(self) -> bool:
        return self.key_id is not None


ANONYMOUS = Caller()


class KeyRing:
    """The configured API keys and admin token, kept only as SHA-256 digests.

    Comparing digests with ``hmac.compare_digest`` keeps the comparison in
    constant time and of constant length (a raw compare would leak the key's
    length); every key is compared, with no early exit, so the time does not
    tell which key matched either.
    """

    def __init__(self, api_keys: list[str], admin_token: str | None) -> None:
        self._key_digests = tuple(_digest(key) for key in dict.fromkeys(api_keys))
        self._admin_digest = _digest(admin_token) if admin_token else None

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        return cls(read_api_keys(settings), settings.admin_token)

    @property
    def keys_required(self) -> bool:
        return bool(self._key_digests)

    @property
    def admin_required(self) -> bool:
        return self._admin_digest is not None

    @property
    def key_count(self) -> int:
        return len(self._key_digests)

    def identify(self, credential: str | None, presented: bool) -> Caller:
        if not credential:
            return Caller(presented=presented)
        presented_digest = _digest(credential)
        matched = False
        for digest in self._key_digests:
            matched |= hmac.compare_digest(presented_digest, digest)
        admin = self._admin_digest is not None and hmac.compare_digest(presented_digest, self._admin_digest)
        # The digest names the caller in job records and rate-limit buckets: not the key itself.
        key_id = presented_digest.hex()[:32] if (matched or admin) else None
        return Caller(presented=True, key_id=key_id, admin=admin)


def read_api_keys(settings: Settings) -> list[str]:
    """``LIROO_API_KEYS`` (comma-separated) plus ``LIROO_API_KEYS_FILE`` (one per line, blanks skipped)."""
    keys = [k.strip() for k in (settings.api_keys or "").split(",")]
    if settings.api_keys_file:
        try:
            with open(settings.api_keys_file, encoding="utf-8") as fh:
                file_keys = [line.strip() for line in fh]
        except (OSError, UnicodeDecodeError) as exc:
            # Refuse to start rather than run with generation open to all.
            raise SettingsError(f"LIROO_API_KEYS_FILE: cannot read {settings.api_keys_file} "
                                f"({type(exc).__name__})") from None
        if not any(file_keys):
            raise SettingsError(f"LIROO_API_KEYS_FILE: {settings.api_keys_file} holds no key")
        keys += file_keys
    return [k for k in keys if k]


def presented_credential() -> tuple[str | None, bool]:
    """(the credential sent, whether any credential header was sent at all).

    ``Authorization`` is split by hand rather than with werkzeug's parser,
    which reads a token holding a non-trailing ``=`` as parameters.
    """
    header = request.headers.get("Authorization")
    api_key = request.headers.get(API_KEY_HEADER)
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), True
    if api_key is not None and api_key.strip():
        return api_key.strip(), True
    return None, header is not None or api_key is not None


def caller() -> Caller:
    """The current request's caller (anonymous outside a request or before the guard ran)."""
    return g.get("liroo_caller", ANONYMOUS)


def caller_id() -> str | None:
    """What a job records as its owner: the caller's key hash, or None when keys are off."""
    keyring = services().keyring
    return caller().key_id if keyring is not None and keyring.keys_required else None


def is_generation_request() -> bool:
    """Every routed request with a state-changing method is generation (it spends model quota)."""
    return request.url_rule is not None and request.method not in SAFE_METHODS


def _keyring() -> KeyRing:
    return services().keyring


def _unauthorized(who: Caller) -> ApiError:
    challenge = 'Bearer realm="liroo"' + (', error="invalid_token"' if who.presented else "")
    message = ("The API key is not valid." if who.presented else
               "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "This credential is not allowed to read this.")


def _guard() -> None:
    """before_request: decide from the route and the credential, before any body is read."""
    rule = request.url_rule
    if rule is None:        # 404/405: answered by the routing error as it is
        return
    keyring = _keyring()
    credential, presented = presented_credential()
    g.liroo_caller = current = keyring.identify(credential, presented)

    if is_generation_request():
        if keyring.keys_required and not current.authenticated:
            raise _unauthorized(current)
    elif rule.rule in ADMIN_PATHS:
        if keyring.admin_required and not current.admin:
            raise _unauthorized(current) if not current.presented else _forbidden()
    elif keyring.keys_required and "request_id" in (request.view_args or {}):
        # Owners are recorded only when keys are on; otherwise the id is the capability
        # and there is nothing to check (and no store read to spend on every poll).
        _check_job_access(current, request.view_args["request_id"])


def _check_job_access(current: Caller, request_id: str) -> None:
    if current.admin or not valid_request_id(request_id):
        return              # the view answers a malformed id with its own 400
    job = services().jobs.store.get(request_id)
    if job is None or job.owner is None or job.owner == current.key_id:
        return              # unknown ids get the view's 404; unowned jobs: the id is the capability
    raise _unauthorized(current) if not current.presented else _forbidden()


def refuse_cut_body(raw: bytes) -> None:
    """413 for a chunked body that reached LIROO_MAX_BODY_BYTES.

    With a Content-Length over the limit werkzeug refuses the request before
    reading it; a chunked body (no length) is read only up to the limit and
    then cut short without an error, which would reach the parser as broken
    JSON. A chunked body of exactly the limit is refused too: it cannot be
    told apart from a longer one without reading past the limit.
    """
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()


def _nosniff(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


# --- rate limits ------------------------------------------------------------------------

def _rate_limit_key() -> str:
    current = caller()
    if _keyring().keys_required and current.key_id:
        return "key:" + current.key_id
    return "addr:" + (request.remote_addr or "unknown")


def make_limiter(settings: Settings) -> Limiter | None:
    """A Flask-Limiter with one shared budget for all generation routes, or None when no limit is set."""
    if not settings.rate_limit:
        return None
    try:
        parse_many(settings.rate_limit)
    except ValueError:
        raise SettingsError(f"LIROO_RATE_LIMIT: expected e.g. '30 per minute', got {settings.rate_limit!r}") from None
    storage_uri, storage_options = ratelimits.storage_settings(settings.redis_url)
    return Limiter(
        key_func=_rate_limit_key,
        default_limits=[],
        application_limits=[ApplicationLimit(settings.rate_limit, scope=RATE_LIMIT_SCOPE,
                                             exempt_when=lambda: not is_generation_request())],
        # moving-window: exact counts, no double burst at a window edge.
        strategy="moving-window",
        # The service's count in Redis, else the instance's (shared by its workers); see liroo/ratelimits.py.
        storage_uri=storage_uri,
        storage_options=storage_options,
        key_prefix="liroo",
        headers_enabled=False,   # Retry-After is set on the 429 below; other answers stay as they were
        # Redis down: the storage itself falls back to the instance's count (not per-process memory).
        in_memory_fallback_enabled=False,
    )


def _rate_limited(exc: RateLimitExceeded):
    limiter: Limiter | None = services().limiter
    retry_after = 1
    current = limiter.current_limit if limiter is not None else None
    if current is not None:
        try:
            retry_after = max(1, math.ceil(current.reset_at - time.time()))
        except Exception:  # the window could not be read: the store is down; 1 s is a safe hint
            log.warning("rate-limit window unreadable", exc_info=True)
    return error_response(429, "rate_limited",
                          f"Too many requests; please retry in {retry_after} seconds.",
                          {"Retry-After": str(retry_after)}, retry_after_s=retry_after)


# --- wiring -----------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    """Install the guard, the rate limiter and the headers; call after ``requestid.init_app``.

    The guard runs before the limiter, so a request without a valid key is
    refused without spending anyone's budget.
    """
    svc = app.extensions["liroo"]
    settings = svc.settings
    svc.keyring = keyring = KeyRing.from_settings(settings)
    app.before_request(_guard)
    app.after_request(_nosniff)

    svc.limiter = limiter = make_limiter(settings)
    if limiter is not None:
        limiter.init_app(app)
        app.register_error_handler(RateLimitExceeded, _rate_limited)

    if settings.trusted_proxies > 0:
        # Only the last N X-Forwarded-For entries, added by our own proxies, are believed.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]

    log.info("security: API keys %s, admin token %s, rate limit %s",
             f"on ({keyring.key_count})" if keyring.keys_required else "off",
             "on" if keyring.admin_required else "off",
             f"{settings.rate_limit} per {'key' if keyring.keys_required else 'client address'} "
             f"({'redis, for the service' if settings.redis_url else 'for this instance'})" if limiter else "off")
    if keyring.keys_required and not keyring.admin_required:
        log.warning("security: LIROO_API_KEYS is set but LIROO_ADMIN_TOKEN is not: /memory and /metrics are open")
