"""Every error is JSON: ``{"error": <a sentence>, "code": <stable code>, "request_id": ...}``.

No HTML pages, no exception text, no stack traces: the exception goes to the
log with the request id, the client gets a sentence and a code.

One place for each part of an error answer:

- ``api_error_for``: the one table from an exception to (status, code,
  sentence, headers), for Flask's handlers and for a generation's recorded
  failure (liroo/api/runner.py) alike;
- ``error_body``: the one builder of an error body, used by Flask's answers,
  the recorded generation failures and the worker's own pages (liroo/server.py).
  The governor's 503 (liroo/governor/middleware.py) builds its own, since the
  governor imports nothing from the app; tests/test_errors.py checks the two agree;
- the fields a route's answers must always carry (``lecture_id``) come from
  liroo/api's ``answer_fields``, added here and by the runner, nowhere else.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from .api import answer_fields
from .generation.context import CANCELLED_CODE, Cancelled, DeadlineExceeded
from .governor import MemoryPressure
from .providers.base import ProviderError, RateLimited
from .services import services
from .storage import STORAGE_ERRNOS, STORAGE_HEALTH, StorageError

log = logging.getLogger("liroo.errors")

# Stable codes for the HTTP errors Flask and Werkzeug raise themselves.
_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Authentication is required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    408: ("request_timeout", "The request took too long to arrive."),
    411: ("length_required", "The request needs a Content-Length."),
    413: ("payload_too_large", "The request body is too large."),
    414: ("uri_too_long", "The request address is too long."),
    415: ("unsupported_media_type", "Send the body as JSON (Content-Type: application/json)."),
    416: ("range_not_satisfiable", "The requested byte range is not available in this file."),
    417: ("expectation_failed", "The request's Expect header cannot be met."),
    429: ("rate_limited", "Too many requests; slow down and retry later."),
    431: ("headers_too_large", "The request headers are too large."),
    500: ("internal_error", "Something went wrong on our side; please try again."),
    501: ("not_implemented", "This is not supported."),
    503: ("unavailable", "The service is unavailable right now; please retry shortly."),
}


def http_error_code(status: int) -> tuple[str, str]:
    """The stable code and sentence for an HTTP error status."""
    return _HTTP_CODES.get(status, ("http_error", "The request could not be served."))


class ApiError(Exception):
    """An error the client should see: HTTP status, stable code, a sentence, optional extra
    fields."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict | None = None, **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


# The answer for work a stopping worker gives back (the runner records it, the worker sends it).
INTERRUPTED = ("interrupted", "The server restarted while working on this; please retry.")


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """Every error body of the service: the sentence, the stable code, then ``fields`` (request_id,
    ...)."""
    return {"error": message, "code": code, **(fields or {})}


def error_response(
    status: int, code: str, message: str, headers: dict | None = None, **extra
) -> Response:
    fields = {}
    request_id = getattr(g, "request_id", None)
    if request_id:
        fields["request_id"] = request_id
    response = jsonify(error_body(code, message, {**fields, **answer_fields(), **extra}))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def memory_pressure_error(exc: MemoryPressure) -> ApiError:
    return ApiError(
        503,
        "memory_pressure",
        f"The service is short of memory right now; please retry in {exc.retry_after_s} seconds.",
        headers={"Retry-After": str(exc.retry_after_s)},
        memory_usage_mb=round(exc.used_mb, 2),
        memory_limit_mb=round(exc.limit_mb, 2),
        retry_after_s=exc.retry_after_s,
    )


def provider_error(exc: ProviderError) -> ApiError:
    """The client's view of a provider failure: status, code and sentence; the detail stays in the
    log."""
    log.warning(
        "provider error %s: %s (request %s)", exc.code, exc.detail, getattr(g, "request_id", "-")
    )
    headers = {}
    if isinstance(exc, RateLimited) or exc.retry_after_s:
        headers["Retry-After"] = str(exc.retry_after_s or 10)
    return ApiError(exc.status, exc.code, exc.message, headers=headers)


def http_error(exc: HTTPException) -> ApiError:
    status = exc.code or 500
    code, message = http_error_code(status)
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return ApiError(status, code, message, headers=headers)


def storage_error(exc: StorageError | OSError, request_id: str) -> ApiError:
    if not isinstance(exc, StorageError):
        # a full or failing disk met outside the storage's own writes
        STORAGE_HEALTH.failed(exc.errno)
        exc = StorageError(exc.strerror or "storage failed")
    log.warning("storage failed (request %s): %s", request_id, exc)
    retry = services().settings.retry_after_s
    return ApiError(
        503,
        "storage_unavailable",
        "Storing the result failed; please retry shortly.",
        headers={"Retry-After": str(retry)},
    )


def _is_storage_failure(exc: Exception) -> bool:
    return isinstance(exc, StorageError) or (
        isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS
    )


# The one table from an exception to what the client sees: (matches, ApiError maker), first match
# wins.
_EXCEPTION_TABLE: tuple = (
    (lambda exc: isinstance(exc, ApiError), lambda exc, request_id: exc),
    (
        lambda exc: isinstance(exc, MemoryPressure),
        lambda exc, request_id: memory_pressure_error(exc),
    ),
    (lambda exc: isinstance(exc, ProviderError), lambda exc, request_id: provider_error(exc)),
    (_is_storage_failure, storage_error),
    (
        lambda exc: isinstance(exc, DeadlineExceeded),
        lambda exc, request_id: ApiError(
            504, "deadline_exceeded", "This took longer than allowed; please try again."
        ),
    ),
    (
        lambda exc: isinstance(exc, Cancelled),
        lambda exc, request_id: ApiError(
            409, CANCELLED_CODE, "This generation was cancelled by its caller."
        ),
    ),
    (lambda exc: isinstance(exc, HTTPException), lambda exc, request_id: http_error(exc)),
)


def api_error_for(
    exc: BaseException, request_id: str | None = None, *, unexpected: str = "unhandled error"
) -> ApiError:
    """What the client sees for ``exc``: its status, code, sentence and headers.

    Anything the table does not know is a 500 ``internal_error``, logged with
    its traceback as "<unexpected> (request <id>)".
    """
    if request_id is None:
        request_id = getattr(g, "request_id", "-")
    for matches, make in _EXCEPTION_TABLE:
        if matches(exc):
            return make(exc, request_id)
    log.error("%s (request %s)", unexpected, request_id, exc_info=exc)
    code, message = _HTTP_CODES[500]
    return ApiError(500, code, message)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        error = api_error_for(exc)
        return error_response(error.status, error.code, error.message, error.headers, **error.extra)
