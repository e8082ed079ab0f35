"""The replay layer: a generation retry whose answer is stored is served outside the memory door.

The governor's door (liroo/governor/middleware.py) decides before the body is
read, so it cannot know that a POST is a retry of a request already answered:
an instance short of memory would refuse the app's retry with a 503 while its
answer sits in the store. This layer sits outside the door. For a POST to a
route of the app (each is a generation) it reads the body (at most LIROO_MAX_BODY_BYTES, by
its Content-Length) and lets the app look once, without the door
(``REPLAY_PROBE`` in the environ): the app derives the id exactly as for a
real claim (api/runner.py), then replays a finished answer, or joins the
running request (parked in the worker's loop, holding no thread: see
claims.claim_id; a join holds no memory, so the door has nothing to guard).
Anything else (nothing stored, a failure to run afresh, a conflict) leaves
the look as claims.NotStored, and the request goes on through the door with
its body rewound. Errors of the look itself (a bad body, a
missing key, the rate limit) are answered as the app answers them. The look
spends the request's rate-limit budget (a replay counts, as before); the pass
through the door after it does not spend it again.
"""

from __future__ import annotations

import io
from typing import Callable, Iterable

from flask import Flask
from werkzeug.exceptions import HTTPException

from ..requestid import REPLAY_LOOKED, REPLAY_PROBE
from .claims import NotStored


class ReplayLayer:
    def __init__(self, flask_app: Flask, app: Callable, door: Callable, max_body_bytes: int):
        self._flask = flask_app
        self.app = app  # the app without the door: for the look
        self.door = door  # the app behind the door: everything else
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or not self._routed(environ):
            return self.door(environ, start_response)
        # The deadline runs from arrival, the look included; a malformed one is the door's 400.
        stamp_deadline = getattr(self.door, "stamp_deadline", None)
        if stamp_deadline is not None and not stamp_deadline(environ):
            return self.door(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if not 0 < length <= self.max_body_bytes:  # chunked, empty or too large: the app's to say
            return self.door(environ, start_response)
        body, error = _read(environ["wsgi.input"], length)
        if error is None and len(body) == length:
            look = {**environ, "wsgi.input": io.BytesIO(body), REPLAY_PROBE: True}
            try:
                return self.app(look, start_response)
            except NotStored:
                pass
            environ[REPLAY_LOOKED] = True
        environ["wsgi.input"] = _Rewound(body, error)
        return self.door(environ, start_response)

    def _routed(self, environ: dict) -> bool:
        """Whether the app has a POST route there: every one is a generation
        (security.is_generation_request), and the door may shed any of them."""
        try:
            self._flask.url_map.bind_to_environ(environ).match(method="POST")
        except HTTPException:  # not found, wrong method, a redirect: the app's to answer
            return False
        return True


def _read(stream, length: int) -> tuple[bytes, BaseException | None]:
    """Up to ``length`` bytes, and the error that stopped the reading, if one did."""
    parts, left = [], length
    try:
        while left > 0:
            part = stream.read(min(left, 65536))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except Exception as exc:  # the server's reader gave up (a slow or broken client)
        return b"".join(parts), exc
    return b"".join(parts), None


class _Rewound:
    """The body as read, then the reading's error, if any, for the app to answer as usual."""

    def __init__(self, body: bytes, error: BaseException | None) -> None:
        self._body = io.BytesIO(body)
        self._error = error

    def read(self, size: int = -1) -> bytes:
        data = self._body.read(size)
        if not data and self._error is not None and size != 0:
            raise self._error
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._body.readline(size)
        if not data and self._error is not None:
            raise self._error
        return data
