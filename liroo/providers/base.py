"""What every model provider offers, and the few errors it may raise.

Three typed operations: structured text (a prompt and a pydantic model in, a
validated instance out), an image, and speech. A provider never returns a
placeholder: it returns a real result or raises one of the errors below,
which the API maps to HTTP statuses.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, TypeVar

from pydantic import BaseModel

from ..metrics import PROVIDER_CALLS

T = TypeVar("T", bound=BaseModel)

# The roles a caller may ask to be read aloud by; each provider maps them to its own voices.
VOICE_ROLES = ("narrator", "character")
# The aspect ratios Gemini's image models accept; the offline provider draws the same.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


def aspect_ratio_parts(aspect_ratio: str) -> tuple[int, int]:
    """``"16:9"`` -> ``(16, 9)``; anything not in ASPECT_RATIOS is a caller's bug (ValueError)."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"aspect ratio {aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}")
    width, height = aspect_ratio.split(":")
    return int(width), int(height)


@dataclass(frozen=True)
class ImageResult:
    data: bytes  # encoded image (PNG, JPEG, WebP...) as the model sent it
    mime_type: str
    provider: str  # "gemini" or "offline"
    model: str


@dataclass(frozen=True)
class SpeechResult:
    data: bytes  # a complete file AVFoundation plays (WAV)
    mime_type: str  # "audio/wav"
    provider: str
    model: str


class Provider(Protocol):
    """Schemas must not contain dict fields (see ``liroo.providers.schema``); both providers refuse
    them."""

    name: str  # "gemini" or "offline"
    text_model: str
    image_model: str
    tts_model: str

    def generate_structured(self, prompt: str, schema: type[T], *, system: str | None = None) -> T:
        """Ask for JSON matching ``schema``; return a validated instance."""

    def generate_image(self, prompt: str, aspect_ratio: str = "1:1") -> ImageResult:
        """Make one picture for ``prompt``."""

    def generate_speech(self, text: str, voice: str) -> SpeechResult:
        """Read ``text`` aloud with ``voice`` ("narrator" or "character"); calls
        ``take_answer_room()`` before it holds the answer (see ``answer_room``)."""


class ProviderError(Exception):
    """A model call that did not produce a usable result."""

    status = 502
    code = "provider_error"
    outcome = "error"  # label of liroo_provider_calls_total
    message = "The content service failed; please try again."

    def __init__(self, detail: str = "", *, retry_after_s: int | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail  # for logs only, never sent to clients
        self.retry_after_s = retry_after_s


class RateLimited(ProviderError):
    status = 503
    code = "provider_rate_limited"
    outcome = "rate_limited"
    message = "The content service is busy; please retry shortly."


class ContentBlocked(ProviderError):
    status = 422
    code = "content_blocked"
    outcome = "blocked"
    message = "The content service declined this request; try rewording the text."


class ProviderUnavailable(ProviderError):
    status = 502
    code = "provider_unavailable"
    outcome = "unavailable"
    message = (
        "The content service could not be reached or did not answer in time; please try again."
    )


class BadOutput(ProviderError):
    status = 502
    code = "provider_bad_output"
    outcome = "bad_output"
    message = "The content service returned something unusable; please try again."


@contextmanager
def counted_call(operation: str) -> Iterator[None]:
    """Count one model call in ``liroo_provider_calls_total{operation, outcome}``."""
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except ProviderError as exc:
        outcome = exc.outcome
        raise
    finally:
        PROVIDER_CALLS.labels(operation, outcome).inc()


# --- room for an answer ---------------------------------------------------------------------
_ANSWER_ROOM: ContextVar[Callable[[], None] | None] = ContextVar("answer_room", default=None)


@contextmanager
def answer_room(take: Callable[[], None]) -> Iterator[None]:
    """Within: the provider calls ``take`` (once) just before it starts to hold the model's
    answer: for Gemini, when a successful answer's headers have come and before its body is read.

    A heavy step reserves the memory its answer needs in ``take`` (which may wait, and may raise
    to give the call up), so a request waiting for the model holds no reservation: a chunk of
    speech waits ~1 s for the model and holds its answer for a fraction of that. A provider
    that never calls ``take`` leaves it to the step (``take_answer_room`` after the call).
    """
    token = _ANSWER_ROOM.set(take)
    try:
        yield
    finally:
        _ANSWER_ROOM.reset(token)


def take_answer_room() -> None:
    """The answer is about to be held: run the step's ``take``, once per ``answer_room`` (a
    retried call's later answers are covered by the first); nothing outside one."""
    take = _ANSWER_ROOM.get()
    if take is not None:
        _ANSWER_ROOM.set(None)
        take()
