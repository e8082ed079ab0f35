"""The WSGI middleware: admit or shed before a request, clean up after it."""

from __future__ import annotations

import json
import uuid
from typing import Callable, Iterable, Mapping

from .core import Governor

# Bodies of shed requests are read and dropped up to this size so that closing
# the connection does not reset it under the client before it reads the 503.
_DRAIN_LIMIT = 1024 * 1024


# Where the middleware leaves the route it looked costs up by (``route_of``), for the app's
# ``extra_fields`` and logs.
ROUTE_ENVIRON_KEY = "governor.route"

# Paths never shed nor queued: health and monitoring, so operators can always
# see why the service is refusing work. Prefixes cover paths with an id in them.
EXEMPT_PATHS = ("/health", "/memory", "/metrics")
EXEMPT_PREFIXES: tuple[str, ...] = ()


class MemoryGovernorMiddleware:
    """Sheds requests with ``503`` + ``Retry-After`` when memory is at the hard limit.

    Before an uncosted request it takes one reading (about a microsecond): at
    or above the hard limit it runs one (rate-limited) cleanup, reads again,
    and if still over answers 503 itself without calling the app. A route with
    a declared cost is admitted when the cost fits (``used + unspent promises
    + cost < limit``, see policy.py); when it does not, it waits its turn in
    the door's FIFO line, shared by all workers, for up to the governor's
    ``admission_wait_s`` while running work finishes, then runs or gets the
    503. An admitted costed request holds a pledge of its cost until its own
    reservations take it over or it ends. After the response body is closed it
    lets the governor clean up if memory is high.

    Trusts: the request's route to pick exempt paths and route costs, nothing
    else from the request. The route is what ``route_of(environ)`` names (an
    app with a router passes its matched rule, so that a path its router
    normalises, such as ``//heavy``, is costed like ``/heavy``), else
    ``PATH_INFO`` as sent; it is left in ``environ[ROUTE_ENVIRON_KEY]``.
    Exempt paths are never shed nor queued, and neither are paths under an
    exempt prefix (cheap reads keyed by an id, such as progress).
    """

    def __init__(
        self,
        app: Callable,
        governor: Governor,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
        exempt_prefixes: Iterable[str] = EXEMPT_PREFIXES,
        route_costs_mb: Mapping[str, float] | None = None,
        request_id: Callable[[dict], str] | None = None,
        extra_fields: Callable[[dict], dict] | None = None,
        route_of: Callable[[dict], str] | None = None,
    ) -> None:
        self.app = app
        self.governor = governor
        self.exempt_paths = frozenset(exempt_paths)
        self.exempt_prefixes = tuple(exempt_prefixes)  # str.startswith takes a tuple: one C call
        self.route_costs_mb = dict(route_costs_mb or {})
        self.request_id = request_id or (lambda environ: uuid.uuid4().hex)
        self.extra_fields = extra_fields  # fields the app's clients expect on every error body
        self.route_of = route_of
        self._limit_bytes = governor.limit_bytes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        governor = self.governor
        route_of = self.route_of
        path = environ[ROUTE_ENVIRON_KEY] = (
            route_of(environ) if route_of is not None else environ.get("PATH_INFO", "")
        )
        after = governor.after_response
        if path not in self.exempt_paths and not path.startswith(self.exempt_prefixes):
            cost = self.route_costs_mb.get(path, 0.0)
            if cost:
                decision = governor.admit(cost)
                if not decision.admitted:
                    return self._shed(environ, start_response, cost, decision.waited_s)
                after = _releasing(decision.pledge, after)
            elif governor.used_bytes() >= self._limit_bytes:
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

    def _shed(
        self, environ: dict, start_response: Callable, cost_mb: float, waited_s: float = 0.0
    ) -> Iterable[bytes]:
        governor = self.governor
        retry = governor.config.retry_after_s
        request_id = self.request_id(environ)
        used = governor.shed(environ.get("PATH_INFO", ""), cost_mb, request_id, waited_s)
        _drain(environ)
        payload = {
            "error": f"The service is short of memory right now; please retry in {retry} seconds.",
            "code": "memory_pressure",
            "memory_usage_mb": round(used, 2),
            "memory_limit_mb": round(governor.thresholds.limit_mb, 2),
            "retry_after_s": retry,
            "request_id": request_id,
        }
        if self.extra_fields is not None:
            payload = {**self.extra_fields(environ), **payload}
        body = json.dumps(payload).encode()
        # gunicorn drops hop-by-hop headers an app sets, so ask the server
        # itself to close: its start_response is bound to a response object
        # with force_close(). Closing sends the client's retry to a fresh
        # connection, which a load balancer may route to a calmer instance.
        force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
        if callable(force_close):
            force_close()
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(retry)),
                ("Connection", "close"),
                ("X-Request-ID", request_id),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]


def _releasing(pledge, after: Callable[[], None]) -> Callable[[], None]:
    def release_then_after() -> None:
        pledge.release()
        after()

    return release_then_after


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
