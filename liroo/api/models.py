"""Request bodies exactly as the app sends them, validated with pydantic.

Validators raise ``PydanticCustomError`` with stable types (``empty_text``,
``text_too_long``, ``unknown_level``, ``unknown_style``...) that the runner
turns into the error's ``code``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

import regex
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ..generation.options import LEVELS, STYLES, level_key, style_key
from ..providers.base import ASPECT_RATIOS, VOICE_ROLES
from ..requestid import REQUEST_ID_SCHEMA, valid_request_id
from ..settings import Settings

# A JSON string may spell a lone UTF-16 surrogate ("\ud800"); Python keeps it in a str that
# cannot be encoded, which fails far from here (a prompt, a file name, a log line).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(value: Any, info: ValidationInfo) -> Any:
    """Every string in ``value`` (lists included) must be valid Unicode text."""
    strings = value if isinstance(value, list) else [value]
    if any(isinstance(s, str) and _SURROGATE.search(s) for s in strings):
        raise PydanticCustomError(
            "invalid_text", f"The field '{info.field_name}' is not valid Unicode text."
        )
    return value


class TextModel(BaseModel):
    """A request model whose every string field is checked for lone surrogates before anything
    else."""

    _valid_unicode = field_validator("*", mode="before")(_refuse_surrogates)


def _max_chars(info: ValidationInfo, limit: str = "max_input_chars") -> int:
    settings = (info.context or {}).get("settings")
    return getattr(settings or Settings, limit)  # the class attribute is the default


# Control characters (NUL and the like) carry nothing a reader sees and break prompts and files:
# they are removed, keeping tab and newlines.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# One user-perceived character (an extended grapheme cluster, UAX #29), as the app's
# String.count counts them. The ``regex`` module follows the current Unicode; ``re`` has no \X.
_GRAPHEME = regex.compile(r"\X")


def has_words(value: str) -> bool:
    """Whether ``value`` has a letter or a digit: zero-width characters, marks, punctuation and
    emoji alone give a model nothing to read."""
    return any(unicodedata.category(c)[0] in "LN" for c in value)


def grapheme_count(value: str) -> int:
    """The characters a person (and the app's ``String.count``) counts in ``value``."""
    return sum(1 for _ in _GRAPHEME.finditer(value))


def _cleaned(value: str, info: ValidationInfo, limit: str) -> str:
    """``value`` without surrounding white space and control characters; 413 when it has more
    characters than ``limit`` allows, counted as the app counts them (grapheme clusters)."""
    value = _CONTROL.sub("", value).strip()
    most = _max_chars(info, limit)
    # A cluster holds at least one code point: only a text longer in code points can be too long.
    if len(value) > most and grapheme_count(value) > most:
        raise PydanticCustomError(
            "text_too_long", f"The text is too long: at most {most} characters are accepted."
        )
    return value


def _text(value: str, info: ValidationInfo, limit: str = "max_input_chars") -> str:
    value = _cleaned(value, info, limit)
    if not value:
        raise PydanticCustomError("empty_text", f"The field '{info.field_name}' must not be empty.")
    if not has_words(value):
        raise PydanticCustomError(
            "empty_text",
            f"The field '{info.field_name}' has no words in it: send text with letters or digits.",
        )
    return value


def _optional_text(
    value: str | None, info: ValidationInfo, limit: str = "max_input_chars"
) -> str | None:
    if value is None:
        return None
    return _cleaned(value, info, limit) or None


def _long_text(value: str, info: ValidationInfo) -> str:
    return _text(value, info, "max_long_text_chars")


def _optional_long_text(value: str | None, info: ValidationInfo) -> str | None:
    return _optional_text(value, info, "max_long_text_chars")


def _level(value: str) -> str:
    key = level_key(value)
    if key is None:
        raise PydanticCustomError(
            "unknown_level", f"Unknown level; use one of: {', '.join(LEVELS)}."
        )
    return key


def _style(value: str) -> str:
    key = style_key(value)
    if key is None:
        names = ", ".join(display for display, _ in STYLES.values())
        raise PydanticCustomError("unknown_style", f"Unknown image style; use one of: {names}.")
    return key


def _request_id(value: str | None) -> str | None:
    # One answer for a bad id, in the body or in the X-Request-ID header (liroo/requestid.py): 400.
    if value is not None and not valid_request_id(value):
        raise PydanticCustomError(
            "invalid_request_id", "A request id must be 8 to 128 letters, digits, '-' or '_'."
        )
    return value


InputText = Annotated[str, AfterValidator(_text)]
OptionalText = Annotated[str | None, AfterValidator(_optional_text)]
# Where the app sends a whole story or study page (narration, dialogue context):
# LIROO_MAX_LONG_TEXT_CHARS.
LongText = Annotated[str, AfterValidator(_long_text)]
OptionalLongText = Annotated[str | None, AfterValidator(_optional_long_text)]
LevelName = Annotated[str, AfterValidator(_level), Field(json_schema_extra={"enum": list(LEVELS)})]
StyleName = Annotated[
    str,
    AfterValidator(_style),
    Field(
        json_schema_extra={"examples": [display for display, _ in STYLES.values()] + list(STYLES)}
    ),
]
RequestId = Annotated[
    str | None,
    AfterValidator(_request_id),
    Field(
        default=None,
        json_schema_extra={"pattern": REQUEST_ID_SCHEMA},
        description="Optional caller-chosen id (same as the X-Request-ID header).",
    ),
]


class AppRequest(TextModel):
    # The app may add fields over time; unknown ones are ignored rather than refused.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    user_token: str | None = Field(
        default=None, max_length=4096, description="The app's device token; not used."
    )
    request_id: RequestId = None


# A text made into pictures at a level and in a style: a comic, a lecture. (Comments, not
# docstrings: a model's docstring would become its schema's description.)
class IllustratedRequest(AppRequest):
    text: InputText
    level: LevelName = "moderate"
    image_style: StyleName = "comic_book"


class ComicRequest(IllustratedRequest):
    pass


class ImageRequest(AppRequest):
    prompt: InputText
    context: OptionalText = None
    level: LevelName = "moderate"
    image_style: StyleName = "comic_book"
    aspect_ratio: Literal[ASPECT_RATIOS] = "1:1"  # type: ignore[valid-type]


# --- stories, study pages, lectures, speech ------------------------------------------------------

OUTPUT_FORMATS = ("flashcards", "slideshow")
# Values of output_format that mean "the default study page", so a client may name it.
DEFAULT_OUTPUT_FORMATS = ("", "blocks", "default")


def _voice(value: str) -> str:
    key = value.strip().lower()
    if key not in VOICE_ROLES:
        raise PydanticCustomError(
            "unknown_voice", f"Unknown voice; use one of: {', '.join(VOICE_ROLES)}."
        )
    return key


def _output_format(value: str | None) -> str | None:
    key = (value or "").strip().lower()
    if key in DEFAULT_OUTPUT_FORMATS:
        return None
    if key not in OUTPUT_FORMATS:
        raise PydanticCustomError(
            "unknown_output_format",
            f"Unknown output_format; use {' or '.join(OUTPUT_FORMATS)}, or leave it out.",
        )
    return key


VoiceName = Annotated[
    str, AfterValidator(_voice), Field(json_schema_extra={"enum": list(VOICE_ROLES)})
]
OutputFormat = Annotated[
    str | None,
    AfterValidator(_output_format),
    Field(json_schema_extra={"examples": list(OUTPUT_FORMATS)}),
]
# A short label (a genre, a name) that goes into a prompt: one line, not a second text.
ShortText = Annotated[str | None, Field(max_length=120), AfterValidator(_optional_text)]


class StoryRequest(AppRequest):
    text: InputText = Field(
        description="The app's story prompt (level line, genre and style sentences, "
        "'Original Text:', optional main-character sentence, the student's text), or just the "
        "student's text."
    )
    level: LevelName | None = Field(
        default=None, description="Wins over the prompt's [Level: ...] line."
    )
    image_style: StyleName | None = Field(
        default=None, description="Wins over the prompt's image style sentence."
    )
    genre: ShortText = Field(default=None, description="Wins over the prompt's genre sentence.")
    main_character: ShortText = Field(
        default=None, description="Wins over the prompt's main-character sentence."
    )


class Profile(TextModel):
    model_config = ConfigDict(extra="ignore")

    studentLevel: ShortText = None  # noqa: N815 (the app's key)
    topicsOfInterest: list[Annotated[str, Field(max_length=120)]] = Field(  # noqa: N815
        default_factory=list, max_length=30
    )


class HistoryEntry(TextModel):
    model_config = ConfigDict(extra="ignore")

    sender: Literal["user", "ai"]
    text: Annotated[str, Field(max_length=Settings.max_input_chars)]


class ProcessRequest(AppRequest):
    # This docstring is the schema's description in /openapi.json: kept on one line as it reads.
    """One endpoint, five modes: dialogue, explain again, flashcards, slideshow, or the study page."""  # noqa: E501

    input_text: OptionalText = Field(
        default=None, description="Required for the study page, flashcards, slideshow."
    )
    level: LevelName = Field(
        default="moderate", description="Unset: the profile's studentLevel if it is a level."
    )
    summarization_tier: ShortText = Field(default=None, description="e.g. 'Detailed Explanation'.")
    profile: Profile | None = None
    output_format: OutputFormat = Field(
        default=None, description="flashcards or slideshow; unset: the study page."
    )
    dialogue_mode: bool = False
    selected_text_snippet: OptionalLongText = None
    original_block_content: OptionalLongText = None
    user_question: OptionalText = Field(default=None, description="Required in dialogue mode.")
    conversation_history: list[HistoryEntry] = Field(default_factory=list, max_length=200)
    explain_again_mode: bool = False
    original_paragraph_text: OptionalText = Field(
        default=None, description="Required in explain-again mode."
    )
    image_style: StyleName | None = Field(
        default=None, description="Optional style of the study page's pictures."
    )

    @property
    def mode(self) -> str:
        if self.dialogue_mode:
            return "dialogue"
        if self.explain_again_mode:
            return "explain_again"
        return self.output_format or "blocks"

    @property
    def required_field(self) -> str:
        """The text field this mode cannot work without (checked by the view, which knows the
        mode)."""
        return {"dialogue": "user_question", "explain_again": "original_paragraph_text"}.get(
            self.mode, "input_text"
        )


class LectureRequest(IllustratedRequest):
    image_style: StyleName = "watercolor"


class TtsRequest(AppRequest):
    text: LongText
    voice: VoiceName = "narrator"
    model: ShortText = Field(
        default=None, description="The model the app asks for; the answer names the one used."
    )
