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


def costs_one_image(view: Callable) -> Callable:
    """Mark a route that makes pictures: the governor's door admits it only with room for one
    (LIROO_IMAGE_RESERVE_MB), so a request is refused at once rather than after it has queued."""
    view.memory_cost = lambda settings: settings.image_reserve_mb
    return view
