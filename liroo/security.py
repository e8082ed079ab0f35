"""Who may call what: API keys for generation, an admin token for internals, job ownership, safe
headers.

Everything is off unless configured, because the app sends no credentials
today:

- ``LIROO_API_KEYS`` / ``LIROO_API_KEYS_FILE``: every generation route (every
  route answering a state-changing method, so endpoints added later are
  covered without a list to keep up to date) requires ``Authorization: Bearer
  <key>`` or ``X-API-Key: <key>``; else 401.
- ``LIROO_ADMIN_TOKEN``: the admin routes (``/memory`` and ``/metrics``, so
  declared in liroo/routes.py) require it (401 without a credential, 403
  with another one).
- Jobs (``/jobs/<id>``, ``/progress/<id>``, any GET route with a ``request_id``)
  record their caller (a hash of the API key) when claimed; only that caller or
  the admin may read them. With keys off there is no caller to record: the
  unguessable request id is the capability, as before.
- ``LIROO_TRUSTED_PROXIES``: how many proxies' ``X-Forwarded-For`` and
  ``X-Forwarded-Proto`` entries are believed, for the client address (which the
  rate limit, liroo/limiter.py, counts by when keys are off) and the scheme of
  the URLs the app makes (Cloud Run's front end sets it: 1 there). Nothing else
  forwarded is believed from anyone: ``X-Forwarded-Host``, ``-Port`` and
  ``-Prefix`` are not (Cloud Run passes a client's through unchanged), and
  gunicorn takes no ``SCRIPT_NAME``/``PATH_INFO`` header and no scheme header
  (gunicorn.conf.py), so a client cannot re-root the app or break its routes.
- ``X-Content-Type-Options: nosniff`` on every response Flask answers.

``/health`` and the media files stay open: the app fetches pictures by URL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import routes
from .error_answer import ApiError
from .requestid import valid_request_id
from .services import services
from .settings import Settings, SettingsError

log = logging.getLogger("liroo.security")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_KEY_HEADER = "X-API-Key"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """Who sent this request, as far as its credential tells."""

    presented: bool = False  # a credential header was sent (valid or not)
    key_id: str | None = None  # hash of the API key (or admin token) that matched
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
        admin = self._admin_digest is not None and hmac.compare_digest(
            presented_digest, self._admin_digest
        )
        # The digest names the caller in job records and rate-limit buckets: not the key itself.
        key_id = presented_digest.hex()[:32] if (matched or admin) else None
        return Caller(presented=True, key_id=key_id, admin=admin)


def read_api_keys(settings: Settings) -> list[str]:
    """``LIROO_API_KEYS`` (comma-separated) plus ``LIROO_API_KEYS_FILE`` (one per line, blanks
    skipped)."""
    keys = [k.strip() for k in (settings.api_keys or "").split(",")]
    if settings.api_keys_file:
        try:
            with open(settings.api_keys_file, encoding="utf-8") as fh:
                file_keys = [line.strip() for line in fh]
        except (OSError, UnicodeDecodeError) as exc:
            # Refuse to start rather than run with generation open to all.
            raise SettingsError(
                f"LIROO_API_KEYS_FILE: cannot read {settings.api_keys_file} ({type(exc).__name__})"
            ) from None
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
    return caller().key_id if services().keyring.keys_required else None


def is_generation_request() -> bool:
    """Every routed request with a state-changing method is generation (it spends model quota)."""
    return request.url_rule is not None and request.method not in SAFE_METHODS


def _unauthorized(who: Caller) -> ApiError:
    challenge = 'Bearer realm="liroo"' + (', error="invalid_token"' if who.presented else "")
    message = (
        "The API key is not valid."
        if who.presented
        else "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
    )
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "This credential is not allowed to read this.")


def _guard() -> None:
    """before_request: decide from the route and the credential, before any body is read."""
    rule = request.url_rule
    if rule is None:  # 404/405: answered by the routing error as it is
        return
    keyring = services().keyring
    credential, presented = presented_credential()
    g.liroo_caller = current = keyring.identify(credential, presented)

    if is_generation_request():
        if keyring.keys_required and not current.authenticated:
            raise _unauthorized(current)
    elif routes.is_admin(rule.rule):
        if keyring.admin_required and not current.admin:
            raise _unauthorized(current) if not current.presented else _forbidden()
    elif keyring.keys_required and "request_id" in (request.view_args or {}):
        # Owners are recorded only when keys are on; otherwise the id is the capability
        # and there is nothing to check (and no store read to spend on every poll).
        _check_job_access(current, request.view_args["request_id"])


def _check_job_access(current: Caller, request_id: str) -> None:
    if current.admin or not valid_request_id(request_id):
        return  # the view answers a malformed id with its own 400
    job = services().runner.store.get(request_id)
    if job is None or job.owner is None or job.owner == current.key_id:
        return  # unknown ids get the view's 404; unowned jobs: the id is the capability
    raise _unauthorized(current) if not current.presented else _forbidden()


def _nosniff(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


# --- wiring -----------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Install the guard and the headers; call after ``requestid.init_app`` and before
    ``limiter.init_app``.

    The guard runs before the limiter, so a request without a valid key is
    refused without spending anyone's budget.
    """
    svc = app.extensions["liroo"]
    settings, keyring = svc.settings, svc.keyring
    app.before_request(_guard)
    app.after_request(_nosniff)

    if settings.trusted_proxies > 0:
        # Only the last N entries, added by our own proxies, are believed; the other X-Forwarded-*
        # headers not at all (x_host, x_port, x_prefix: 0), as a proxy passes a client's through.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0)  # type: ignore[method-assign]

    log.info(
        "security: API keys %s, admin token %s",
        f"on ({keyring.key_count})" if keyring.keys_required else "off",
        "on" if keyring.admin_required else "off",
    )
    if keyring.keys_required and not keyring.admin_required:
        log.warning(
            "security: LIROO_API_KEYS is set but LIROO_ADMIN_TOKEN is not: /memory and /metrics "
            "are open"
        )
