"""What every model provider offers, and the few errors it may raise.

Three typed operations: structured text (a prompt and a pydantic model in, a
validated instance out), an image, and speech. A provider never returns a
placeholder: it returns a real result or raises one of the errors below,
which the API maps to HTTP statuses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class ImageResult:
    data: bytes          # encoded image (PNG, JPEG, WebP...) as the model sent it
    mime_type: str
    provider: str        # "gemini" or "offline"
    model: str


@dataclass(frozen=True)
class SpeechResult:
    data: bytes          # a complete file AVFoundation plays (WAV)
    mime_type: str       # "audio/wav"
    provider: str
    model: str


class Provider(Protocol):
    name: str            # "gemini" or "offline"
    text_model: str
    image_model: str
    tts_model: str

    def generate_structured(self, prompt: str, schema: type[T], *, system: str | None = None) -> T:
        """Ask for JSON matching ``schema``; return a validated instance."""

    def generate_image(self, prompt: str, aspect_ratio: str = "1:1") -> ImageResult:
        """Make one picture for ``prompt``."""

    def generate_speech(self, text: str, voice: str) -> SpeechResult:
        """Read ``text`` aloud with ``voice`` ("narrator" or "character")."""


class ProviderError(Exception):
    """A model call that did not produce a usable result."""

    status = 502
    code = "provider_error"
    message = "The content service failed; please try again."

    def __init__(self, detail: str = "", *, retry_after_s: int | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail          # for logs only, never sent to clients
        self.retry_after_s = retry_after_s


class RateLimited(ProviderError):
    status = 503
    code = "provider_rate_limited"
    message = "The content service is busy; please retry shortly."


class ContentBlocked(ProviderError):
    status = 422
    code = "content_blocked"
    message = "The content service declined this request; try rewording the text."


class ProviderUnavailable(ProviderError):
    status = 502
    code = "provider_unavailable"
    message = "The content service could not be reached or did not answer in time; please try again."


class BadOutput(ProviderError):
    status = 502
    code = "provider_bad_output"
    message = "The content service returned something unusable; please try again."
