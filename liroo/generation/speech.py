"""Speech: long text read in provider-sized chunks, a few at a time, joined into one WAV per clip.

Every chunk of every clip of a request goes through one pool, all at once:
each chunk's memory reservation and the provider's pacing decide how many
really run (LIROO_PANEL_CONCURRENCY caps the pool when set). Each model call reserves
memory from the governor for the audio it will hold (base64 in the answer,
then PCM); the join reserves what the joined file needs.
"""
from __future__ import annotations

import logging
import re
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .results import TtsResult
from ..providers.base import BadOutput
from ..providers.wav import pcm_to_wav, read_pcm
from ..storage import IMMUTABLE_CACHE, media_key
from .context import Context, Finished
from .failures import failure_code, note_failure
from .images import panel_workers

log = logging.getLogger("liroo.generation")

# Characters per model call: about a minute and a half of speech. Well inside what a
# TTS model reads in one go, and a chunk that fails is cheap to redo; chunks of one
# clip are made concurrently, so a long text also reads faster.
MAX_CHUNK_CHARS = 1500
# Memory to reserve while one chunk is made: 24 kHz 16-bit speech is ~48 kB/s and
# ~15 characters a second, so ~3.2 kB of PCM a character; the base64 answer, its
# decoded bytes and the WAV copy hold it about three times at once.
RESERVE_BASE_MB = 4.0
RESERVE_MB_PER_CHAR = 0.01

# The end of a sentence (or clause) and its closing quotes or brackets, before a space; or a blank line.
_PAUSE = re.compile(r"[.!?…;:][\"'”’)\]]*(?=\s)|\n\s*\n")


@dataclass(frozen=True)
class SpeechJob:
    text: str
    voice: str              # "narrator" or "character"
    label: str = "speech"


@dataclass(frozen=True)
class Clip:
    url: str | None = None
    model: str | None = None
    duration_s: float = 0.0
    error: Exception | None = None

    @property
    def error_code(self) -> str | None:
        return failure_code(self.error, "speech_failed")


def split_for_speech(text: str, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """``text`` in chunks of at most ``limit`` characters, cut at sentence ends where possible.

    A regular expression rather than a sentence tokenizer (nltk, spaCy): the cut
    only has to fall at a natural pause, and a wrong guess costs a slightly odd
    pause, not a wrong answer.
    """
    chunks: list[str] = []
    current = ""
    for sentence in _sentences(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        for piece in _fit(sentence, limit):
            if current and len(current) + 1 + len(piece) > limit:
                chunks.append(current)
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _sentences(text: str):
    start = 0
    for pause in _PAUSE.finditer(text):
        yield text[start:pause.end()]
        start = pause.end()
    yield text[start:]


def _fit(sentence: str, limit: int) -> list[str]:
    """A sentence longer than ``limit`` cut at spaces (a single longer word is cut anywhere)."""
    pieces = []
    while len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces


def join_wavs(parts: list[bytes]) -> tuple[bytes, float]:
    """One WAV of the parts' frames in order, and its length in seconds; BadOutput if formats differ."""
    frames: list[bytes] = []
    shape = None
    for number, data in enumerate(parts, 1):
        try:
            pcm, this = read_pcm(data)
        except (wave.Error, EOFError) as exc:
            raise BadOutput(f"speech chunk {number} is not a PCM WAV ({exc})") from None
        frames.append(pcm)
        if shape is None:
            shape = this
        elif this != shape:
            raise BadOutput(f"speech chunk {number} is {this} (rate, channels, width), chunk 1 was {shape}")
    if shape is None:
        raise BadOutput("no speech to join")
    rate, channels, width = shape
    pcm = b"".join(frames)
    return pcm_to_wav(pcm, rate, channels=channels, sample_width=width), len(pcm) / (channels * width) / rate


def _wait_s(ctx: Context) -> float:
    return max(min(ctx.settings.reservation_wait_s, ctx.remaining_s()), 0.0)


def _speak_chunk(ctx: Context, text: str, voice: str):
    ctx.check_deadline()
    with ctx.reserver.reserve(RESERVE_BASE_MB + RESERVE_MB_PER_CHAR * len(text), wait_s=_wait_s(ctx)):
        return ctx.provider.generate_speech(text, voice)


def _store(ctx: Context, parts: list[bytes]) -> tuple[str, float]:
    size_mb = sum(len(p) for p in parts) / (1024 * 1024)
    with ctx.reserver.reserve(RESERVE_BASE_MB + 2 * size_mb, wait_s=_wait_s(ctx)):   # the frames, then the file
        data, duration = join_wavs(parts)   # also for one part: checks it is a PCM WAV and measures it
        url = ctx.storage.put(media_key("audio", "wav"), data, "audio/wav", IMMUTABLE_CACHE,
                              public_base=ctx.public_base)
    return url, duration


def _recording_step(done: int, total: int) -> str:
    return f"Recording narration {done} of {total}"


def speak(ctx: Context, jobs: list[SpeechJob], step: Callable[[int, int], str] = _recording_step,
          finished: Finished | None = None) -> list[Clip]:
    """Every job read aloud and stored as one WAV; one failure does not stop the others.

    Chunks of all jobs share one pool; a clip is joined and stored by the thread
    that finishes its last chunk, and progress advances once per clip
    (with ``finished(index, url)``, the clip as a partial result).
    """
    if not jobs:
        return []
    chunked = [split_for_speech(job.text) or [job.text] for job in jobs]
    parts: list[list[bytes | None]] = [[None] * len(chunks) for chunks in chunked]
    remaining = [len(chunks) for chunks in chunked]
    failed = [False] * len(jobs)
    models: list[str | None] = [None] * len(jobs)
    clips: list[Clip | None] = [None] * len(jobs)
    lock = threading.Lock()
    done = 0

    def finish(index: int, clip: Clip) -> None:
        nonlocal done
        with lock:
            clips[index] = clip
            done += 1
            number = done
        ctx.progress.advance(step(number, len(jobs)),
                             f"{jobs[index].label}: {'ready' if clip.url else clip.error_code}",
                             finished=finished(index, clip.url) if finished and clip.url else None)

    def run(index: int, part: int) -> None:
        with lock:
            if failed[index]:                  # another chunk of this clip failed: skip the rest
                return
        try:
            result = _speak_chunk(ctx, chunked[index][part], jobs[index].voice)
        except Exception as exc:  # one chunk's failure, whatever it is, fails its clip only
            note_failure(jobs[index].label, ctx.request_id, exc)
            with lock:
                first_failure, failed[index] = not failed[index], True
            if first_failure:
                finish(index, Clip(error=exc))
            return
        with lock:
            if failed[index]:
                return
            parts[index][part] = result.data
            models[index] = result.model
            remaining[index] -= 1
            complete = remaining[index] == 0
        if complete:
            try:
                url, duration = _store(ctx, parts[index])
                clip = Clip(url=url, model=models[index], duration_s=duration)
            except Exception as exc:
                note_failure(jobs[index].label, ctx.request_id, exc)
                clip = Clip(error=exc)
            parts[index] = []                   # the chunks' bytes are no longer needed
            finish(index, clip)

    tasks = [(i, p) for i, chunks in enumerate(chunked) for p in range(len(chunks))]
    workers = panel_workers(ctx.settings.panel_concurrency, len(tasks))
    with ThreadPoolExecutor(workers, thread_name_prefix="liroo-speech") as pool:
        list(pool.map(lambda task: run(*task), tasks))
    return [clip or Clip(error=BadOutput("no speech")) for clip in clips]


def generate_tts(ctx: Context, text: str, voice: str) -> TtsResult:
    """/generate_tts: ``text`` read by ``voice``, as one stored WAV."""
    chunks = len(split_for_speech(text))
    ctx.progress.plan(2, "Reading aloud", f"{len(text)} characters in {chunks} part{'s' * (chunks != 1)}")
    clip = speak(ctx, [SpeechJob(text, voice, "speech")], step=lambda done, total: "Speech recorded")[0]
    if clip.error is not None:
        raise clip.error
    ctx.progress.advance("Speech ready", f"{clip.duration_s:.1f} seconds")
    return TtsResult(audio_url=clip.url, voice=voice, model=clip.model or ctx.provider.tts_model,
                     text_length=len(text), duration_s=round(clip.duration_s, 3), provider=ctx.provider.name)
