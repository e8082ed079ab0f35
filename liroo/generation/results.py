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

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import ConfigDict, Field

from .response_model import ResponseBody, ResponseModel, new_id, omitted

# The reading level a story was written for (not the governor's memory Level).
ReadingLevel = Literal["beginner", "moderate", "intermediate"]


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


# --- what a running generation shows before its answer (/progress `partial`)
# ------------------------------------------


class PartialItem(ResponseModel):
    """An item a running generation has finished: the list of ``PartialResults`` it joins is
    ``KIND``."""

    KIND: ClassVar[str]

    def shown(self) -> tuple[str, dict[str, Any]]:
        """(kind, item) as ``Progress.advance`` keeps it."""
        return self.KIND, self.model_dump(mode="json")


class PartialPanel(PartialItem):
    KIND = "panels"

    panel_id: int = Field(ge=1)
    image_url: str
    scene: str
    dialogue: dict[str, str]


class PartialCover(PartialItem):
    KIND = "cover"

    title: str
    imageUrl: str  # noqa: N815


class PartialChapter(PartialItem):
    KIND = "chapters"

    order: int = Field(ge=1)
    title: str
    imageUrl: str  # noqa: N815


class PartialPicture(PartialItem):
    KIND = "pictures"

    section: int = Field(ge=1, description="The section's number, counted from 1.")
    title: str
    image_url: str


# What a lecture's narration clip reads: its title, a section's title or a section's script.
ClipKind = Literal["title", "section_title", "section_script"]


class PartialClip(PartialItem):
    KIND = "audio_files"

    type: ClipKind
    text: str
    url: str
    section: int | None = omitted("The section's number, counted from 1; absent for the title.")


class PartialResults(ResponseModel):
    """What a running generation has already finished, by kind, each list in the order made."""

    panels: list[PartialPanel] | None = omitted("A comic's drawn panels.")
    cover: list[PartialCover] | None = omitted("A story's cover picture.")
    chapters: list[PartialChapter] | None = omitted("A story's drawn chapter pictures.")
    pictures: list[PartialPicture] | None = omitted("A lecture's section pictures.")
    audio_files: list[PartialClip] | None = omitted(
        "A lecture's recorded clips (as in its answer, without filename)."
    )


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
    partial: PartialResults | None = omitted(
        "While it runs, what is already finished (absent until something is)."
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
    type: ClipKind
    text: str
    url: str
    filename: str
    section: int | None = omitted(
        "The section's number, counted from 1 (the app reads lecture.sections[section - 1]); "
        "absent for the title."
    )


class AudioError(ResponseModel):
    type: ClipKind
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
