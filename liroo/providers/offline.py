"""The offline provider: deterministic, network-free, and honest about it.

The default when no Gemini key is set, so a new user sees a real result: text
built from the input itself (``offline_text`` reads it, ``offline_write``
writes titles, captions, dialogue and quizzes, ``offline_schema`` fills the
answer's schema with them), pictures of the text's scene drawn with Pillow in
the asked style (``offline_art`` reads the scene, ``offline_paint`` draws), and
playable speech (espeak-ng when installed, otherwise a clearly synthetic tone
sequence whose length follows the text). Every result says ``provider="offline"``.
"""

from __future__ import annotations

import array
import logging
import math
import random
import shutil
import subprocess
import sys
import time
import wave
from functools import lru_cache

from pydantic import ValidationError

from .base import (
    VOICE_ROLES,
    BadOutput,
    ImageResult,
    SpeechResult,
    T,
    counted_call,
    take_answer_room,
)
from .offline_art import illustrate
from .offline_schema import fill_schema
from .schema import check_schema
from .wav import pcm_to_wav, read_pcm

log = logging.getLogger("liroo.providers.offline")

SAMPLE_RATE = 24_000  # what Gemini's TTS sends, so both providers' audio looks alike
MS_PER_CHAR = 65  # about the pace of read-aloud speech
MIN_SPEECH_S = 0.5
MAX_SPEECH_S = 300.0  # 14 MB of 16-bit mono: longer texts are cut
ESPEAK_VOICES = {"narrator": "en-us", "character": "en-us+f3"}
ESPEAK_TIMEOUT_S = 60
_PITCH_HZ = {"narrator": 140.0, "character": 230.0}


class OfflineProvider:
    name = "offline"
    text_model = "offline-text"
    image_model = "offline-pillow"

    def __init__(self, image_delay_s: float = 0.0) -> None:
        self.image_delay_s = image_delay_s
        self.espeak = shutil.which("espeak-ng")
        self.tts_model = "offline-espeak-ng" if self.espeak else "offline-tones"

    def generate_structured(self, prompt: str, schema: type[T], *, system: str | None = None) -> T:
        json_schema = check_schema(schema)
        with counted_call("text"):
            log.debug("offline text for %s: %r", schema.__name__, prompt)
            try:
                return schema.model_validate(fill_schema(json_schema, prompt))
            except ValidationError as exc:  # a custom validator the filler cannot see
                raise BadOutput(
                    f"offline text does not satisfy {schema.__name__}: {exc.error_count()} errors"
                ) from None

    def generate_image(self, prompt: str, aspect_ratio: str = "1:1") -> ImageResult:
        with counted_call("image"):
            log.debug("offline image %s: %r", aspect_ratio, prompt)
            if self.image_delay_s > 0:
                # LIROO_OFFLINE_IMAGE_DELAY_S: a model's pace, on purpose
                time.sleep(self.image_delay_s)
            return ImageResult(
                illustrate(prompt, aspect_ratio), "image/png", self.name, self.image_model
            )

    def generate_speech(self, text: str, voice: str) -> SpeechResult:
        role = voice if voice in VOICE_ROLES else "narrator"
        with counted_call("speech"):
            log.debug("offline speech (%s): %r", role, text)
            take_answer_room()  # made here and now: the memory is taken before it is made
            data = _espeak(self.espeak, text, role) if self.espeak else None
            if data is None:
                data = synthetic_speech(text, role)
            return SpeechResult(data, "audio/wav", self.name, self.tts_model)


def _espeak(binary: str, text: str, role: str) -> bytes | None:
    """espeak-ng's speech for ``text`` as a WAV, or None (logged) if it fails: the tones are the
    fallback."""
    try:
        done = subprocess.run(
            [binary, "--stdin", "--stdout", "-v", ESPEAK_VOICES[role]],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=True,
        )
        # Writing to a pipe, espeak-ng cannot go back to fill in the sizes and leaves ~2 GB
        # placeholders in the header; the samples are read and wrapped again with true sizes.
        pcm, (rate, channels, width) = read_pcm(done.stdout)
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError) as exc:
        log.warning("espeak-ng failed (%s); using synthetic speech", type(exc).__name__)
        return None
    return pcm_to_wav(pcm, rate, channels=channels, sample_width=width) if pcm else None


def synthetic_speech(text: str, role: str = "narrator") -> bytes:
    """A WAV of tones and hiss shaped by the text's characters, ~65 ms each: plainly not a voice."""
    max_chars = int(MAX_SPEECH_S * 1000 / MS_PER_CHAR)
    segments = [_segment(ch, role) for ch in text[:max_chars]]
    pcm = b"".join(segments)
    minimum = int(MIN_SPEECH_S * SAMPLE_RATE) * 2
    if len(pcm) < minimum:
        pcm += bytes(minimum - len(pcm))
    return pcm_to_wav(pcm, SAMPLE_RATE)


@lru_cache(maxsize=512)
def _segment(ch: str, role: str) -> bytes:
    """65 ms of 16-bit PCM for one character: vowels hum, consonants hiss, spaces and stops are
    quiet."""
    n = SAMPLE_RATE * MS_PER_CHAR // 1000
    samples = array.array("h", bytes(n * 2))
    lower = ch.lower()
    if not ch.strip() or not ch.isalnum():
        return samples.tobytes()  # silence between words and at punctuation
    pitch = _PITCH_HZ[role] * (1.0 + (ord(lower) % 7) / 14.0)
    noise = random.Random(ord(ch))
    vowel = lower in "aeiouy"
    for i in range(n):
        t = i / SAMPLE_RATE
        envelope = math.sin(math.pi * i / n) ** 2
        if vowel:
            value = 0.6 * math.sin(math.tau * pitch * t) + 0.25 * math.sin(math.tau * pitch * 2 * t)
        else:
            value = 0.35 * noise.uniform(-1, 1) + 0.2 * math.sin(math.tau * pitch * t)
        samples[i] = int(9000 * envelope * value)
    if sys.byteorder == "big":
        samples.byteswap()  # WAV samples are little-endian
    return samples.tobytes()
