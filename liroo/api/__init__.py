"""Blueprints that speak HTTP for the app's contract."""

from __future__ import annotations

import uuid
from typing import Callable

from flask import g, request

from ..clock import utc_timestamp

LECTURE_PATH = "/generate_lecture"


def route_fields(path: str, lecture_id: str | None = None) -> dict:
    """The fields the app's decoders require on every answer of the route at ``path``, errors
    included.

    The one place they are named: a LectureResponse always needs ``lecture_id``
    (the id its result carries, else a fresh one).
    """
    if path == LECTURE_PATH:
        return {"lecture_id": lecture_id or str(uuid.uuid4())}
    return {}


def answer_fields() -> dict:
    """``route_fields`` of the request being served (of its matched route), the same on each of its
    answers.

    Added to every error body (errors.error_response), a generation's recorded
    failures and its 202 (api/runner.py).
    """
    rule = request.url_rule
    if rule is None or rule.rule != LECTURE_PATH:
        return {}
    if "lecture_id" not in g:
        g.lecture_id = str(uuid.uuid4())
    return route_fields(rule.rule, g.lecture_id)


def shed_fields(environ: dict) -> dict:
    """What the app's decoders require on every error body of a generation route.

    Used for the governor's 503s, which are answered before Flask sees the
    request: ComicResponse needs ``success`` and ``timestamp``, and the
    route's own fields (``route_fields``).
    """
    return {
        "success": False,
        "timestamp": utc_timestamp(),
        **route_fields(environ.get("PATH_INFO", "")),
    }


def declares_cost(cost_mb: Callable[[object], float]) -> Callable[[Callable], Callable]:
    """Mark a route that does heavy work: the governor's door admits it only with room for
    ``cost_mb(settings)``, so a request is refused at once rather than after it has queued."""

    def mark(view: Callable) -> Callable:
        view.memory_cost = cost_mb
        return view

    return mark


# Routes that make pictures: room for one (LIROO_IMAGE_RESERVE_MB).
costs_one_image = declares_cost(lambda settings: settings.image_reserve_mb)
# /generate_tts: room for one speech chunk (LIROO_SPEECH_RESERVE_MB).
costs_one_speech_chunk = declares_cost(lambda settings: settings.speech_reserve_mb)
# /generate_lecture draws and narrates at the same time: room for a picture and a chunk.
costs_picture_and_speech = declares_cost(
    lambda settings: settings.image_reserve_mb + settings.speech_reserve_mb
)
