"""What generations return, as pydantic models: the generation code builds its answers with them,
and
/openapi.json documents them, so the document and the code cannot drift.

Pure data (no Flask), so the generation modules may build these too. A
``...Result`` is what a generation returns; the runner stamps ``request_id``
and ``timestamp`` on it (``RunnerStamp``), which is what the ``...Response``
beside it documents. Keys are the client's (camelCase in stories and blocks).
A field made with ``omitted()`` is left out of the JSON when it has no value
(the app reads "absent", not null); ``Chapter.imageUrl`` is the one the app
wants as an explicit null.

Naming: the models here are the API's answer, named as the app's contract
names them. What the model writes (the structured output) is defined beside
each generation, and where the answer carries one of its items over as one
of its own, the script's is named after the answer's with ``Script``:
``ComicScript`` -> ``Comic``, ``ComicPanelScript`` -> ``ComicPanel``,
``StoryScript`` -> ``Story``, ``ChapterScript`` -> ``Chapter``,
``LectureScript`` -> ``Lecture``, ``LectureSectionScript`` ->
``LectureSection``, ``FlashcardScript`` -> ``Flashcard``, ``SlideScript`` ->
``Slide``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# The reading level a story was written for (not the governor's memory Level).
ReadingLevel = Literal["beginner", "moderate", "intermediate"]


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


class RunnerStamp(ResponseModel):
    """The fields the runner adds to every generation answer."""

    request_id: str = Field(
        description="The caller's X-Request-ID (or body request_id), else a new id."
    )
    timestamp: str = Field(description="ISO-8601 UTC time of the answer.")


# --- errors and bookkeeping
# ----------------------------------------------------------------------------


class ErrorResponse(ResponseBody):
    """Every error: a sentence for people and a stable code for programs."""

    model_config = ConfigDict(extra="allow")

    success: Literal[False] | None = omitted("false on errors of generation endpoints")
    error: str = Field(description="What went wrong, as a sentence (never exception text).")
    code: str = Field(
        description="Stable machine code, e.g. missing_field, unknown_level, provider_rate_limited."
    )
    request_id: str | None = omitted()
    timestamp: str | None = omitted()
    field: str | None = omitted("The request field at fault, for validation errors.")
    retry_after_s: int | None = omitted(
        "Seconds to wait before retrying (also the Retry-After header)."
    )


class LectureErrorResponse(ErrorResponse):
    lecture_id: str = Field(
        description="Present on every /generate_lecture answer, errors included."
    )


class AsyncAccepted(ResponseBody):
    """202 for ``Prefer: respond-async``: poll /progress, then fetch the result from /jobs."""

    request_id: str
    status: Literal["running"]
    location: str
    progress: str


class IndexResponse(ResponseBody):
    service: str
    status: str
    health: str
    openapi: str


class HealthResponse(ResponseBody):
    status: Literal["healthy", "degraded"]
    message: str
    memory_usage_mb: float
    memory_warning: bool
    memory_critical: bool
    timestamp: str
    storage_error: str | None = omitted(
        "Present while storage is failing: when and why the last media write failed."
    )


class ReadyResponse(ResponseBody):
    status: Literal["ready"]
    redis: Literal["ok", "not configured"] = Field(
        description="Whether REDIS_URL is set and answers."
    )
    timestamp: str


class MemoryResponse(ResponseBody):
    model_config = ConfigDict(extra="allow")

    memory_usage_mb: float
    memory_warning_threshold_mb: float
    memory_limit_mb: float
    memory_status: Literal["normal", "warning", "critical"]
    memory_details: dict[str, float | None]
    psutil_available: bool
    timestamp: str
    source: str
    cgroup: dict[str, Any] | None
    worker: dict[str, Any]
    governor: dict[str, Any]


class ProgressResponse(ResponseBody):
    success: bool
    status: Literal["running", "succeeded", "failed"]
    step: str
    step_number: int
    total_steps: int
    details: str
    last_updated: str
    progress_percentage: float
    request_id: str
    timestamp: str
    error_code: str | None = omitted("On failed jobs.")
    error: str | None = omitted("On failed jobs.")
    partial: dict[str, list[dict[str, Any]]] | None = omitted(
        "While it runs, what is already finished, by kind: comics `panels` ({panel_id, image_url, "
        "scene, dialogue}); stories `cover` and `chapters` ({order, title, imageUrl}); lectures "
        "`pictures` ({section, title, image_url}, sections numbered from 1) and `audio_files` "
        "(as in the finished answer)."
    )


class JobResponse(ProgressResponse):
    result_status: int | None = omitted("HTTP status of the finished request.")
    result: dict[str, Any] | None = omitted(
        "The finished request's body, as the synchronous call answers it."
    )


# --- comics and images
# ----------------------------------------------------------------------------------


class ComicPanel(ResponseModel):
    panel_id: int
    scene: str
    image_prompt: str
    dialogue: dict[str, str]
    image_url: str | None = omitted()
    image_error: str | None = omitted("Why this panel has no picture.")


class Comic(ResponseModel):
    comic_title: str
    theme: str
    character_style_guide: dict[str, str]
    panel_layout: list[ComicPanel]


class ComicResult(ResponseBody):
    success: bool
    comic: Comic
    provider: str


class ImageResult(ResponseBody):
    url: str
    image_url: str
    provider: str


# The stamp's fields come first in these two documents (and success has no default), as they always
# have.
class ComicResponse(ComicResult, RunnerStamp):
    pass


class ImageResponse(ImageResult, RunnerStamp):
    pass


# --- stories
# ---------------------------------------------------------------------------------------------


class Chapter(ResponseModel):
    id: str = Field(default_factory=new_id)
    title: str
    content: str
    order: int = Field(ge=1)
    imageUrl: str | None = Field(description="null when this chapter's picture could not be made.")  # noqa: N815
    imageError: str | None = omitted("Why the picture is missing.")  # noqa: N815


class MainCharacter(ResponseModel):
    name: str
    description: str
    personality: str
    imageUrl: str | None = omitted()  # noqa: N815


class Story(ResponseModel):
    title: str
    content: str = Field(description="An overview of the story.")
    level: ReadingLevel
    chapters: list[Chapter]
    imageStyle: str = Field(description="The style's display name, e.g. 'Studio Ghibli'.")  # noqa: N815
    genre: str | None = omitted()
    mainCharacters: list[MainCharacter]  # noqa: N815
    coverImageUrl: str | None = omitted()  # noqa: N815


class StoryResult(ResponseBody):
    success: bool = True
    story: Story
    provider: str


class StoryResponse(RunnerStamp, StoryResult):
    pass


# --- /process
# ----------------------------------------------------------------------------------------------


class _Block(ResponseModel):
    id: str = Field(default_factory=new_id, json_schema_extra={"format": "uuid"})
    content: str


class HeadingBlock(_Block):
    type: Literal["heading"] = "heading"


class ParagraphBlock(_Block):
    type: Literal["paragraph"] = "paragraph"


class ImageBlock(_Block):
    type: Literal["image"] = "image"
    url: str
    alt: str


class QuizHeadingBlock(_Block):
    type: Literal["quizHeading"] = "quizHeading"


class AnswerOption(ResponseModel):
    id: str = Field(default_factory=new_id, json_schema_extra={"format": "uuid"})
    text: str


class QuestionBlock(_Block):
    type: Literal["multipleChoiceQuestion"] = "multipleChoiceQuestion"
    options: list[AnswerOption]
    correctAnswerID: str = Field(description="The id of the right option.")  # noqa: N815
    explanation: str


Block = Annotated[
    Union[HeadingBlock, ParagraphBlock, ImageBlock, QuizHeadingBlock, QuestionBlock],
    Field(discriminator="type"),
]


class BlocksResult(ResponseBody):
    success: bool = True
    blocks: list[Block]
    provider: str
    image_errors: list[str] | None = omitted(
        "Codes of pictures that could not be made (their blocks are left out)."
    )


class DialogueResult(ResponseBody):
    success: bool = True
    dialogue_response: str
    provider: str


class ExplainAgainResult(ResponseBody):
    success: bool = True
    re_explained_paragraph: str
    provider: str


class Flashcard(ResponseModel):
    front: str
    back: str


class FlashcardsResult(ResponseBody):
    success: bool = True
    flashcards: list[Flashcard]
    provider: str


class Slide(ResponseModel):
    title: str
    content: list[str]


class SlidesResult(ResponseBody):
    success: bool = True
    slides: list[Slide]
    provider: str


class BlocksResponse(RunnerStamp, BlocksResult):
    pass


class DialogueResponse(RunnerStamp, DialogueResult):
    pass


class ExplainAgainResponse(RunnerStamp, ExplainAgainResult):
    pass


class FlashcardsResponse(RunnerStamp, FlashcardsResult):
    pass


class SlidesResponse(RunnerStamp, SlidesResult):
    pass


# --- lectures and speech
# --------------------------------------------------------------------------------------


class LectureSection(ResponseModel):
    title: str
    script: str
    image_prompt: str
    image_url: str | None = omitted()
    image_error: str | None = omitted("Why this section has no picture.")


class Lecture(ResponseModel):
    title: str
    sections: list[LectureSection]


class AudioFile(ResponseModel):
    type: Literal["title", "section_title", "section_script"]
    text: str
    url: str
    filename: str
    section: int | None = omitted(
        "The section's number, counted from 1 (the app reads lecture.sections[section - 1]); "
        "absent for the title."
    )


class AudioError(ResponseModel):
    type: Literal["title", "section_title", "section_script"]
    section: int | None = omitted()
    code: str


class LectureResult(ResponseBody):
    success: bool = True
    lecture_id: str
    lecture: Lecture
    audio_files: list[AudioFile]
    audio_errors: list[AudioError] | None = omitted("Narration clips that could not be made.")
    provider: str


class LectureResponse(RunnerStamp, LectureResult):
    pass


class TtsResult(ResponseBody):
    success: bool = True
    audio_url: str
    voice: Literal["narrator", "character"]
    model: str = Field(description="The speech model that read the text.")
    text_length: int
    duration_s: float
    content_type: Literal["audio/mpeg", "audio/wav"] = Field(
        description="The stored file's type (LIROO_AUDIO_FORMAT)."
    )
    provider: str


class TtsResponse(RunnerStamp, TtsResult):
    pass
