"""Request ids: the caller's when it sends a valid one, else a new UUID; echoed back.

The app retries a POST with the same body; an id it chose lets it poll
progress while the request runs and lets a retry find the first attempt.

``g.request_id`` is written here only. Each request gets its id before any
view runs (the header's, else a new UUID, so that even an early error carries
one); a generation without the header decides its id once, when its body has
been read (``generation_request_id``: the body's ``request_id``, else one
derived from the request), and that id replaces the placeholder UUID.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Callable

from flask import Flask, g, request

from .errors import ApiError

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
REQUEST_ID_SCHEMA = f"^{REQUEST_ID_PATTERN.pattern}$"  # the same rule in JSON Schema
HEADER = "X-Request-ID"


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
    g.request_id = "auto-" + hashlib.sha256(derivation_seed().encode()).hexdigest()[:40]
    return g.request_id, True


def init_app(app: Flask) -> None:
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
