"""Request ids: the caller's when it sends a valid one, else a new UUID; echoed back.

The app retries a POST with the same body; an id it chose lets it poll
progress while the request runs and lets a retry find the first attempt.

``g.request_id`` is written here only. Each request gets its id before any
view runs (the header's, else a new UUID, so that even an early error carries
one); a generation without the header decides its id once, when its body has
been read (``generation_request_id``: the body's ``request_id``, else one
derived from the request), and that id replaces the placeholder UUID.

A derived id is an HMAC of the request under a server secret (``DerivedIdKey``):
without it, anyone who knew a text and a caller's address could compute the id
and read ``/jobs/<id>``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from typing import Callable

from flask import Flask, current_app, g, request

from .error_answer import ApiError
from .outage import RETRY_S

log = logging.getLogger("liroo")

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
REQUEST_ID_SCHEMA = f"^{REQUEST_ID_PATTERN.pattern}$"  # the same rule in JSON Schema
HEADER = "X-Request-ID"
# Set in a request's environ by the replay layer (liroo/api/replay.py): REPLAY_PROBE while the app
# looks for a stored answer before the memory door (nothing is claimed), REPLAY_LOOKED on the pass
# through the door that follows a look (the look spent its rate-limit budget: not spent twice).
REPLAY_PROBE = "liroo.replay_probe"
REPLAY_LOOKED = "liroo.replay_looked"


def valid_request_id(value: object) -> bool:
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


def check_request_id(value: object) -> str:
    """Return ``value`` if it is a usable id, else raise a 400."""
    if not valid_request_id(value):
        raise ApiError(
            400, "invalid_request_id", "A request id must be 8 to 128 letters, digits, '-' or '_'."
        )
    return value  # type: ignore[return-value]


def request_id_from_environ(environ: dict) -> str:
    """For the governor's 503s, which are answered before Flask sees the request."""
    value = environ.get("HTTP_X_REQUEST_ID")
    return value if valid_request_id(value) else uuid.uuid4().hex


def generation_request_id(body_id: object, derivation_seed: Callable[[], str]) -> tuple[str, bool]:
    """A generation's id: the header's, else the body field's, else derived; returns (id, derived).

    The app retries a failed or timed-out POST with the same body and no id:
    an id derived from ``derivation_seed()`` (the body, the device's token and
    the caller) lets such a retry find the first attempt (join it while it
    runs, or get its stored answer for LIROO_DERIVED_REPLAY_S after it
    finished) instead of paying for the work again.
    """
    if request.headers.get(HEADER) is not None:
        return g.request_id, False
    if body_id is not None:
        g.request_id = check_request_id(body_id)
        return g.request_id, False
    key = current_app.extensions[_KEY].secret()
    digest = hmac.new(key, derivation_seed().encode(), hashlib.sha256).hexdigest()
    g.request_id = "auto-" + digest[:40]
    return g.request_id, True


_KEY = "liroo_derived_id_key"  # where init_app keeps the app's DerivedIdKey


class DerivedIdKey:
    """The secret derived ids are keyed with, the same for every process that may get a retry.

    Decision: ``LIROO_ID_SECRET`` when set (every instance is given the same);
    else, with Redis, one secret made once in Redis (SET NX: the first instance
    to ask makes it, every other reads it), so a retry landing on another
    instance still derives the first attempt's id; else one made at random by
    this instance's master before it forks, so its workers share it. Without
    Redis there is no store shared between instances anyway: a retry elsewhere
    could not find the first attempt whatever its id.

    While Redis cannot be asked, the instance's own secret stands in (asked again
    at most every few seconds); ids derived meanwhile are found only here, like
    the jobs claimed during an outage.
    """

    REDIS_KEY = "liroo:derived-id-secret"

    def __init__(self, configured: str | None, redis_client=None) -> None:
        self._configured = configured.encode() if configured else None
        self._instance = secrets.token_bytes(32)
        self._redis = redis_client
        self._shared: bytes | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def secret(self) -> bytes:
        if self._configured is not None:
            return self._configured
        if self._redis is None:
            return self._instance
        if self._shared is None and time.monotonic() >= self._next_try:
            with self._lock:
                if self._shared is None and time.monotonic() >= self._next_try:
                    self._shared = self._from_redis()
        return self._shared or self._instance

    def _from_redis(self) -> bytes | None:
        try:
            self._redis.set(self.REDIS_KEY, secrets.token_hex(32), nx=True)
            value = self._redis.get(self.REDIS_KEY)
        except Exception as exc:  # any Redis failure: this instance's secret for now
            log.warning("the derived-id secret could not be read from Redis: %s", exc)
            value = None
        if value is None:
            self._next_try = time.monotonic() + RETRY_S
        return value


def init_app(app: Flask) -> None:
    settings = app.extensions["liroo"].settings
    redis_client = None
    if settings.redis_url and not settings.id_secret:
        import redis  # only needed when REDIS_URL is set

        redis_client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_read_timeout_s,
            socket_connect_timeout=settings.redis_read_timeout_s,
        )
    app.extensions[_KEY] = key = DerivedIdKey(settings.id_secret, redis_client)
    key.secret()  # asked once in gunicorn's master, so its workers start with it

    @app.before_request
    def _assign_request_id():
        g.request_id = uuid.uuid4().hex  # so that even the error below carries one
        header = request.headers.get(HEADER)
        if header is None:
            return
        if valid_request_id(header):
            g.request_id = header
        elif request.method not in ("GET", "HEAD", "OPTIONS"):
            # A generation's id names its job: a bad one is refused. Reads (/health above
            # all, which must always answer) just get an id of their own.
            check_request_id(header)

    @app.after_request
    def _echo_request_id(response):
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers[HEADER] = request_id
        return response
