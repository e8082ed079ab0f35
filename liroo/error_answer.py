"""What an error answer is, and its one rendering: ``{"error": <sentence>, "code": <code>, ...}``.

An ``ErrorAnswer`` is plain data (status, code, sentence, fields, headers), so that every
part of the service describes its errors the same way: Flask's handlers (liroo/errors.py), a
generation's recorded failures (liroo/api/runner.py), ``/ready``, the governor's door (its
``render_error``, given by create_app) and the worker's own pages (liroo/server.py,
liroo/thread_io.py). The shape of every error body is decided here, in ``body``; the rest only
chooses where it goes: a JSON body, a Flask response or a whole HTTP page.

Below every room but the governor's: of Liroo it imports only the clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from flask import jsonify

from .clock import utc_timestamp

# Stable codes for the HTTP errors Flask, Werkzeug and gunicorn raise themselves.
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


@dataclass(frozen=True)
class ErrorAnswer:
    """One error answer, before it is rendered.

    ``fields`` follow the code (request_id, the route's every-answer fields, details such as
    ``field``); ``lead`` fields come before the sentence (a generation's ``success``, the
    route fields the door adds, /ready's status), as the app's decoders have always read them.
    """

    status: int
    code: str
    sentence: str
    fields: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    lead: dict = field(default_factory=dict)

    @classmethod
    def for_status(cls, status: int, **fields) -> ErrorAnswer:
        """The answer for a bare HTTP error status (the server's own pages)."""
        return cls(status, *http_error_code(status), fields)

    def with_fields(self, **fields) -> ErrorAnswer:
        return replace(self, fields={**self.fields, **fields})

    def with_headers(self, **headers: str) -> ErrorAnswer:
        return replace(self, headers={**self.headers, **headers})

    def body(self) -> dict:
        """The one shape of every error body: the sentence first, then the stable code."""
        return {**self.lead, "error": self.sentence, "code": self.code, **self.fields}

    def json_bytes(self) -> bytes:
        """The body as pages outside Flask send it (the door's and the worker's)."""
        return json.dumps(self.body()).encode()

    def flask_response(self):
        """The answer as a Flask response (in an app context: the app's JSON provider, as for
        every other answer of the app)."""
        response = jsonify(self.body())
        response.status_code = self.status
        for name, value in self.headers.items():
            response.headers[name] = value
        return response

    def http_page(self) -> bytes:
        """A whole HTTP/1.1 response the worker writes itself; the connection closes after it."""
        data = self.json_bytes()
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        head = (
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"X-Content-Type-Options: nosniff\r\n{extra}\r\n"
        )
        return head.encode("latin-1") + data


def generation_answer(
    status: int, code: str, sentence: str, request_id: str, headers: dict | None = None, **fields
) -> ErrorAnswer:
    """A generation's error answer: what ComicResponse decodes besides the sentence and code
    (``success`` first, ``timestamp`` last), with the request's id."""
    return ErrorAnswer(
        status,
        code,
        sentence,
        {**fields, "request_id": request_id, "timestamp": utc_timestamp()},
        headers or {},
        {"success": False},
    )


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

    def answer(self, **fields) -> ErrorAnswer:
        """This error as an answer: ``fields`` (request_id, the route's) before its own extras."""
        return ErrorAnswer(
            self.status, self.code, self.message, {**fields, **self.extra}, dict(self.headers)
        )
