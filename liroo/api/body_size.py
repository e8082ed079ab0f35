"""The request body's size limit (LIROO_MAX_BODY_BYTES), where bodies are read
(runner.parse_body)."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def refuse_cut_body(raw: bytes) -> None:
    """413 for a chunked body that reached LIROO_MAX_BODY_BYTES.

    With a Content-Length over the limit werkzeug refuses the request before
    reading it; a chunked body (no length) is read only up to the limit and
    then cut short without an error, which would reach the parser as broken
    JSON. A chunked body of exactly the limit is refused too: it cannot be
    told apart from a longer one without reading past the limit.
    """
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()
