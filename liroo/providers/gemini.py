"""Gemini through the current SDK, ``google-genai``.

One ``genai.Client`` per process, made on first use: gunicorn preloads the
app in the master and forks workers, and a client (its connection pool) made
before the fork must not be shared, so a fork hook drops it in the child.
The SDK retries 408/429/5xx, timeouts and connection errors itself
(``HttpRetryOptions``); 400 is not in that list, as a bad request or a bad key
fails the same way every time. What still fails after the retries becomes one
of the provider errors; so do the answers that are not results (blocked, no
candidates, text instead of a picture, truncated JSON).

Pacing: one budget per model for the whole service (``LIROO_GEMINI_RPM``,
in Redis with ``REDIS_URL``, else in memory shared by the instance's workers;
see pacing.py), and every 429 the server sends, retried or not, holds that
model's budget back for its Retry-After, so every other caller backs off too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import weakref
from typing import Any

import httpx2
import pydantic
from google import genai
from google.genai import errors, types

from ..settings import Settings, SettingsError
from .base import (
    VOICE_ROLES,
    BadOutput,
    ContentBlocked,
    ImageResult,
    ProviderUnavailable,
    RateLimited,
    SpeechResult,
    T,
    aspect_ratio_parts,
    counted_call,
    take_answer_room,
)
from .pacing import Pacer, make_pacer
from .schema import check_schema
from .wav import pcm_to_wav

log = logging.getLogger("liroo.providers.gemini")

# Gemini's prebuilt voices for the two roles the client asks for.
VOICES = {"narrator": "Charon", "character": "Puck"}
# Retried by the SDK; 400 (bad request), 401/403 (key) and 404 (model) are not: they would fail
# again.
RETRY_STATUS_CODES = [408, 429, 500, 502, 503, 504]
# Finish reasons that mean "the model declined", which rewording may fix. (Any prompt-level
# block_reason counts too; NO_IMAGE, IMAGE_OTHER and OTHER mean an unusable answer instead.)
BLOCKED_REASONS = {
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
    "JAILBREAK",
}
_PCM_RATE = re.compile(r"rate=(\d+)")
_MODEL_IN_PATH = re.compile(r"/models/([^/:]+):")


class GeminiProvider:
    name = "gemini"

    def __init__(self, settings: Settings, *, pacer: Pacer | None = None) -> None:
        if not settings.genai_api_key:
            raise SettingsError("LIROO_PROVIDER=gemini needs GENAI_API_KEY")
        self.settings = settings
        self.text_model = settings.text_model
        self.image_model = settings.image_model
        self.tts_model = settings.tts_model
        # Made here, before gunicorn forks, so that every worker shares its memory (not in _reset).
        self.pacer = pacer or make_pacer(settings)
        self._reset()
        _reset_in_child_after_fork(self)

    def _reset(self) -> None:
        """Fresh per-process state: no client yet, new locks (the pacer's budget stays shared)."""
        self._lock = threading.Lock()
        self._client: genai.Client | None = None

    # --- the client ----------------------------------------------------------
    def client(self) -> genai.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
                client = self._client
        return client

    def _make_client(self) -> genai.Client:
        s = self.settings
        options = types.HttpOptions(
            base_url=s.gemini_base_url,
            timeout=int(s.gemini_timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=s.gemini_retry_attempts,
                initial_delay=s.gemini_retry_initial_s,
                max_delay=s.gemini_retry_max_s,
                exp_base=2,
                jitter=s.gemini_retry_initial_s,
                http_status_codes=RETRY_STATUS_CODES,
            ),
            client_args={"event_hooks": {"response": [self._on_response]}},
        )
        return genai.Client(api_key=s.genai_api_key, vertexai=False, http_options=options)

    def _on_response(self, response: httpx2.Response) -> None:
        """Every HTTP answer, retries included, before its body is read: a successful one gets
        its step's memory first (``answer_room``); a 429 holds that model's budget back for
        everyone."""
        if response.is_success:
            take_answer_room()
        elif response.status_code == 429:
            match = _MODEL_IN_PATH.search(response.request.url.path)
            response.read()
            delay = retry_after_s(response.headers, _json_or_none(response))
            log.info(
                "gemini 429 on %s; pacing cools down for %ss", match and match.group(1), delay or 0
            )
            if match:
                self.pacer.cool_down(match.group(1), delay or 0)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- the three operations --------------------------------------------------
    def generate_structured(self, prompt: str, schema: type[T], *, system: str | None = None) -> T:
        check_schema(schema)  # a dict field is the caller's bug: raise it before any call
        config = _config(
            response_mime_type="application/json", response_schema=schema, system_instruction=system
        )
        with counted_call("text"):
            candidate = self._generate("text", self.text_model, prompt, config)
            if _reason(candidate.finish_reason) == "MAX_TOKENS":
                raise BadOutput("the JSON answer was cut off (finishReason MAX_TOKENS)")
            text = "".join(p.text for p in _parts(candidate) if p.text and not p.thought)
            if not text.strip():
                raise BadOutput("the answer had no text")
            try:
                return schema.model_validate_json(text)
            except pydantic.ValidationError as exc:
                raise BadOutput(
                    f"the answer does not match {schema.__name__}: "
                    f"{exc.errors()[0]['type']} ({exc.error_count()} errors)"
                ) from None

    def generate_image(self, prompt: str, aspect_ratio: str = "1:1") -> ImageResult:
        aspect_ratio_parts(aspect_ratio)
        config = _config(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio=aspect_ratio)
        )
        with counted_call("image"):
            candidate = self._generate("image", self.image_model, prompt, config)
            for part in _parts(candidate):
                blob = part.inline_data
                if blob and blob.data and (blob.mime_type or "").startswith("image/"):
                    return ImageResult(blob.data, blob.mime_type, self.name, self.image_model)
            said = "text" if any(p.text for p in _parts(candidate)) else "nothing"
            raise BadOutput(
                f"asked for an image, got {said} (finishReason {_reason(candidate.finish_reason)})"
            )

    def generate_speech(self, text: str, voice: str) -> SpeechResult:
        voice_name = VOICES[voice if voice in VOICE_ROLES else "narrator"]
        config = _config(
            response_modalities=["AUDIO"],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=voice_name)
                )
            ),
        )
        with counted_call("speech"):
            candidate = self._generate("speech", self.tts_model, text, config)
            for part in _parts(candidate):
                blob = part.inline_data
                if blob and blob.data and (blob.mime_type or "").startswith("audio/"):
                    return SpeechResult(
                        _as_wav(blob.data, blob.mime_type), "audio/wav", self.name, self.tts_model
                    )
            raise BadOutput(
                f"asked for speech, got no audio (finishReason {_reason(candidate.finish_reason)})"
            )

    # --- one call ----------------------------------------------------------------
    def _generate(
        self, operation: str, model: str, prompt: str, config: types.GenerateContentConfig
    ) -> types.Candidate:
        waited = self.pacer.acquire(model)
        log.debug("gemini %s on %s: %r", operation, model, prompt)
        started = time.perf_counter()
        try:
            response = self.client().models.generate_content(
                model=model, contents=prompt, config=config
            )
        except errors.ClientError as exc:
            if exc.code == 429:
                raise RateLimited(
                    f"429 after {self.settings.gemini_retry_attempts} attempts: {exc.message}",
                    retry_after_s=retry_after_s(_headers(exc), exc.details),
                ) from None
            what = (
                "the API key was refused" if exc.code in (401, 403) else "the request was refused"
            )
            raise ProviderUnavailable(f"{what} ({exc.code} {exc.status}): {exc.message}") from None
        except errors.APIError as exc:
            raise ProviderUnavailable(
                f"{exc.code} {exc.status} after retries: {exc.message}"
            ) from None
        except httpx2.TimeoutException:
            raise ProviderUnavailable(
                f"no answer within {self.settings.gemini_timeout_s}s "
                f"({self.settings.gemini_retry_attempts} attempts)"
            ) from None
        except httpx2.TransportError as exc:
            raise ProviderUnavailable(f"could not reach Gemini: {type(exc).__name__}") from None
        except (
            json.JSONDecodeError,
            errors.UnknownApiResponseError,
            pydantic.ValidationError,
        ) as exc:
            raise BadOutput(f"unreadable response body ({type(exc).__name__})") from None
        log.info(
            "gemini %s on %s answered in %.2fs (paced %.2fs)",
            operation,
            model,
            time.perf_counter() - started,
            waited,
        )
        return _usable_candidate(response)


def _config(**options: Any) -> types.GenerateContentConfig:
    # No tools are given, so the SDK's automatic function calling has nothing to do (and stops
    # logging it).
    return types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True), **options
    )


def _usable_candidate(response: types.GenerateContentResponse) -> types.Candidate:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise ContentBlocked(f"prompt blocked: {_reason(feedback.block_reason)}")
    if not response.candidates:
        raise ContentBlocked("no candidates in the answer")
    candidate = response.candidates[0]
    reason = _reason(candidate.finish_reason)
    if reason in BLOCKED_REASONS:
        raise ContentBlocked(f"answer blocked: finishReason {reason}")
    return candidate


def _parts(candidate: types.Candidate) -> list[types.Part]:
    return list(candidate.content.parts or []) if candidate.content else []


def _reason(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _as_wav(data: bytes, mime_type: str) -> bytes:
    """Gemini speaks raw 16-bit PCM (``audio/L16;codec=pcm;rate=24000``); AVFoundation wants a
    file."""
    kind = mime_type.split(";")[0].strip().lower()
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        return data
    if kind in ("audio/l16", "audio/pcm"):
        match = _PCM_RATE.search(mime_type)
        return pcm_to_wav(data, int(match.group(1)) if match else 24_000)
    raise BadOutput(f"unexpected audio type {mime_type}")


def retry_after_s(headers: Any, body: Any) -> int | None:
    """Seconds the server asks us to wait: the Retry-After header, else the error's RetryInfo."""
    header = headers.get("retry-after") if headers is not None else None
    if header:
        try:
            return max(0, math.ceil(float(header)))
        except ValueError:
            pass  # an HTTP date: rare from Google, and the RetryInfo below says the same
    error = body.get("error", body) if isinstance(body, dict) else None
    for detail in (error or {}).get("details") or []:
        delay = isinstance(detail, dict) and detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def _headers(exc: errors.APIError) -> Any:
    return getattr(getattr(exc, "response", None), "headers", None)


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reset_in_child_after_fork(provider: GeminiProvider) -> None:
    ref = weakref.ref(provider)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive._reset()

    os.register_at_fork(after_in_child=reset)
