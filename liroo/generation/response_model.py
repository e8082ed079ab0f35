"""The base of every response model, and ``omitted()``: what makes a model's JSON Schema say what
is really sent.

Pure pydantic (no Flask). ``results.py`` builds the answers' models on these.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _absent_rather_than_null(schema: dict[str, Any]) -> None:
    """JSON Schema of an ``omitted()`` field: its type without the null arm (null is never sent)."""
    arms = [arm for arm in schema.pop("anyOf", []) if arm.get("type") != "null"]
    schema.pop("default", None)
    if len(arms) == 1:
        schema.update(arms[0])
    elif arms:
        schema["anyOf"] = arms


def omitted(description: str | None = None) -> Any:
    """A field that is absent from the JSON when None."""
    return Field(
        default=None,
        exclude_if=lambda value: value is None,
        description=description,
        json_schema_extra=_absent_rather_than_null,
    )


def new_id() -> str:
    return str(uuid.uuid4())


def _always_sent_unless_omitted(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Fields with defaults (ids, types) are always sent, so required; ``omitted()`` ones are
    not."""
    never_null = {name for name, info in model.model_fields.items() if info.exclude_if is not None}
    names = {
        info.serialization_alias or info.alias or name: name
        for name, info in model.model_fields.items()
    }
    required = [key for key in schema.get("required", []) if names.get(key, key) not in never_null]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


class ResponseModel(BaseModel):
    """Base of every model of a response: a whole body or a part nested in one."""

    # Validating a real response (tests) must accept the extra keys the app ignores.
    model_config = ConfigDict(
        extra="ignore",
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_always_sent_unless_omitted,
    )


class ResponseBody(ResponseModel):
    """A whole response body."""

    def body(self) -> dict[str, Any]:
        """The JSON object to send."""
        return self.model_dump(mode="json")
