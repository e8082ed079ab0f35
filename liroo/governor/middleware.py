"""The WSGI middleware: admit or shed before a request, clean up after it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Callable, Iterable, Mapping

from . import rule
from .core import Governor

# Where the request's deadline (a time.monotonic() instant) waits for the app.
DEADLINE_KEY = "liroo.deadline"
# Methods whose routes take the read deadline (read_deadline_s).
_READS = frozenset(("GET", "HEAD", "OPTIONS"))

# Bodies of shed requests are read and dropped up to this size so that closing
# the connection does not reset it under the client before it reads the 503.
_DRAIN_LIMIT = 1024 * 1024


# Where the middleware leaves the route it looked costs up by (``route_of``), for the app's
# ``render_error`` and logs.
ROUTE_ENVIRON_KEY = "governor.route"

# The body of the door's own answers: render_error(environ, status, code, sentence, fields).
RenderError = Callable[[dict, int, str, str, dict], bytes]


def plain_json_error(environ: dict, status: int, code: str, sentence: str, fields: dict) -> bytes:
    """The door's answers without an app's renderer: ``{"error", "code", ...fields}`` in JSON."""
    return json.dumps({"error": sentence, "code": code, **fields}).encode()


# Paths never shed nor queued: health and monitoring, so operators can always
# see why the service is refusing work. Prefixes cover paths with an id in them.
EXEMPT_PATHS = ("/health", "/memory", "/metrics")
EXEMPT_PREFIXES: tuple[str, ...] = ()


class MemoryGovernorMiddleware:
    """Gives every request its deadline and sheds requests with ``503`` + ``Retry-After`` when
    memory is at the hard limit.

    With deadlines on (the governor's ``deadline_s``), every request gets one
    before anything else: now plus its route family's default (``deadline_s``
    for state-changing methods, ``read_deadline_s`` for the rest), or plus the
    client's ``X-Request-Timeout-Ms`` when that is shorter, stored in
    ``environ["liroo.deadline"]`` as a ``time.monotonic()`` instant for the app.

    Before an uncosted request it takes one reading (about a microsecond): at
    or above the hard limit it runs one (rate-limited) cleanup, reads again,
    and if still over answers 503 itself without calling the app. A route with
    a declared cost is admitted when the cost fits (rule.fits); when it does
    not, it waits its turn in the door's FIFO line, shared by all workers,
    while running work finishes: up to the governor's ``admission_wait_s`` and
    never past its deadline minus the route's learned service time; refused at
    once when its place in line says its turn would come too late, or when its
    caller already holds its share of the line. An admitted costed request
    holds a pledge of its cost until its own reservations take it over or it
    ends; when its response closes, its service time is measured. After the
    response body is closed it lets the governor clean up if memory is high.

    Trusts: the request's route to pick exempt paths and route costs, the
    method for the deadline's family, and ``X-Request-Timeout-Ms``, which can
    only shorten the deadline; nothing else from the request. The route is
    what ``route_of(environ)`` names (an app with a router passes its matched
    rule, so that a path its router normalises, such as ``//heavy``, is costed
    like ``/heavy``), else ``PATH_INFO`` as sent; it is left in
    ``environ[ROUTE_ENVIRON_KEY]``. Exempt paths are never shed nor queued,
    and neither are paths under an exempt prefix (cheap reads keyed by an id,
    such as progress).

    Its own answers (503 shed, 400 for a malformed X-Request-Timeout-Ms) are
    JSON bodies made by ``render_error`` (an app passes its own, to answer in
    its shape; plain_json_error by default).
    """

    def __init__(
        self,
        app: Callable,
        governor: Governor,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
        exempt_prefixes: Iterable[str] = EXEMPT_PREFIXES,
        route_costs_mb: Mapping[str, float] | None = None,
        request_id: Callable[[dict], str] | None = None,
        render_error: RenderError = plain_json_error,
        route_of: Callable[[dict], str] | None = None,
        caller: Callable[[dict], str] | None = None,
    ) -> None:
        self.app = app
        self.governor = governor
        self.exempt_paths = frozenset(exempt_paths)
        self.exempt_prefixes = tuple(exempt_prefixes)  # str.startswith takes a tuple: one C call
        self.route_costs_mb = dict(route_costs_mb or {})
        for route in self.route_costs_mb:
            governor.register_route(route)
        self.request_id = request_id or (lambda environ: uuid.uuid4().hex)
        self.render_error = render_error
        self.route_of = route_of
        # Who is asking (an API key's id, else the client's address), for a caller's share of
        # the door's line; unknown: the peer's address.
        self.caller = caller or (lambda environ: environ.get("REMOTE_ADDR", ""))
        self._limit_bytes = governor.limit_bytes
        config = governor.config
        self._deadline_s = config.deadline_s
        self._read_deadline_s = (
            config.read_deadline_s if config.read_deadline_s is not None else config.deadline_s
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        governor = self.governor
        if not self.stamp_deadline(environ):
            return self._bad_timeout(environ, start_response)
        deadline = environ.get(DEADLINE_KEY)
        route_of = self.route_of
        path = environ[ROUTE_ENVIRON_KEY] = (
            route_of(environ) if route_of is not None else environ.get("PATH_INFO", "")
        )
        after = governor.after_response
        if path not in self.exempt_paths and not path.startswith(self.exempt_prefixes):
            route, cost = self._route_cost(environ)
            if cost:
                decision = governor.admit(cost, deadline, route, self.caller(environ))
                if not decision.admitted:
                    return self._shed(environ, start_response, cost, decision.waited_s)
                start_response, after = self._measured(route, decision.pledge, start_response)
            elif not rule.fits(governor.used_bytes(), 0, 0, self._limit_bytes):
                if not governor.admits(0.0):
                    governor.cleanup(full=True, reason="shed")
                    if not governor.admits(0.0):
                        return self._shed(environ, start_response, 0.0)
        governor.count_request()
        try:
            return _ClosingIterable(self.app(environ, start_response), after)
        except BaseException:
            after()
            raise

    def _route_cost(self, environ: dict) -> tuple[str, float]:
        """The route as the door knows it, and its declared cost (0: none). The one place the
        door looks a route up."""
        path = environ[ROUTE_ENVIRON_KEY]
        return path, self.route_costs_mb.get(path, 0.0)

    def stamp_deadline(self, environ: dict) -> bool:
        """Give the request its deadline (``environ[DEADLINE_KEY]``) unless a layer before the door
        already did; False when its X-Request-Timeout-Ms is malformed (the door answers 400)."""
        if self._deadline_s is None or DEADLINE_KEY in environ:
            return True
        try:
            environ[DEADLINE_KEY] = self._deadline(environ)
        except ValueError:
            return False
        return True

    def _deadline(self, environ: dict) -> float:
        method = environ.get("REQUEST_METHOD", "GET")
        default_s = self._read_deadline_s if method in _READS else self._deadline_s
        return rule.request_deadline(
            time.monotonic(), default_s, environ.get("HTTP_X_REQUEST_TIMEOUT_MS")
        )

    def _measured(
        self, route: str, pledge, start_response: Callable
    ) -> tuple[Callable, Callable[[], None]]:
        """A start_response that notes the answer's status, and what to do when the response
        closes: give back the pledge, and learn the service time from a full service (a 2xx
        other than 202 Accepted and a replayed answer), then clean up as usual."""
        governor = self.governor
        began = time.monotonic()
        governor.service_began()
        full_service = [False]

        def noting_start_response(status: str, headers: list, exc_info=None):
            full_service[0] = (
                status[:1] == "2"
                and not status.startswith("202")
                and not any(name.lower() == "x-idempotent-replay" for name, _ in headers)
            )
            return start_response(status, headers, exc_info)

        def after() -> None:
            if pledge is not None:
                pledge.release()
            governor.service_ended(route, time.monotonic() - began if full_service[0] else None)
            governor.after_response()

        return noting_start_response, after

    def _shed(
        self, environ: dict, start_response: Callable, cost_mb: float, waited_s: float = 0.0
    ) -> Iterable[bytes]:
        governor = self.governor
        retry = governor.retry_after_s()
        request_id = self.request_id(environ)
        used = governor.shed(environ.get("PATH_INFO", ""), cost_mb, request_id, waited_s)
        _drain(environ)
        fields = {
            "memory_usage_mb": round(used, 2),
            "memory_limit_mb": round(governor.thresholds.limit_mb, 2),
            "retry_after_s": retry,
            "request_id": request_id,
        }
        body = self.render_error(
            environ,
            503,
            "memory_pressure",
            f"The service is short of memory right now; please retry in {retry} seconds.",
            fields,
        )
        headers = [("Retry-After", str(retry))]
        return self._answer(start_response, "503 Service Unavailable", body, request_id, headers)

    def _bad_timeout(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        _drain(environ)
        request_id = self.request_id(environ)
        body = self.render_error(
            environ,
            400,
            "bad_request_timeout",
            "X-Request-Timeout-Ms must be a positive whole number of milliseconds.",
            {"request_id": request_id},
        )
        return self._answer(start_response, "400 Bad Request", body, request_id, [])

    def _answer(
        self, start_response: Callable, status: str, body: bytes, request_id: str, headers: list
    ) -> Iterable[bytes]:
        """A JSON answer the middleware gives itself, on a connection it closes."""
        # gunicorn drops hop-by-hop headers an app sets, so ask the server
        # itself to close: its start_response is bound to a response object
        # with force_close(). Closing sends the client's retry to a fresh
        # connection, which a load balancer may route to a calmer instance.
        force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
        if callable(force_close):
            force_close()
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *headers,
                ("Connection", "close"),
                ("X-Request-ID", request_id),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]


def _drain(environ: dict) -> None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length <= 0 or length > _DRAIN_LIMIT:
        return
    stream = environ.get("wsgi.input")
    try:
        while length > 0:
            chunk = stream.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)
    except Exception:  # a client that hung up: nothing to protect
        return


class _ClosingIterable:
    """Passes the app's body through and calls ``after`` once the server closes it.

    Wrapping hides gunicorn's ``wsgi.file_wrapper`` (sendfile); media in
    production comes from Cloud Storage, so plain iteration costs nothing that
    matters.
    """

    __slots__ = ("_iterable", "_after")

    def __init__(self, iterable: Iterable[bytes], after: Callable[[], None]) -> None:
        self._iterable = iterable
        self._after = after

    def __iter__(self):
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._after()
