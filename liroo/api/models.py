"""Request bodies exactly as the app sends them, validated with pydantic.

Validators raise ``PydanticCustomError`` with stable types (``empty_text``,
``text_too_long``, ``unknown_level``, ``unknown_style``...) that the runner
turns into the error's ``code``.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from ..generation.options import LEVELS, STYLES, level_key, style_key

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


def _max_chars(info: ValidationInfo) -> int:
    settings = (info.context or {}).get("settings")
    return settings.max_input_chars if settings is not None else 20_000


def _text(value: str, info: ValidationInfo) -> str:
    value = value.strip()
    if not value:
        raise PydanticCustomError("empty_text", f"The field '{info.field_name}' must not be empty.")
    limit = _max_chars(info)
    if len(value) > limit:
        raise PydanticCustomError("text_too_long", f"The text is too long: at most {limit} characters are accepted.")
    return value


def _optional_text(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > _max_chars(info):
        raise PydanticCustomError("text_too_long",
                                  f"The text is too long: at most {_max_chars(info)} characters are accepted.")
    return value or None


def _level(value: str) -> str:
    key = level_key(value)
    if key is None:
        raise PydanticCustomError("unknown_level", f"Unknown level; use one of: {', '.join(LEVELS)}.")
    return key


def _style(value: str) -> str:
    key = style_key(value)
    if key is None:
        names = ", ".join(display for display, _ in STYLES.values())
        raise PydanticCustomError("unknown_style", f"Unknown image style; use one of: {names}.")
    return key


InputText = Annotated[str, AfterValidator(_text)]
OptionalText = Annotated[str | None, AfterValidator(_optional_text)]
LevelName = Annotated[str, AfterValidator(_level), Field(json_schema_extra={"enum": list(LEVELS)})]
StyleName = Annotated[str, AfterValidator(_style), Field(
    json_schema_extra={"examples": [display for display, _ in STYLES.values()] + list(STYLES)})]
RequestId = Annotated[str | None, Field(default=None, pattern=r"^[A-Za-z0-9_-]{8,128}$",
                                        description="Optional caller-chosen id (same as the X-Request-ID header).")]


class AppRequest(BaseModel):
    # The app may add fields over time; unknown ones are ignored rather than refused.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    user_token: str | None = Field(default=None, max_length=4096, description="The app's device token; not used.")
    request_id: RequestId = None


class ComicRequest(AppRequest):
    text: InputText
    level: LevelName = "moderate"
    image_style: StyleName = "comic_book"


class ImageRequest(AppRequest):
    prompt: InputText
    context: OptionalText = None
    level: LevelName = "moderate"
    image_style: StyleName = "comic_book"
    aspect_ratio: Literal[ASPECT_RATIOS] = "1:1"  # type: ignore[valid-type]
