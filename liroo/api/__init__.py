"""Blueprints that speak HTTP for the app's contract."""
from __future__ import annotations

import uuid
from typing import Callable

from ..clock import utc_timestamp

LECTURE_PATH = "/generate_lecture"


def shed_fields(environ: dict) -> dict:
    """What the app's decoders require on every error body of a generation route.

    Used for the governor's 503s, which are answered before Flask sees the
    request: ComicResponse needs ``success`` and ``timestamp``, and a
    LectureResponse always needs ``lecture_id``.
    """
    fields = {"success": False, "timestamp": utc_timestamp()}
    if environ.get("PATH_INFO") == LECTURE_PATH:
        fields["lecture_id"] = str(uuid.uuid4())
    return fields


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
costs_picture_and_speech = declares_cost(lambda settings: settings.image_reserve_mb + settings.speech_reserve_mb)
