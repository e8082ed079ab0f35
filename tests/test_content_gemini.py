"""The four content endpoints through the real google-genai SDK, against the loopback Gemini.

gunicorn runs the app with LIROO_PROVIDER=gemini and LIROO_GEMINI_BASE_URL
pointing at tests/fake_gemini.py, which records every request: the tests
assert what reached the model (genre, main character, style, level, the
student's interests) and that every answer decodes with the app's rules.
"""

import itertools
import uuid

import pytest
import requests

from liroo.generation.speech import MAX_CHUNK_CHARS, split_for_speech
from tests import contract
from tests.audio_probe import FFPROBE, audio_seconds, probe
from tests.fake_gemini import PCM_RATE, SPEECH_S_PER_CHAR, gemini_env
from tests.helpers import bodies
from tests.helpers.bodies import APP_LECTURE, APP_PROCESS, APP_STORY, APP_TTS, STUDENT_TEXT
from tests.helpers.http import fetch, new_request_id, post
from tests.servers import ended_job, wait_for

SPEECH_LATENCY_S = 0.8
# Read aloud in three parts or more.
LONG_NARRATION = " ".join(
    f"Sentence {i} explains how hot rock rises and cools into new land." for i in range(80)
)
TTS_MODEL = "gemini-2.5-flash-preview-tts"


@pytest.fixture(scope="module")
def fake(module_fake_gemini):
    return module_fake_gemini


@pytest.fixture(scope="module")
def server(fake):
    from tests.servers import GunicornServer

    with GunicornServer(env=gemini_env(fake, LIROO_TTS_MODEL=TTS_MODEL)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def fresh(fake):
    fake.reset()
    yield fake


def test_the_apps_story_prompt_reaches_the_model(server, fake):
    response = post(server, "/generate_story", APP_STORY, request_id=new_request_id())
    assert response.status_code == 200, response.text
    story = contract.decode_story(response.json())["story"]
    assert response.json()["provider"] == "gemini"
    assert story["mainCharacters"][0]["name"] == "Mira" and story["genre"] == "Fantasy"

    (text_call,) = fake.requests("text")
    for expected in ("fantasy", "Mira", "Studio Ghibli", "moderate", STUDENT_TEXT):
        assert expected in text_call.prompt
    pictures = fake.requests("image")
    assert len(pictures) == len(story["chapters"]) + 1  # the cover and every chapter
    for picture in pictures:
        assert "Mira" in picture.prompt and "Studio Ghibli" in picture.prompt
    for chapter in story["chapters"]:
        assert fetch(chapter["imageUrl"], "image/jpeg")[:2] == b"\xff\xd8"


def test_direct_story_fields_reach_the_model(server, fake):
    body = {
        "text": bodies.app_story_prompt(genre="fantasy", style="Studio Ghibli", hero="Mira"),
        "genre": "mystery",
        "main_character": "Captain Reyes",
        "image_style": "Pixel Art",
        "level": "beginner",
    }
    response = post(server, "/generate_story", body, request_id=new_request_id())
    assert response.status_code == 200, response.text
    contract.decode_story(response.json())
    (text_call,) = fake.requests("text")
    assert (
        "mystery" in text_call.prompt
        and "Captain Reyes" in text_call.prompt
        and "Pixel Art" in text_call.prompt
    )
    assert "fantasy" not in text_call.prompt and "Mira" not in text_call.prompt
    assert "8-10 years" in text_call.prompt  # the beginner level's guidance
    for picture in fake.requests("image"):
        assert "Captain Reyes" in picture.prompt and "Pixel Art" in picture.prompt


def test_a_failed_chapter_picture_is_null_not_a_placeholder(server, fake):
    fake.fail("http", status=400, operation="image")  # 400 is not retried: one picture fails
    response = post(server, "/generate_story", APP_STORY, request_id=new_request_id())
    assert response.status_code == 200, response.text
    story = contract.decode_story(response.json())["story"]
    missing = [c for c in story["chapters"] if c["imageUrl"] is None] + (
        [{"cover": True}] if "coverImageUrl" not in story else []
    )
    assert len(missing) == 1
    for chapter in story["chapters"]:
        assert (chapter["imageUrl"] is None) == ("imageError" in chapter)


def test_a_story_with_most_pictures_failed_is_an_error(server, fake):
    fake.fail("http", status=400, times=20, operation="image")
    response = post(server, "/generate_story", APP_STORY, request_id=new_request_id())
    assert response.status_code == 502, response.text
    assert contract.decode_error(response.json())["code"] == "provider_unavailable"


def test_the_study_page_and_what_shapes_it(server, fake):
    response = post(server, "/process", APP_PROCESS, request_id=new_request_id())
    assert response.status_code == 200, response.text
    blocks = contract.decode_blocks(response.json())["blocks"]
    assert sum(b["type"] == "multipleChoiceQuestion" for b in blocks) >= 3
    (text_call,) = fake.requests("text")
    for expected in ("moderate", "space", "football", "Detailed Explanation", STUDENT_TEXT):
        assert expected in text_call.prompt
    assert len([b for b in blocks if b["type"] == "image"]) == len(fake.requests("image"))


def test_failed_study_pictures_are_left_out(server, fake):
    fake.fail("http", status=400, times=5, operation="image")
    response = post(server, "/process", APP_PROCESS, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_blocks(response.json())
    assert not [b for b in body["blocks"] if b["type"] == "image"]
    assert body["image_errors"] and set(body["image_errors"]) == {"provider_unavailable"}


@pytest.mark.parametrize(
    "extra, decode, expected_in_prompt",
    [
        (
            bodies.APP_DIALOGUE,
            contract.decode_dialogue,
            ["Why does Iceland have volcanoes?", "plate boundary", "What is lava?", "Hot rock."],
        ),
        (
            {
                "explain_again_mode": True,
                "original_paragraph_text": "Magma is melted rock under the crust.",
            },
            contract.decode_explain_again,
            ["Magma is melted rock under the crust."],
        ),
        ({"output_format": "flashcards"}, contract.decode_flashcards, [STUDENT_TEXT]),
        ({"output_format": "slideshow"}, contract.decode_slides, [STUDENT_TEXT]),
    ],
)
def test_the_other_process_modes(server, fake, extra, decode, expected_in_prompt):
    response = post(server, "/process", {**APP_PROCESS, **extra}, request_id=new_request_id())
    assert response.status_code == 200, response.text
    decode(response.json())
    (text_call,) = fake.requests("text")
    for expected in expected_in_prompt + ["space", "football"]:
        assert expected in text_call.prompt
    assert not fake.requests("image")


def test_lecture_narration_is_made_concurrently(server, fake):
    fake.set_latency(SPEECH_LATENCY_S, operation="speech")
    response = post(server, "/generate_lecture", APP_LECTURE, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_lecture(response.json())
    speech = fake.requests("speech")
    assert len(speech) == len(body["audio_files"]) == 1 + 2 * len(body["lecture"]["sections"])
    assert {r.model for r in speech} == {TTS_MODEL}
    # Each answer takes SPEECH_LATENCY_S: a call received before the previous one could have been
    # answered proves two were in flight at once (one at a time, they would be at least that far
    # apart).
    arrivals = sorted(r.received_at for r in speech)
    assert min(b - a for a, b in itertools.pairwise(arrivals)) < SPEECH_LATENCY_S / 2
    (text_call,) = fake.requests("text")
    assert "beginner" in text_call.prompt and STUDENT_TEXT in text_call.prompt
    for picture in fake.requests("image"):
        assert "Watercolor" in picture.prompt
    for entry in body["audio_files"]:
        data = fetch(entry["url"], "audio/mpeg")
        assert audio_seconds(data, "audio/mpeg") > 0
        if FFPROBE:
            assert probe(data)["sample_rate"] == PCM_RATE


def test_a_failed_lecture_still_names_its_lecture_id(server, fake):
    fake.fail("http", status=400, operation="text")
    response = post(server, "/generate_lecture", APP_LECTURE, request_id=new_request_id())
    assert response.status_code == 502, response.text
    body = contract.decode_lecture(contract.decode_error(response.json()))
    assert (
        body["lecture_id"] and body["code"] == "provider_unavailable" and body["success"] is False
    )


def test_long_tts_is_read_in_chunks_and_joined(server, fake):
    text = LONG_NARRATION
    chunks = split_for_speech(text)
    body = {**APP_TTS, "text": text, "voice": "character"}
    response = post(server, "/generate_tts", body, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_tts(response.json())
    assert (
        body["model"] == TTS_MODEL
        and body["voice"] == "character"
        and body["text_length"] == len(text)
    )
    speech = fake.requests("speech")
    assert sorted(r.prompt for r in speech) == sorted(chunks) and len(chunks) >= 3
    assert all(len(r.prompt) <= MAX_CHUNK_CHARS for r in speech)
    voices = {
        r.config_value("speechConfig", "voiceConfig", "prebuiltVoiceConfig", "voiceName")
        for r in speech
    }
    assert voices == {"Puck"}  # the character voice, for every chunk
    seconds = audio_seconds(fetch(body["audio_url"], "audio/mpeg"), "audio/mpeg")
    assert seconds == pytest.approx(sum(len(c) * SPEECH_S_PER_CHAR for c in chunks), rel=0.02)


def narrate_async(server, text: str) -> str:
    """POST /generate_tts with ``Prefer: respond-async``; the request id, once it is accepted."""
    rid = "narration-" + uuid.uuid4().hex
    accepted = post(
        server,
        "/generate_tts",
        {**APP_TTS, "text": text},
        **{"X-Request-ID": rid, "Prefer": "respond-async"},
    )
    assert accepted.status_code == 202, accepted.text
    return rid


def test_tts_progress_moves_after_each_recorded_part(server, fake):
    """/generate_tts advances a step per part read aloud: with the model holding every part but
    the first, /progress shows that one part recorded while the request still runs."""
    text = LONG_NARRATION
    chunks = split_for_speech(text)
    parts = len(chunks)
    assert parts >= 3
    # The first part read, the others wait for the test. By its text, not by arrival: the
    # parts' calls start together, and any of them may reach the model first.
    fake.hold("speech", passes=lambda request: chunks[0] in request.prompt)
    rid = narrate_async(server, text)

    def a_part_recorded():
        view = requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
        assert view["status"] == "running", view  # held: it cannot end yet
        return view if view["step"].startswith("Recorded part") else None

    live = contract.decode_progress(wait_for(a_part_recorded, timeout=60, what="a recorded part"))
    assert (live["step"], live["step_number"], live["total_steps"]) == (
        f"Recorded part 1 of {parts}",
        1,
        parts + 2,
    )
    assert 0 < live["progress_percentage"] < 100
    fake.release("speech")
    done = ended_job(server, rid, timeout=120)
    assert done["status"] == "succeeded" and done["result_status"] == 200, done
    contract.decode_tts(done["result"])
    assert done["step_number"] == done["total_steps"] == parts + 2
    assert len(fake.requests("speech")) == parts


def test_chunks_waiting_for_the_model_hold_no_memory(server, fake):
    """A narration's chunks wait for the model holding nothing: each chunk's memory is reserved
    when its answer arrives, before the body is read (``providers.base.answer_room``, through the
    SDK's response hook). With three parts at the model nothing is reserved (it was three
    chunks' reservations: the model's seconds held the memory of a whole chunk each); the
    answers then come, are read, and every reservation ends."""
    text = LONG_NARRATION
    assert len(split_for_speech(text)) >= 3
    fake.hold("speech")
    rid = narrate_async(server, text)
    wait_for(lambda: len(fake.requests("speech")) >= 3, timeout=60, what="three parts asked for")

    def governor():
        return requests.get(server.url("/memory"), timeout=10).json()["governor"]

    # The 202 closed the request's door pledge; the held calls reserved nothing.
    assert governor()["outstanding_reservations_mb"] == 0
    fake.release("speech")
    done = ended_job(server, rid, timeout=120)
    assert done["status"] == "succeeded" and done["result_status"] == 200, done
    assert wait_for(lambda: governor()["outstanding_reservations_mb"] == 0, timeout=10)


def test_tts_failure_is_an_error_not_silence(server, fake):
    fake.fail("http", status=400, operation="speech")
    response = post(server, "/generate_tts", APP_TTS, request_id=new_request_id())
    assert response.status_code == 502, response.text
    assert contract.decode_error(response.json())["code"] == "provider_unavailable"
    assert "audio_url" not in response.json()
