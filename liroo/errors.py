"""Every error is JSON: ``{"error": <a sentence>, "code": <stable code>, "request_id": ...}``.

No HTML pages, no exception text, no stack traces: the exception goes to the
log with the request id, the client gets a sentence and a code.

- ``api_error_for``: the one table from an exception to (status, code,
  sentence, headers), for Flask's handlers, a generation's recorded failure
  (liroo/api/runner.py) and the stable code of one failed picture or clip
  (``code_for``: liroo/generation/failures.py) alike;
- the answer's shape and rendering are liroo/error_answer.py's; the fields a
  route's answers must always carry (``lecture_id``) are liroo/routes.py's;
- ``door_error``: the governor's own answers (its ``render_error``) in the same shape.

Below generation, providers and storage (tests/test_layers.py): it knows their failures by
the modules that declare them (generation/context.py, providers/base.py, storage/base.py).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from . import routes
from .error_answer import ApiError, ErrorAnswer, http_error_code
from .generation.context import CANCELLED_CODE, Cancelled, DeadlineExceeded
from .governor import MemoryPressure
from .providers.base import ProviderError, RateLimited
from .services import services
from .storage.base import StorageError
from .storage.health import STORAGE_ERRNOS, STORAGE_HEALTH

log = logging.getLogger("liroo.errors")


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


def _is_storage_failure(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) or (
        isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS
    )


def _kind(kind: type) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kind)


class _Row(NamedTuple):
    matches: Callable[[BaseException], bool]
    code: Callable[[BaseException], str]  # the stable code alone: no log, no side effect
    make: Callable[[BaseException, str], ApiError]  # (exc, request_id) -> what the client sees


def _fixed(status: int, code: str, sentence: str) -> tuple:
    return lambda exc: code, lambda exc, request_id: ApiError(status, code, sentence)


# The one table from an exception to what the client sees; first match wins.
_EXCEPTION_TABLE: tuple[_Row, ...] = (
    _Row(_kind(ApiError), lambda exc: exc.code, lambda exc, request_id: exc),
    _Row(
        _kind(MemoryPressure),
        lambda exc: "memory_pressure",
        lambda exc, request_id: memory_pressure_error(exc),
    ),
    _Row(_kind(ProviderError), lambda exc: exc.code, lambda exc, request_id: provider_error(exc)),
    _Row(_is_storage_failure, lambda exc: "storage_unavailable", storage_error),
    _Row(
        _kind(DeadlineExceeded),
        *_fixed(504, "deadline_exceeded", "This took longer than allowed; please try again."),
    ),
    _Row(
        _kind(Cancelled),
        *_fixed(409, CANCELLED_CODE, "This generation was cancelled by its caller."),
    ),
    _Row(
        _kind(HTTPException),
        lambda exc: http_error_code(exc.code or 500)[0],
        lambda exc, request_id: http_error(exc),
    ),
)


def code_for(exc: BaseException) -> str | None:
    """The stable code the table gives ``exc``; None for a failure it does not know."""
    for row in _EXCEPTION_TABLE:
        if row.matches(exc):
            return row.code(exc)
    return None


def api_error_for(
    exc: BaseException, request_id: str | None = None, *, unexpected: str = "unhandled error"
) -> ApiError:
    """What the client sees for ``exc``: its status, code, sentence and headers.

    Anything the table does not know is a 500 ``internal_error``, logged with
    its traceback as "<unexpected> (request <id>)".
    """
    if request_id is None:
        request_id = getattr(g, "request_id", "-")
    for row in _EXCEPTION_TABLE:
        if row.matches(exc):
            return row.make(exc, request_id)
    log.error("%s (request %s)", unexpected, request_id, exc_info=exc)
    return ApiError(500, *http_error_code(500))


def request_answer(error: ApiError) -> Response:
    """``error`` as the answer of the request being served: with its id and the every-answer
    fields of its route."""
    request_id = getattr(g, "request_id", None)
    fields = {"request_id": request_id} if request_id else {}
    return error.answer(**fields, **routes.answer_fields()).flask_response()


def door_error(environ: dict, status: int, code: str, sentence: str, fields: dict) -> bytes:
    """The body of the governor's own answers (its ``render_error``): the app's shape, led by what
    the app's decoders need on every error of the route (routes.door_fields)."""
    return ErrorAnswer(
        status, code, sentence, fields, lead=routes.door_fields(environ)
    ).json_bytes()


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        return request_answer(api_error_for(exc))
