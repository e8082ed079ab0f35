"""Speech: long text read in provider-sized chunks, a few at a time, encoded into one file per clip.

Every chunk of every clip of a request goes through one pool, all at once:
each chunk's memory reservation and the provider's pacing decide how many
really run (LIROO_PANEL_CONCURRENCY caps the pool when set). Every heavy step
reserves its memory from the governor before it allocates, sized by what the
step was measured to hold at its peak (bench/speech_peaks.py): each model answer
(by what recent chunks cost a character, ``SPEECH_COSTS``), each chunk's
encoding (what it adds to the file and LAME's buffers) and the file's hand-over
to storage. An answer's memory is taken when the answer arrives, not while the
model works on it (``providers.base.answer_room``): the model's seconds cost no
memory, so memory bounds how many answers are read at once, not how many calls
wait on the model. A chunk never waits at the governor for memory its own
request holds: while the request holds answers and memory is short, it waits
for them instead (``_OwnAnswers``), so a request short of memory reads fewer
answers at a time, down to one, rather than being refused. Chunks are fed to the encoder
(``liroo.audio``: MP3 by default, LIROO_AUDIO_FORMAT) in order as they arrive,
so a long narration is never held as one joined buffer.
"""

from __future__ import annotations

import logging
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from ..audio import (
    AUDIO_FORMATS,
    AudioEncoder,
    UnsupportedAudio,
    audio_extension,
    encoded_bytes_per_s,
    make_encoder,
)
from ..providers.base import BadOutput, SpeechResult, answer_room, take_answer_room
from ..providers.wav import read_pcm
from ..storage import IMMUTABLE_CACHE, media_key
from .context import Context, Finished
from .costs import RecentCosts
from .failures import failure_code, note_failure
from .images import panel_workers
from .results import TtsResult
from .speech_text import MAX_CHUNK_CHARS, split_for_speech

log = logging.getLogger("liroo.generation")

MB = 1024 * 1024
# While a chunk's answer arrives the SDK holds the HTTP body (base64), its text, the
# decoded bytes and the WAV made of them; read_pcm then copies the samples out. Measured
# (bench/speech_peaks.py, real SDK, a 1,474-character chunk = 3.37 MB of WAV): the call
# and read_pcm together peak at +18.1 MB of RSS, 5.35x the WAV (read_pcm alone: 1.0x,
# after the call's buffers are gone). The reservation is that peak, rounded up.
HOLD_FACTOR = 5.4
MIN_RESERVE_MB = 1.0  # a title's few words still hold buffers
# Chunks of one clip that may be made ahead of the one its encoder needs next. The
# encoder takes chunks in order, so a chunk made far ahead holds its samples until
# the ones before it arrive: with no bound, a burst of long narrations fills memory
# with such samples while each clip's next chunk waits for room (hold and wait).
# Three keeps a clip's calls overlapping (as the old fixed pool of three did) and
# its waiting samples to two chunks (~10 MB).
CHUNKS_AHEAD = 3
# Encoding a chunk (liroo.audio feeds LAME 256 KB at a time) peaks at 2.1-2.5 MB of RSS for a
# 3.37 MB chunk, 0.35 MB of it the output that stays (bench/speech_peaks.py; whole, 14.8 MB):
# the output is reserved by the format's bytes per second, LAME's working buffers and the
# slice being encoded by this.
ENCODE_SLACK_MB = 2.0
# finish() copies the output once (measured 1.00x the MP3) and an upload may buffer it again;
# LAME's flush adds a frame or two.
FINISH_SLACK_MB = 0.25
# What recent chunks cost per character read aloud (24 kHz speech is ~3.2 kB of PCM a character).
SPEECH_COSTS = RecentCosts()


@dataclass(frozen=True)
class SpeechJob:
    text: str
    voice: str  # "narrator" or "character"
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


class _ClipWriter:
    """One clip's chunks fed to its encoder in order, as they arrive, then stored as one file.

    A chunk that arrives before the ones ahead of it waits in ``pending``;
    whichever thread brings the next chunk in order feeds it and every waiting
    one behind it, so no thread blocks on another. Only the encoded output and
    the chunks not yet encoded are alive: the narration's PCM is never joined
    into one buffer. Encoding a chunk reserves what it adds to the output (the
    format's bytes per second), and storing reserves the file's hand-over copy.
    """

    def __init__(self, ctx: Context, total: int) -> None:
        self._ctx = ctx
        self.total = total
        self._lock = threading.Lock()
        # woken when the encoder moves on or the clip fails
        self._turn = threading.Condition(self._lock)
        self._pending: dict[int, tuple[bytes, tuple[int, int, int]]] = {}
        self._next = 0
        self._reserved = 0  # chunks of this clip that have their memory (they take it in order)
        self._feeding = False
        self.failed = False
        self._encoder: AudioEncoder | None = None
        self._shape: tuple[int, int, int] | None = None
        self._frames = 0

    def wait_turn(self, part: int) -> bool:
        """Wait until chunk ``part`` is within CHUNKS_AHEAD of the encoder (its call may start);
        False once the clip has failed. Raises DeadlineExceeded when the request's deadline
        passes first."""
        return self._wait(lambda: part < self._next + CHUNKS_AHEAD)

    def wait_memory_turn(self, part: int) -> bool:
        """Wait until the chunks before ``part`` have their memory (its answer may take its
        own); False once the clip has failed.

        In order, because a chunk made ahead holds its samples until the encoder reaches it:
        were a later chunk to take the room its clip's next chunk waits for, clips would hold
        samples none of them can encode (a 640 MB burst of narrations stalled on it).
        """
        return self._wait(lambda: part <= self._reserved)

    def _wait(self, ready: Callable[[], bool]) -> bool:
        with self._turn:
            while not self.failed and not ready():
                if not self._turn.wait(timeout=max(self._ctx.remaining_s(), 0.0) or 0.01):
                    self._ctx.check_deadline()
            return not self.failed

    def has_memory(self, part: int) -> None:
        """Chunk ``part`` has its reservation: the next chunk may ask for its own."""
        with self._turn:
            self._reserved = max(self._reserved, part + 1)
            self._turn.notify_all()

    def add(self, part: int, pcm: bytes, shape: tuple[int, int, int]) -> bool:
        """Hand over chunk ``part``; True for the call that fed the clip's last chunk.

        Raises what encoding raised (BadOutput, MemoryPressure): the clip has then failed.
        """
        with self._lock:
            if self.failed:
                return False
            self._pending[part] = (pcm, shape)
            if self._feeding:
                return False
            self._feeding = True
        del pcm
        while True:
            with self._lock:
                item = self._pending.pop(self._next, None)
                if item is None or self.failed:
                    self._feeding = False
                    if self.failed:
                        self._encoder = None  # the clip failed while this thread was encoding
                    return not self.failed and item is None and self._next == self.total
                self._next += 1
                self._turn.notify_all()
            try:
                self._feed(*item)
            except BaseException:
                with self._lock:
                    self.failed = True
                    self._feeding = False
                    self._encoder = None
                raise
            finally:
                item = None  # the chunk's samples are in the output now

    def _feed(self, pcm: bytes, shape: tuple[int, int, int]) -> None:
        settings = self._ctx.settings
        rate, channels, width = shape
        if self._encoder is None:
            try:
                self._encoder = make_encoder(
                    settings.audio_format, rate, channels, width, settings.audio_bitrate_kbps
                )
            except UnsupportedAudio as exc:
                raise BadOutput(str(exc)) from None
            self._shape = shape
        elif shape != self._shape:
            raise BadOutput(
                f"speech chunk {self._next} is {shape} (rate, channels, width), chunk 1 was "
                f"{self._shape}"
            )
        frames = len(pcm) // (channels * width)
        per_s = encoded_bytes_per_s(
            settings.audio_format, rate, channels, settings.audio_bitrate_kbps
        )
        # Under way: encoding turns the chunk's samples into a tenth of their size.
        with self._ctx.reserve(frames / rate * per_s / MB + ENCODE_SLACK_MB, under_way=True):
            self._encoder.feed(pcm)
        self._frames += frames

    def store(self) -> tuple[str, float]:
        """The encoded file stored; its URL and length in seconds. The writer is done."""
        encoder, self._encoder = self._encoder, None
        if encoder is None or not self._frames:
            raise BadOutput("no speech to store")
        fmt = self._ctx.settings.audio_format
        # finish() hands the output over as one bytes object (a second copy while the first is
        # dropped), and an upload may buffer it again.
        with self._ctx.reserve(2 * encoder.encoded_bytes / MB + FINISH_SLACK_MB, under_way=True):
            data = encoder.finish()
            del encoder
            url = self._ctx.storage.put(
                media_key("audio", audio_extension(fmt)),
                data,
                AUDIO_FORMATS[fmt][1],
                IMMUTABLE_CACHE,
                public_base=self._ctx.public_base,
            )
        return url, self._frames / self._shape[0]

    def fail(self) -> None:
        """The clip failed: drop its chunks; chunks that arrive later are dropped at once."""
        with self._lock:
            self.failed = True
            self._pending = {}
            self._turn.notify_all()
            if not self._feeding:  # else the encoding thread drops the encoder when it notices
                self._encoder = None


class _OwnAnswers:
    """The model answers one request holds (read, decoded, not yet handed to the encoder), so
    that its next answer never waits for memory the request itself holds.

    While memory is short, an answer whose request already holds others waits
    for one of them to be let go (their reservations are part of what keeps it
    out) rather than queueing at the governor, where it would be refused after
    LIROO_RESERVATION_WAIT_S although its own request held the room: the
    request goes on reading fewer answers at a time, down to one, and only an
    answer with none of its own held waits for other requests' memory. Encoding
    and the hand-over do not wait here: they finish work under way and go
    first at the governor.
    """

    # While it waits for its own answers, a chunk also looks again this often: memory other
    # requests free lets it go on before its own answers are let go.
    RECHECK_S = 0.25

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # The governor's "would this fit now?"; Unreserved (governor off) always has room.
        self._admits = getattr(ctx.reserver, "admits", lambda mb: True)
        self._ended = threading.Condition()
        self.under_way = 0

    def wait_for_room(self, mb: float) -> None:
        """Return once ``mb`` fits or this request holds no other answer; raises
        DeadlineExceeded."""
        with self._ended:
            while self.under_way and not self._admits(mb):
                self._ended.wait(min(self.RECHECK_S, max(self._ctx.remaining_s(), 0.01)))
                self._ctx.check_deadline()

    def started(self) -> None:
        with self._ended:
            self.under_way += 1

    def ended(self) -> None:
        with self._ended:
            self.under_way -= 1
            self._ended.notify_all()


class _ClipFailed(Exception):
    """Another chunk of the clip failed while this one waited: its call is given up."""


def _speak_chunk(
    ctx: Context, text: str, voice: str, own: _OwnAnswers, writer: _ClipWriter, part: int
) -> tuple[bytes, tuple[int, int, int], str]:
    """Chunk ``part`` of ``writer``'s clip read aloud: its PCM, (rate, channels, width) and the
    model.

    The reservation is made when the model's answer arrives (``answer_room``), after the
    clip's earlier chunks have theirs, and sized by what recent chunks cost a character (at
    least LIROO_SPEECH_RESERVE_MB a chunk). It ends once the samples are read out of the
    answer: the samples kept until they are encoded are allocated by then, so every reading
    counts them (holding their reservation too would count them twice and starve the chunks
    that others are waiting on).
    """
    ctx.check_deadline()
    floor_mb = max(MIN_RESERVE_MB, ctx.settings.speech_reserve_mb * len(text) / MAX_CHUNK_CHARS)
    mb = SPEECH_COSTS.reserve_mb(floor_mb, len(text))
    with ExitStack() as held:

        def take() -> None:
            if not writer.wait_memory_turn(part):
                raise _ClipFailed()
            own.wait_for_room(mb)
            held.enter_context(ctx.reserve(mb))
            writer.has_memory(part)
            own.started()
            held.callback(own.ended)

        with answer_room(take):
            result = ctx.provider.generate_speech(text, voice)
            take_answer_room()  # a provider that did not take it: now, before the answer is read
        return _read_aloud(result, len(text))


def _read_aloud(result: SpeechResult, chars: int) -> tuple[bytes, tuple[int, int, int], str]:
    # Only chunks long enough to measure: a title's silence and header would make every
    # later chunk reserve as if each character cost what a title's does.
    if chars >= MAX_CHUNK_CHARS // 4:
        SPEECH_COSTS.record_mb(HOLD_FACTOR * len(result.data) / MB, chars)
    try:
        pcm, shape = read_pcm(result.data)
    except (wave.Error, EOFError) as exc:
        raise BadOutput(f"speech is not a PCM WAV ({exc})") from None
    return pcm, shape, result.model


def _recording_step(done: int, total: int) -> str:
    return f"Recording narration {done} of {total}"


# Names the step of a chunk read aloud: (chunks recorded so far, chunks of the whole request).
ChunkStep = Callable[[int, int], str]


class _Narration:
    """The clips of one ``speak`` call while they are made: each chunk's turn, each clip's end.

    Progress advances once per clip (with ``finished(index, url)``, the clip as a
    partial result) and, with ``chunk_step``, once per chunk read aloud as well.
    """

    def __init__(
        self,
        ctx: Context,
        jobs: list[SpeechJob],
        step: Callable[[int, int], str],
        finished: Finished | None,
        chunk_step: ChunkStep | None,
    ) -> None:
        self.ctx, self.jobs, self.step = ctx, jobs, step
        self.finished, self.chunk_step = finished, chunk_step
        self.chunked = [split_for_speech(job.text) or [job.text] for job in jobs]
        self.own = _OwnAnswers(ctx)
        self.writers = [_ClipWriter(ctx, len(chunks)) for chunks in self.chunked]
        self.models: list[str | None] = [None] * len(jobs)
        self.clips: list[Clip | None] = [None] * len(jobs)
        self._lock = threading.Lock()
        self._clips_done = 0
        self._chunks_done = 0

    def tasks(self) -> list[tuple[int, int]]:
        """(clip, chunk) pairs: every clip's first chunks first, then their next ones.

        A thread is never given a chunk that waits on one no thread has taken, so a
        clip needs no more threads than the chunks it may have in flight
        (CHUNKS_AHEAD), not one per chunk (34 for 50,000 characters).
        """
        longest = max(len(chunks) for chunks in self.chunked)
        return [
            (i, p)
            for p in range(longest)
            for i, chunks in enumerate(self.chunked)
            if p < len(chunks)
        ]

    def workers(self) -> int:
        in_flight = sum(min(len(chunks), CHUNKS_AHEAD) for chunks in self.chunked)
        return panel_workers(self.ctx.settings.panel_concurrency, in_flight)

    def run(self, index: int, part: int) -> None:
        writer = self.writers[index]
        try:
            if not writer.wait_turn(part):  # another chunk of this clip failed: skip the rest
                return
            pcm, shape, model = _speak_chunk(
                self.ctx, self.chunked[index][part], self.jobs[index].voice, self.own, writer, part
            )
            self.models[index] = model
            self._recorded(index, part)
            complete = writer.add(part, pcm, shape)
            del pcm
            if complete:
                url, duration = writer.store()
                self._finish(index, Clip(url=url, model=self.models[index], duration_s=duration))
        except _ClipFailed:
            return  # the clip's failure is already told
        except Exception as exc:  # one chunk's failure, whatever it is, fails its clip only
            self._fail(index, exc)

    def _recorded(self, index: int, part: int) -> None:
        """A chunk read aloud: before its clip can end, so its step comes before the clip's."""
        if self.chunk_step is None:
            return
        total = sum(len(chunks) for chunks in self.chunked)
        with self._lock:  # held while it advances, so that the parts are counted in order
            self._chunks_done += 1
            self.ctx.progress.advance(
                self.chunk_step(self._chunks_done, total),
                f"{self.jobs[index].label}: part {part + 1}",
            )

    def _finish(self, index: int, clip: Clip) -> None:
        with self._lock:
            self.clips[index] = clip
            self._clips_done += 1
            number = self._clips_done
        shown = self.finished(index, clip.url).shown() if self.finished and clip.url else None
        self.ctx.progress.advance(
            self.step(number, len(self.jobs)),
            f"{self.jobs[index].label}: {'ready' if clip.url else clip.error_code}",
            finished=shown,
        )

    def _fail(self, index: int, exc: Exception) -> None:
        note_failure(self.jobs[index].label, self.ctx.request_id, exc)
        with self._lock:
            first_failure = self.clips[index] is None
            if first_failure:
                self.clips[index] = Clip(error=exc)
        self.writers[index].fail()
        if first_failure:
            self._finish(index, self.clips[index])


def speak(
    ctx: Context,
    jobs: list[SpeechJob],
    step: Callable[[int, int], str] = _recording_step,
    finished: Finished | None = None,
    chunk_step: ChunkStep | None = None,
) -> list[Clip]:
    """Every job read aloud and stored as one file (LIROO_AUDIO_FORMAT); one failure does not stop
    the others.

    Chunks of all jobs share one pool; a clip's chunks are encoded in order as
    they arrive, the clip is stored by the thread that encodes its last chunk,
    and progress advances once per clip (``step``; with ``finished(index, url)``,
    the clip as a partial result) and, with ``chunk_step``, once per chunk.
    """
    if not jobs:
        return []
    narration = _Narration(ctx, jobs, step, finished, chunk_step)
    with ThreadPoolExecutor(narration.workers(), thread_name_prefix="liroo-speech") as pool:
        list(pool.map(lambda task: narration.run(*task), narration.tasks()))
    ctx.stop_if_cancelled()
    return [clip or Clip(error=BadOutput("no speech")) for clip in narration.clips]


def generate_tts(ctx: Context, text: str, voice: str) -> TtsResult:
    """/generate_tts: ``text`` read by ``voice``, as one stored file (MP3 by default)."""
    chunks = len(split_for_speech(text))
    # a step for each part read aloud, then the file stored, then the answer
    ctx.progress.plan(
        chunks + 2, "Reading aloud", f"{len(text)} characters in {chunks} part{'s' * (chunks != 1)}"
    )
    clip = speak(
        ctx,
        [SpeechJob(text, voice, "speech")],
        step=lambda done, total: "Speech recorded",
        chunk_step=lambda done, total: f"Recorded part {done} of {total}",
    )[0]
    if clip.error is not None:
        raise clip.error
    ctx.progress.advance("Speech ready", f"{clip.duration_s:.1f} seconds")
    return TtsResult(
        audio_url=clip.url,
        voice=voice,
        model=clip.model or ctx.provider.tts_model,
        text_length=len(text),
        duration_s=round(clip.duration_s, 3),
        content_type=AUDIO_FORMATS[ctx.settings.audio_format][1],
        provider=ctx.provider.name,
    )
