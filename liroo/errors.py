"""Every error is JSON: ``{"error": <a sentence>, "code": <stable code>, "request_id": ...}``.

No HTML pages, no exception text, no stack traces: the exception goes to the
log with the request id, the client gets a sentence and a code.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from .governor import MemoryPressure
from .providers.base import ProviderError, RateLimited

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
    """An error the client should see: HTTP status, stable code, a sentence, optional extra fields."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict | None = None, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra) -> Response:
    body = {"error": message, "code": code}
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def memory_pressure_error(exc: MemoryPressure) -> ApiError:
    return ApiError(
        503, "memory_pressure",
        f"The service is short of memory right now; please retry in {exc.retry_after_s} seconds.",
        headers={"Retry-After": str(exc.retry_after_s)},
        memory_usage_mb=round(exc.used_mb, 2), memory_limit_mb=round(exc.limit_mb, 2),
        retry_after_s=exc.retry_after_s,
    )


def provider_error(exc: ProviderError) -> ApiError:
    """The client's view of a provider failure: status, code and sentence; the detail stays in the log."""
    log.warning("provider error %s: %s (request %s)", exc.code, exc.detail, getattr(g, "request_id", "-"))
    headers = {}
    if isinstance(exc, RateLimited) or exc.retry_after_s:
        headers["Retry-After"] = str(exc.retry_after_s or 10)
    return ApiError(exc.status, exc.code, exc.message, headers=headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(MemoryPressure)
    def _memory_pressure(exc: MemoryPressure):
        return _api_error(memory_pressure_error(exc))

    @app.errorhandler(ProviderError)
    def _provider_error(exc: ProviderError):
        return _api_error(provider_error(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code, message = http_error_code(status)
        headers = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error (request %s)", getattr(g, "request_id", "-"))
        code, message = _HTTP_CODES[500]
        return error_response(500, code, message)
