"""Field shapes the model's scripts share: their JSON schema is what the model is asked for."""

from __future__ import annotations

from typing import Any

from pydantic import Field


def items(low: int, high: int) -> Any:
    """A list of at least ``low`` items and about ``high`` at the most. ``maxItems`` is only in
    the schema, to guide the model: a script with more is not refused (its work is done and
    paid for); callers that need a bound cut it."""
    return Field(min_length=low, json_schema_extra={"maxItems": high})


def picture_brief(what: str) -> Any:
    """A picture's description for the illustrator, saying ``what`` to draw. Pictures never
    carry text: models draw letters badly, and the page's own text is the text."""
    return Field(description=f"{what} No text in the picture.")
