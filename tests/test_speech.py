"""Speech: encoded as MP3 (or WAV) chunk by chunk, every heavy step reserved, long narrations
admitted.

The encoders and ``speak`` run in-process with the real offline provider (espeak-ng when
installed, else its tones), the real governor and local storage; the routes run on a real
gunicorn. Produced audio is read by a real decoder (ffprobe) where it is installed.
"""

import io
import math
import re
import threading
import time
import wave

import pytest
import requests

from liroo import create_app
from liroo.audio import Mp3Encoder, WavEncoder, encoded_bytes_per_s, make_encoder
from liroo.generation.context import Context, Progress
from liroo.generation.speech import (
    CHUNKS_AHEAD,
    ENCODE_SLACK_MB,
    HOLD_FACTOR,
    MB,
    SPEECH_COSTS,
    SpeechJob,
    generate_tts,
    speak,
    split_for_speech,
)
from liroo.governor import Governor, GovernorConfig
from liroo.providers.base import BadOutput, SpeechResult
from liroo.providers.offline import MS_PER_CHAR, OfflineProvider
from liroo.providers.wav import pcm_to_wav
from liroo.settings import Settings
from liroo.storage.local import LocalStorage
from tests import contract
from tests.audio_probe import needs_ffprobe, probe
from tests.helpers.http import new_request_id, post
from tests.servers import wait_for

SENTENCE = "The river carried the small boat past the old mill and under the stone bridge. "
ESPEAK_WPM = 175  # espeak-ng's default rate


def narration(chars: int, tag: str = "") -> str:
    text = (f"Reading {tag}. " if tag else "") + SENTENCE * (chars // len(SENTENCE) + 1)
    return text[:chars].rsplit(" ", 1)[0] + "."


def expected_seconds(text: str, model: str) -> tuple[float, float]:
    """How long the offline provider's reading of ``text`` should last: (at least, at most)."""
    if model == "offline-tones":
        seconds = len(text) * MS_PER_CHAR / 1000
        return 0.95 * seconds, 1.05 * seconds + 1
    seconds = len(text.split()) / ESPEAK_WPM * 60
    return 0.6 * seconds, 1.4 * seconds


def tone(seconds: float, rate: int = 24_000) -> bytes:
    return (b"\x00\x10\x00\xf0" * int(seconds * rate / 2))[: int(seconds * rate) * 2]


# --- the encoders
# ---------------------------------------------------------------------------------------------


@needs_ffprobe
def test_mp3_fed_in_pieces_is_one_stream_of_the_whole_length():
    encoder = make_encoder("mp3", 24_000, 1, 2, 48)
    assert isinstance(encoder, Mp3Encoder) and encoder.content_type == "audio/mpeg"
    for _ in range(3):
        encoder.feed(tone(1.5))
    data = encoder.finish()
    reading = probe(data)
    assert (reading["format"], reading["codec"], reading["sample_rate"], reading["channels"]) == (
        "mp3",
        "mp3",
        24_000,
        1,
    )
    assert reading["duration_s"] == pytest.approx(4.5, abs=0.1)
    assert len(data) == pytest.approx(4.5 * 48_000 / 8, rel=0.05)  # constant 48 kbit/s


def test_wav_fed_in_pieces_holds_every_frame_in_order():
    encoder = make_encoder("wav", 24_000, 1, 2, 48)
    assert isinstance(encoder, WavEncoder) and encoder.content_type == "audio/wav"
    first, second = b"\x01\x00" * 24_000, b"\x02\x00" * 12_000
    encoder.feed(first)
    encoder.feed(second)
    with wave.open(io.BytesIO(encoder.finish())) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.readframes(wav.getnframes()) == first + second


def rss_peak_mb(step) -> float:
    """The most RSS ``step()`` added at any moment: the kernel's high-water mark (VmHWM), reset
    first through /proc/self/clear_refs."""

    def status_kb(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    step()
    return (status_kb("VmHWM") - before) / 1024


def test_encoding_a_chunk_stays_within_what_its_step_reserves():
    """A 1,500-character chunk's samples (~75 s, 3.6 MB) fed to LAME: fed whole, lameenc took
    +14 MB for a step that reserved 0.6 MB; in slices it stays within the reservation."""
    pcm = tone(75)
    encoder = Mp3Encoder(24_000, 1, 40)
    encoder.feed(tone(1))  # LAME's own tables, made once per encoder
    # The first long feed: lameenc keeps the buffers it grew for the encoder's life.
    peak = rss_peak_mb(lambda: encoder.feed(pcm))
    reserved = 75 * encoded_bytes_per_s("mp3", 24_000, 1, 40) / MB + ENCODE_SLACK_MB
    assert peak <= reserved, (peak, reserved)


# --- speak(): in order, reserved, released
# ------------------------------------------------------------------------


class UnevenSpeech:
    """A provider whose chunks come back out of order and, on request, in a different format.

    A stand-in for a model whose answers arrive in any order and may be malformed; the real offline
    provider cannot be made to do either.
    """

    name, tts_model = "uneven", "uneven-tts"

    def __init__(self, odd_rate_for: str | None = None, fail_for: str | None = None) -> None:
        self.odd_rate_for = odd_rate_for
        self.fail_for = fail_for

    def generate_speech(self, text, voice):
        number = int(re.search(r"Chunk (\d+)", text).group(1))
        time.sleep(0.02 * (5 - number % 5))  # later chunks finish first
        if self.fail_for and self.fail_for in text:
            raise BadOutput("no audio in the answer")
        rate = 16_000 if self.odd_rate_for and self.odd_rate_for in text else 24_000
        pcm = number.to_bytes(2, "little") * rate  # one second of the chunk's own number
        return SpeechResult(pcm_to_wav(pcm, rate), "audio/wav", self.name, self.tts_model)


def make_ctx(tmp_path, provider, governor, **settings):
    return Context(
        settings=Settings.from_env(
            {}, **{"base_url": "http://media.test", "panel_concurrency": 4, **settings}
        ),
        provider=provider,
        storage=LocalStorage(str(tmp_path), "http://media.test"),
        reserver=governor,
        progress=Progress(None, "speech-test"),
        request_id="speech-test",
        public_base=None,
        deadline=time.monotonic() + 60,
    )


def stored(tmp_path, url):
    return (tmp_path / url.split("/media/", 1)[1]).read_bytes()


def chunky_text(chunks: int) -> str:
    # Each chunk is cut at a sentence end and fills most of MAX_CHUNK_CHARS.
    return " ".join(f"Chunk {i} " + "word " * 280 + "end." for i in range(chunks))


def test_chunks_arriving_out_of_order_are_encoded_in_order_and_every_reservation_released(tmp_path):
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, UnevenSpeech(), governor, audio_format="wav")
    (clip,) = speak(ctx, [SpeechJob(chunky_text(6), "narrator")])
    assert (
        clip.error is None and clip.url.endswith(".wav") and clip.duration_s == pytest.approx(6.0)
    )
    with wave.open(io.BytesIO(stored(tmp_path, clip.url))) as wav:
        frames = wav.readframes(wav.getnframes())
    seconds = [frames[i * 48_000 : (i + 1) * 48_000] for i in range(6)]
    assert seconds == [i.to_bytes(2, "little") * 24_000 for i in range(6)]
    assert governor.outstanding_mb() == 0


class RecordedSteps:
    """A job store stand-in that keeps every step written: (step, step_number, total_steps)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, int]] = []

    def progress(self, request_id, step, step_number, total_steps, details, partial=None):
        self.steps.append((step, step_number, total_steps))

    def cancel_requested(self, request_id):
        return False


def test_tts_progress_counts_each_recorded_part_in_order(tmp_path):
    """Parts arrive out of order (the later ones first); progress counts them as they come, each
    before the file's own step."""
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, UnevenSpeech(), governor, audio_format="wav")
    store = RecordedSteps()
    ctx.progress = Progress(store, "speech-test")
    text = chunky_text(4)
    assert len(split_for_speech(text)) == 4
    result = generate_tts(ctx, text, "narrator")
    assert result.duration_s == pytest.approx(4.0)
    assert store.steps == [
        ("Reading aloud", 0, 6),
        *[(f"Recorded part {k} of 4", k, 6) for k in range(1, 5)],
        ("Speech recorded", 5, 6),
        ("Speech ready", 6, 6),
    ]
    assert governor.outstanding_mb() == 0


class LookAheadSpeech(UnevenSpeech):
    """Records, as each chunk's call starts, how far it is ahead of the first one not returned."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.returned: set[int] = set()
        self.ahead: list[int] = []
        self.threads: set[str] = set()  # the threads that made chunks

    def generate_speech(self, text, voice):
        number = int(re.search(r"Chunk (\d+)", text).group(1))
        with self._lock:
            first_missing = next(i for i in range(10_000) if i not in self.returned)
            self.ahead.append(number - first_missing)
            self.threads.add(threading.current_thread().name)
        try:
            return super().generate_speech(text, voice)
        finally:
            with self._lock:
                self.returned.add(number)


def test_a_clips_chunks_are_made_at_most_a_few_ahead_of_its_encoder(tmp_path):
    """With no cap on concurrency, a chunk starts only within CHUNKS_AHEAD of the one the
    encoder needs, so a burst of long narrations cannot fill memory with samples waiting for
    earlier ones."""
    provider = LookAheadSpeech()
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, provider, governor, audio_format="wav", panel_concurrency=0)
    (clip,) = speak(ctx, [SpeechJob(chunky_text(12), "narrator")])
    assert clip.error is None and clip.duration_s == pytest.approx(12.0)
    assert len(provider.ahead) == 12
    assert max(provider.ahead) < CHUNKS_AHEAD
    assert len(provider.threads) <= CHUNKS_AHEAD  # not a thread per chunk (12)


def test_a_chunk_in_another_format_fails_its_clip_only_and_releases_its_reservations(tmp_path):
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, UnevenSpeech(odd_rate_for="Chunk 3 "), governor)
    bad, good = speak(
        ctx,
        [
            SpeechJob(chunky_text(5), "narrator", "bad"),
            SpeechJob("Chunk 7 is fine.", "narrator", "good"),
        ],
    )
    assert bad.url is None and bad.error_code == "provider_bad_output"
    assert good.error is None and good.url.endswith(".mp3")
    assert governor.outstanding_mb() == 0


@pytest.mark.parametrize(
    "failing",
    ["Chunk 0 ", "Chunk 2 ", "Chunk 4 ", "Chunk 7 "],
    ids=["chunk-0", "chunk-2", "chunk-4", "chunk-7-last"],
)
def test_a_chunk_failing_while_others_are_encoded_leaves_no_reservation_behind(tmp_path, failing):
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, UnevenSpeech(fail_for=failing), governor)
    (clip,) = speak(ctx, [SpeechJob(chunky_text(8), "narrator")])
    assert clip.error_code == "provider_bad_output" and clip.url is None
    assert governor.outstanding_mb() == 0, failing
    assert not list(tmp_path.rglob("*.mp3"))  # nothing stored for a failed clip


def test_speech_waits_for_memory_and_fails_with_memory_pressure_when_none_comes(tmp_path):
    # A hard limit just above what the process uses: no chunk's reservation fits.
    governor = Governor(GovernorConfig(limit_mb=1))
    ctx = make_ctx(tmp_path, OfflineProvider(), governor, reservation_wait_s=0.2)
    (clip,) = speak(ctx, [SpeechJob(narration(3000), "narrator")])
    assert clip.error_code == "memory_pressure"
    assert governor.refused_reservations >= 1 and governor.outstanding_mb() == 0


def watch_reservations(governor: Governor) -> list[tuple[float, str | None, bool]]:
    """(mb, group, under_way) of every reservation the governor is asked for, as they come."""
    reserved = []
    real_reserve = governor.reserve

    def watching(mb, wait_s=0.0, group=None, under_way=False):
        reserved.append((mb, group, under_way))
        return real_reserve(mb, wait_s, group, under_way)

    governor.reserve = watching
    return reserved


def test_a_clips_chunks_take_their_memory_in_order(tmp_path):
    """A chunk asks for memory only once the chunks before it have theirs: a later chunk taking
    the room its clip's next chunk waits for would hold samples the encoder cannot take yet
    (narrations stalled on each other that way in a 640 MB burst)."""
    governor = Governor(GovernorConfig(limit_mb=1))  # no chunk's reservation fits
    ctx = make_ctx(tmp_path, UnevenSpeech(), governor, reservation_wait_s=0.3, panel_concurrency=0)
    reserved = watch_reservations(governor)
    (clip,) = speak(ctx, [SpeechJob(chunky_text(3), "narrator")])
    assert clip.error_code == "memory_pressure"
    assert len(reserved) == 1  # chunk 0 asked and was refused; chunks 1 and 2 never asked


class SlowSpeech(UnevenSpeech):
    """Chunks that take the model half a second each, as Gemini's take seconds: longer than the
    test lets a chunk wait for memory."""

    def generate_speech(self, text, voice):
        time.sleep(0.5)  # the model's latency, not synchronisation
        return super().generate_speech(text, voice)


def test_a_request_short_of_memory_reads_its_chunks_one_at_a_time_rather_than_wait_on_itself(
    tmp_path,
):
    """Room for one chunk's call: the next chunk does not queue at the governor for the memory
    its own request's call holds (refused after the wait: memory_pressure); it waits for that
    call to end and the narration is read one chunk at a time."""
    used_mb = Governor(GovernorConfig(limit_mb=100_000)).used_mb()
    # Each chunk reserves ~190 MB (the floor), the limit leaves room for one, not two.
    governor = Governor(GovernorConfig(limit_mb=used_mb + 300))
    ctx = make_ctx(
        tmp_path,
        SlowSpeech(),
        governor,
        speech_reserve_mb=200,
        reservation_wait_s=0.2,
        panel_concurrency=0,
    )
    (clip,) = speak(ctx, [SpeechJob(chunky_text(3), "narrator")])
    assert clip.error is None and clip.duration_s == pytest.approx(3.0)
    assert governor.refused_reservations == 0 and governor.outstanding_mb() == 0


def test_chunk_reservations_learn_from_recent_chunks(tmp_path):
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, OfflineProvider(), governor, speech_reserve_mb=0.001)
    reserved = watch_reservations(governor)
    SPEECH_COSTS._per_unit.clear()
    speak(ctx, [SpeechJob(narration(1400), "narrator")])
    speak(ctx, [SpeechJob(narration(1400), "narrator")])
    assert len(reserved) == 6  # per one-chunk narration: the model call, the encoding, the store
    first, later = reserved[0][0], reserved[3][0]
    # The first chunk had only the (tiny) floor; the next one reserves what the first really held.
    assert first == pytest.approx(1.0)  # MIN_RESERVE_MB
    assert later > HOLD_FACTOR * 1400 * 0.0015 / 1.024**2  # at least ~1.5 kB of PCM a character
    # A title's few words (mostly silence and header per character) teach nothing.
    speak(ctx, [SpeechJob("Roots", "narrator")])
    speak(ctx, [SpeechJob(narration(1400), "narrator")])
    assert reserved[-3][0] == pytest.approx(later, rel=0.05)


def test_every_speech_reservation_takes_turns_as_its_request(tmp_path):
    # The fairness group is the request: one lecture's chunks share turns with other
    # requests, not with every speech chunk of the worker (images do the same).
    governor = Governor(GovernorConfig(limit_mb=100_000))
    ctx = make_ctx(tmp_path, OfflineProvider(), governor)
    reserved = watch_reservations(governor)
    (clip,) = speak(ctx, [SpeechJob(narration(3000), "narrator")])
    assert clip.error_code is None and len(reserved) >= 3
    assert {group for _, group, _ in reserved} == {ctx.request_id}
    # Model calls take turns; encoding and the hand-over finish work under way and go first.
    calls = [under_way for _, _, under_way in reserved]
    assert calls[0] is False and calls[-1] is True and calls.count(False) == 2  # two chunks


def test_narration_stored_in_cloud_storage_is_served_as_mp3(tmp_path, monkeypatch):
    """speak() with the real google-cloud-storage client against gcp-storage-emulator on
    loopback."""
    from gcp_storage_emulator.server import create_server

    from liroo.storage.gcs import GcsStorage
    from tests.servers import free_port

    port = free_port()
    emulator = create_server("127.0.0.1", port, in_memory=True, default_bucket="liroo-speech")
    emulator.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        governor = Governor(GovernorConfig(limit_mb=100_000))
        ctx = make_ctx(tmp_path, OfflineProvider(), governor)
        ctx.storage = GcsStorage("liroo-speech", url_mode="public")
        (clip,) = speak(ctx, [SpeechJob(narration(2_000), "narrator")])
        assert clip.error is None and clip.url.endswith(".mp3")
        response = requests.get(clip.url, timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "audio/mpeg"
        # an MPEG audio frame
        assert response.content[0] == 0xFF and response.content[1] & 0xE0 == 0xE0
    finally:
        emulator.stop()


def test_the_speech_routes_declare_their_cost_at_the_door(tmp_path):
    settings = Settings.from_env(
        {}, media_dir=str(tmp_path), image_reserve_mb=40, speech_reserve_mb=30
    )
    app = create_app(settings)
    costs = app.wsgi_app.door.route_costs_mb  # the door, inside the replay layer
    assert costs["/generate_tts"] == 30
    assert costs["/generate_lecture"] == 70  # it draws and narrates at the same time
    assert costs["/generate_story"] == costs["/generate_comic"] == 40


# --- the routes on gunicorn
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(offline_server):
    return offline_server


def fetch(url):
    response = requests.get(url, timeout=60)
    assert response.status_code == 200, url
    return response


@needs_ffprobe
def test_a_50000_character_narration_is_one_mp3_of_the_texts_length(server):
    text = narration(50_000)
    assert len(text) > 49_900
    started = time.monotonic()
    request_id = new_request_id("s")
    # On a busy machine (the suite runs in parallel) the narration may still be at work at its
    # 55 s deadline: it answers 503 still_working and goes on, and the app's retry of the same
    # request joins it and gets the result, as here (a few attempts, each within the app's 60 s).
    for _attempt in range(4):
        response = post(
            server,
            "/generate_tts",
            {"text": text, "voice": "narrator", "model": "gemini-2.5-flash-preview-tts"},
            request_id=request_id,
            timeout=60,  # the app's timeout
        )
        if response.status_code != 503 or response.json()["code"] != "still_working":
            break
        assert response.headers["Retry-After"]
    assert response.status_code == 200, response.text
    body = contract.decode_tts(response.json())
    assert body["text_length"] == len(text) and body["content_type"] == "audio/mpeg"
    assert body["audio_url"].endswith(".mp3")
    audio = fetch(body["audio_url"])
    assert audio.headers["Content-Type"] == "audio/mpeg"
    reading = probe(audio.content)
    assert (reading["format"], reading["codec"]) == ("mp3", "mp3")
    assert reading["duration_s"] == pytest.approx(body["duration_s"], abs=0.5)
    at_least, at_most = expected_seconds(text, body["model"])
    assert at_least <= reading["duration_s"] <= at_most, (reading, body["model"])
    # About 5 kB a second (40 kbit/s), not WAV's 44-48 kB.
    assert len(audio.content) < 6_000 * reading["duration_s"]
    print(
        f"50,000 characters: {reading['duration_s']:.0f} s of audio, "
        f"{len(audio.content) / 1e6:.1f} MB, "
        f"answered in {time.monotonic() - started:.1f} s"
    )


def test_texts_over_the_long_limit_are_refused_and_dialogue_takes_a_whole_story(server):
    too_long = post(
        server,
        "/generate_tts",
        {"text": "x" * 50_001, "voice": "narrator"},
        request_id=new_request_id("s"),
    )
    assert too_long.status_code == 413
    assert contract.decode_error(too_long.json())["code"] == "text_too_long"
    story = narration(45_000)
    dialogue = post(
        server,
        "/process",
        {
            "dialogue_mode": True,
            "user_question": "Where did the boat go?",
            "selected_text_snippet": "the stone bridge",
            "original_block_content": story,
            "level": "moderate",
        },
        request_id=new_request_id("s"),
    )
    assert dialogue.status_code == 200, dialogue.text
    assert dialogue.json()["dialogue_response"]
    # Other texts keep the general limit.
    comic = post(server, "/generate_comic", {"text": "x" * 20_001}, request_id=new_request_id("s"))
    assert comic.status_code == 413


def test_wav_stays_available(start_server):
    server = start_server({"LIROO_AUDIO_FORMAT": "wav"})
    text = narration(3_200)
    body = contract.decode_tts(
        post(
            server,
            "/generate_tts",
            {"text": text, "voice": "character"},
            request_id=new_request_id("s"),
        ).json()
    )
    assert body["audio_url"].endswith(".wav") and body["content_type"] == "audio/wav"
    audio = fetch(body["audio_url"])
    assert audio.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds == pytest.approx(body["duration_s"], abs=0.01)
    at_least, at_most = expected_seconds(text, body["model"])
    assert at_least <= seconds <= at_most
    lecture = post(
        server,
        "/generate_lecture",
        {"text": "Volcanoes form where magma rises. " * 20},
        request_id=new_request_id("s"),
    )
    assert lecture.status_code == 200, lecture.text
    assert lecture.json()["audio_files"]
    assert all(
        a["filename"].endswith(".wav") and a["url"].endswith(".wav")
        for a in lecture.json()["audio_files"]
    )


def metric(server, name):
    lines = [
        line
        for line in requests.get(server.url("/metrics"), timeout=10).text.splitlines()
        if line.startswith(name + " ")
    ]
    return float(lines[0].split()[1]) if lines else 0.0


def test_narration_with_no_room_for_its_first_chunk_is_shed_at_the_door(start_server):
    # one chunk would need more than the limit
    server = start_server({"LIROO_SPEECH_RESERVE_MB": "100000"})
    response = post(
        server,
        "/generate_tts",
        {"text": narration(2_000), "voice": "narrator"},
        request_id=new_request_id("s"),
    )
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert contract.decode_error(response.json())["code"] == "memory_pressure"
    assert metric(server, "liroo_memory_shed_total") == 1
    # refused before any work started
    assert metric(server, "liroo_memory_reservations_refused_total") == 0
    lecture = post(
        server,
        "/generate_lecture",
        {"text": "Volcanoes form where magma rises. " * 20},
        request_id=new_request_id("s"),
    )
    assert lecture.status_code == 503 and contract.decode_lecture(lecture.json())["lecture_id"]
    # Routes without speech are unaffected.
    assert (
        post(
            server, "/generate_image", {"prompt": "a volcano"}, request_id=new_request_id("s")
        ).status_code
        == 200
    )


def test_concurrent_long_narrations_are_reserved_and_queue_for_memory_not_pile_up(start_server):
    """Ten 12,000-character narrations at once, with room for one or two chunks' reservations under
    the limit: each chunk reserves its memory before the model call (seen in /memory while they
    run), never more than fits at once; the others wait for room (or, at the door, are refused
    with 503 memory_pressure + Retry-After); narrations finish, nothing is a 500, and every
    reservation is given back."""
    # Threads to spare, so /memory is answered while narrations run.
    server = start_server(
        {
            "MEMORY_LIMIT_MB": "800",
            "LIROO_SPEECH_RESERVE_MB": "300",
            "LIROO_THREADS": "16",
            # What is tested is memory, not the deadline: on a busy machine ten narrations two at
            # a time outlast the 55 s default, and each would answer still_working instead.
            "LIROO_DEADLINE_S": "250",
        }
    )
    watched = {"outstanding_mb": 0.0, "waiting": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                governor = requests.get(server.url("/memory"), timeout=10).json()["governor"]
            except requests.RequestException:  # a busy machine: look again
                continue
            watched["outstanding_mb"] = max(
                watched["outstanding_mb"], governor["outstanding_reservations_mb"]
            )
            watched["waiting"] = max(watched["waiting"], governor["waiting_reservations"])
            time.sleep(0.01)

    answers = []

    def narrate(i):
        response = post(
            server,
            "/generate_tts",
            {"text": narration(12_000, tag=str(i)), "voice": "narrator"},
            timeout=300,
            request_id=new_request_id("s"),
        )
        answers.append((response.status_code, response.json(), response.headers.get("Retry-After")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=narrate, args=(i,)) for i in range(10)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(300)
    done.set()
    watcher.join(30)

    statuses = sorted(status for status, _, _ in answers)
    assert len(answers) == 10 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1, statuses
    for status, body, retry_after in answers:
        if status == 503:
            # refused at the door, or still at work at its deadline (it goes on for a retry)
            assert body["code"] in ("memory_pressure", "still_working") and retry_after
        else:
            assert body["audio_url"].endswith(".mp3")
    # Chunks held reservations while they ran, never more than fit under the limit with what is in
    # use.
    assert 300 <= watched["outstanding_mb"] < 800, watched
    # Two narrations fit under the limit at once (300 MB each): the other eight were held at the
    # door, let in after a wait in its line or refused there.
    let_in_after_a_wait = metric(server, 'liroo_admission_wait_seconds_count{outcome="admitted"}')
    held_at_the_door = let_in_after_a_wait + metric(server, "liroo_memory_shed_total")
    assert held_at_the_door >= 8, (held_at_the_door, statuses, watched)
    # every reservation given back, once narrations answered at their deadline have ended too
    wait_for(
        lambda: (
            requests.get(server.url("/memory"), timeout=10).json()["governor"][
                "outstanding_reservations_mb"
            ]
            == 0
        ),
        120,
        interval=0.2,
        what="every reservation given back",
    )


# --- how many more heavy requests fit (/metrics)
# -------------------------------------------------------------------------


def gauges(server) -> dict[str, float]:
    text = requests.get(server.url("/metrics"), timeout=10).text
    return {
        name: float(value)
        for name, value in re.findall(r'^(liroo_[a-z_]+(?:\{level="limit"\})?) (\S+)$', text, re.M)
    }


def test_metrics_say_how_many_more_heavy_requests_fit_after_a_narration_teaches_its_peak(server):
    post(
        server,
        "/generate_tts",
        {"text": narration(3_000, "gauge"), "voice": "narrator"},
        request_id=new_request_id("s"),
    )
    figures = gauges(server)
    peak = figures["liroo_heavy_request_peak_bytes"]
    assert peak >= 48 * MB  # at least a picture's floor (LIROO_IMAGE_RESERVE_MB)
    free = (
        figures['liroo_memory_threshold_bytes{level="limit"}']
        - figures["liroo_memory_used_bytes"]
        - figures["liroo_memory_reserved_bytes"]
    )
    assert figures["liroo_heavy_requests_fit"] == max(math.ceil(free / peak) - 1, 0)  # under it
    assert figures["liroo_heavy_requests_fit"] >= 1  # an idle test server has room
