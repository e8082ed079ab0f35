"""/generate_story, /process, /generate_lecture and /generate_tts on a real gunicorn with the
offline provider, plus the pure parts (the app's story prompt, speech chunking, prompts) tested
directly."""

import shutil
import uuid

import pytest
import requests

from liroo.api.models import ProcessRequest
from liroo.generation.speech import MAX_CHUNK_CHARS, split_for_speech
from liroo.generation.story import read_story_prompt, story_brief, story_prompt
from liroo.generation.study import Conversation, Learner, dialogue_prompt, study_page_prompt
from liroo.providers.offline import MS_PER_CHAR
from tests import contract
from tests.audio_probe import audio_seconds
from tests.helpers.bodies import (
    APP_DIALOGUE,
    APP_LECTURE,
    APP_PROCESS,
    APP_STORY,
    APP_TTS,
    STUDENT_TEXT,
    app_story_prompt,
)
from tests.helpers.http import fetch, new_request_id, post
from tests.servers import ended_job, sent_twice

# --- the app's story prompt
# ---------------------------------------------------------------------------


def test_the_apps_story_prompt_is_read_into_its_parts():
    read = read_story_prompt(app_story_prompt())
    assert (read.level, read.genre, read.style, read.main_character) == (
        "moderate",
        "Fantasy",
        "ghibli",
        "Mira",
    )
    assert read.text == STUDENT_TEXT


def test_story_prompt_without_a_main_character_and_with_two_word_values():
    read = read_story_prompt(
        app_story_prompt(
            genre="science fiction", style="3D Render", level="intermediate", hero=None
        )
    )
    assert (read.level, read.genre, read.style, read.main_character) == (
        "intermediate",
        "Science Fiction",
        "3d_render",
        None,
    )
    assert read.text == STUDENT_TEXT


def test_story_prompt_tolerates_missing_parts_and_plain_text():
    assert read_story_prompt(STUDENT_TEXT).text == STUDENT_TEXT
    assert read_story_prompt(STUDENT_TEXT).genre is None
    no_marker = read_story_prompt(
        "[Level: beginner]\nImage Style to consider for tone and visuals: Pixel Art.\n"
        "The main character of this story is Dr. Zed.\nA short text."
    )
    assert (no_marker.level, no_marker.style, no_marker.main_character, no_marker.text) == (
        "beginner",
        "pixel_art",
        "Dr. Zed",
        "A short text.",
    )
    unknown = read_story_prompt(
        "[Level: expert]\nPlease convert the following text into an engaging story.\n"
        "Image Style to consider for tone and visuals: Cubism.\nOriginal Text: inline words"
    )
    assert (unknown.level, unknown.genre, unknown.style, unknown.text) == (
        None,
        None,
        None,
        "inline words",
    )


def test_fields_sent_directly_win_over_the_prompt():
    brief = story_brief(
        app_story_prompt(),
        level="beginner",
        style="pixel_art",
        genre="mystery",
        main_character="  Captain   Reyes ",
    )
    assert (brief.level, brief.style, brief.genre, brief.main_character) == (
        "beginner",
        "pixel_art",
        "Mystery",
        "Captain Reyes",
    )
    from_prompt = story_brief(app_story_prompt())
    assert (
        from_prompt.level,
        from_prompt.style,
        from_prompt.genre,
        from_prompt.main_character,
    ) == ("moderate", "ghibli", "Fantasy", "Mira")
    prompt = story_prompt(from_prompt, 3)
    for expected in ("fantasy", "Mira", "Studio Ghibli", "exactly 3 chapters", STUDENT_TEXT):
        assert expected in prompt


def test_level_and_interests_shape_the_study_prompts():
    learner = Learner(level="beginner", interests=["dinosaurs"], tier="Detailed Explanation")
    prompt = study_page_prompt(STUDENT_TEXT, learner)
    assert (
        "beginner" in prompt
        and "dinosaurs" in prompt
        and "8-10 years" in prompt
        and STUDENT_TEXT in prompt
    )
    talk = Conversation(
        question="Why is Iceland hot?",
        snippet="plate boundary",
        block=STUDENT_TEXT,
        history=[("user", "What is magma?"), ("ai", "Melted rock under the ground.")],
    )
    dialogue = dialogue_prompt(talk, learner)
    for expected in (
        "Why is Iceland hot?",
        "plate boundary",
        "What is magma?",
        "Melted rock",
        "dinosaurs",
    ):
        assert expected in dialogue


def test_process_modes_are_chosen_by_fields():
    def mode(**fields):
        return ProcessRequest.model_validate(fields).mode

    assert mode(input_text="x") == "blocks"
    assert mode(input_text="x", output_format="blocks") == "blocks"
    assert mode(input_text="x", output_format="Flashcards") == "flashcards"
    assert mode(input_text="x", output_format="slideshow") == "slideshow"
    assert mode(dialogue_mode=True, output_format="slideshow") == "dialogue"
    assert mode(explain_again_mode=True) == "explain_again"


# --- speech: chunks and joins
# -------------------------------------------------------------------------------


def test_long_text_is_cut_at_sentence_ends_within_the_limit():
    sentences = [f"Sentence number {i} tells a little more about volcanoes." for i in range(120)]
    text = " ".join(sentences)
    chunks = split_for_speech(text)
    assert len(chunks) > 1 and all(len(chunk) <= MAX_CHUNK_CHARS for chunk in chunks)
    assert all(chunk.endswith(".") for chunk in chunks)  # every cut falls at a sentence end
    assert " ".join(chunks) == text  # nothing lost, nothing added


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces():
    text = " ".join(["word"] * 1000) + ". " + "x" * 3200
    chunks = split_for_speech(text, limit=500)
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
    assert split_for_speech("   ") == []
    assert split_for_speech('He said "Go now." Then he left.', limit=20) == [
        'He said "Go now."',
        "Then he left.",
    ]


# --- the endpoints on gunicorn
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(offline_server):
    return offline_server


def test_the_apps_story_request_decodes(server):
    response = post(server, "/generate_story", APP_STORY, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_story(response.json())
    story = body["story"]
    assert (
        story["level"] == "moderate"
        and story["imageStyle"] == "Studio Ghibli"
        and story["genre"] == "Fantasy"
    )
    assert story["mainCharacters"][0]["name"] == "Mira"
    chapters = story["chapters"]
    assert 2 <= len(chapters) <= 5
    assert [c["order"] for c in chapters] == list(range(1, len(chapters) + 1))
    assert len({c["id"] for c in chapters}) == len(chapters)
    for url in [story["coverImageUrl"]] + [c["imageUrl"] for c in chapters]:
        assert fetch(url, "image/jpeg")[:2] == b"\xff\xd8"


def test_a_plain_story_request_with_direct_fields(server):
    response = post(
        server,
        "/generate_story",
        {
            "text": STUDENT_TEXT,
            "genre": "mystery",
            "main_character": "Captain Reyes",
            "image_style": "pixel_art",
            "level": "Intermediate",
        },
        request_id=new_request_id(),
    )
    assert response.status_code == 200, response.text
    story = contract.decode_story(response.json())["story"]
    assert (story["genre"], story["imageStyle"], story["level"]) == (
        "Mystery",
        "Pixel Art",
        "intermediate",
    )
    assert story["mainCharacters"][0]["name"] == "Captain Reyes"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"level": "moderate"}, 400, "missing_field"),
        ({"text": "[Level: moderate]\nOriginal Text:\n\n"}, 422, "empty_text"),
        ({"text": STUDENT_TEXT, "level": "expert"}, 422, "unknown_level"),
        ({"text": STUDENT_TEXT, "image_style": "Cubism"}, 422, "unknown_style"),
        ({"text": STUDENT_TEXT, "genre": "x" * 500}, 422, "invalid_field"),
        ({"text": "x" * 20_001}, 413, "text_too_long"),
    ],
)
def test_bad_story_requests(server, body, status, code):
    response = post(server, "/generate_story", body, request_id=new_request_id())
    assert response.status_code == status, response.text
    assert contract.decode_error(response.json())["code"] == code


def test_the_apps_study_page_decodes(server):
    response = post(server, "/process", APP_PROCESS, request_id=new_request_id())
    assert response.status_code == 200, response.text
    blocks = contract.decode_blocks(response.json())["blocks"]
    kinds = [block["type"] for block in blocks]
    assert kinds[0] == "heading" and "paragraph" in kinds
    assert 1 <= kinds.count("image") <= 2
    assert kinds.count("quizHeading") == 1
    questions = [block for block in blocks if block["type"] == "multipleChoiceQuestion"]
    assert 3 <= len(questions) <= 5
    assert kinds.index("quizHeading") < kinds.index("multipleChoiceQuestion")
    for question in questions:
        ids = [option["id"] for option in question["options"]]
        assert len(set(ids)) == len(ids) >= 2 and all(uuid.UUID(i) for i in ids)
        assert question["explanation"]
    assert len({block["id"] for block in blocks}) == len(blocks)
    for block in blocks:
        if block["type"] == "image":
            assert block["alt"] and fetch(block["url"], "image/jpeg")[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "extra, decode, key",
    [
        (
            APP_DIALOGUE,
            contract.decode_dialogue,
            "dialogue_response",
        ),
        (
            {"explain_again_mode": True, "original_paragraph_text": STUDENT_TEXT},
            contract.decode_explain_again,
            "re_explained_paragraph",
        ),
        ({"output_format": "flashcards"}, contract.decode_flashcards, "flashcards"),
        ({"output_format": "slideshow"}, contract.decode_slides, "slides"),
    ],
)
def test_the_other_process_modes_decode(server, extra, decode, key):
    body = {**APP_PROCESS, **extra}
    if extra.get("dialogue_mode") or extra.get("explain_again_mode"):
        body.pop("input_text")
    response = post(server, "/process", body, request_id=new_request_id())
    assert response.status_code == 200, response.text
    answer = decode(response.json())
    assert answer[key] and "blocks" not in answer


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"level": "moderate"}, 400, "missing_field"),
        ({"input_text": "   "}, 422, "empty_text"),
        ({"output_format": "flashcards"}, 400, "missing_field"),
        ({"dialogue_mode": True, "selected_text_snippet": "lava"}, 400, "missing_field"),
        ({"explain_again_mode": True, "original_paragraph_text": ""}, 422, "empty_text"),
        ({"input_text": STUDENT_TEXT, "output_format": "poster"}, 422, "unknown_output_format"),
        ({"input_text": STUDENT_TEXT, "level": "expert"}, 422, "unknown_level"),
        (
            {
                "dialogue_mode": True,
                "user_question": "Why?",
                "conversation_history": [{"sender": "bot", "text": "hi"}],
            },
            422,
            "invalid_field",
        ),
        (
            {"input_text": STUDENT_TEXT, "profile": {"topicsOfInterest": "space"}},
            422,
            "invalid_field",
        ),
    ],
)
def test_bad_process_requests(server, body, status, code):
    response = post(server, "/process", body, request_id=new_request_id())
    assert response.status_code == status, response.text
    error = contract.decode_error(response.json())
    assert error["code"] == code


def test_the_apps_lecture_request_decodes_and_its_narration_plays(server):
    response = post(server, "/generate_lecture", APP_LECTURE, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_lecture(response.json())
    sections = body["lecture"]["sections"]
    assert 3 <= len(sections) <= 5
    audio = body["audio_files"]
    assert [a["type"] for a in audio] == ["title"] + ["section_title", "section_script"] * len(
        sections
    )
    assert "section" not in audio[0]
    assert [a["section"] for a in audio[1:]] == [
        n for n in range(1, len(sections) + 1) for _ in range(2)
    ]
    for entry in audio[1:]:  # as the app reads it: currentSectionIndex = section - 1
        section = sections[entry["section"] - 1]
        assert entry["text"] == section["title" if entry["type"] == "section_title" else "script"]
    assert audio[0]["text"] == body["lecture"]["title"]
    for entry, section in zip(audio[2::2], sections, strict=True):
        assert entry["text"] == section["script"]
    assert len({a["filename"] for a in audio}) == len(audio)
    for entry in audio:
        assert entry["url"].endswith(".mp3") and entry["filename"].endswith(".mp3")
        assert audio_seconds(fetch(entry["url"], "audio/mpeg"), "audio/mpeg") > 0
    for section in sections:
        assert fetch(section["image_url"], "image/jpeg")[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"json": {"level": "beginner"}}, 400, "missing_field"),
        ({"json": {"text": "  ", "level": "beginner"}}, 422, "empty_text"),
        ({"json": {"text": STUDENT_TEXT, "image_style": "Cubism"}}, 422, "unknown_style"),
        (
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_json",
        ),
        (
            {"data": "text=hi", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_lecture_errors_carry_a_lecture_id(server, kwargs, status, code):
    response = requests.post(server.url("/generate_lecture"), timeout=30, **kwargs)
    assert response.status_code == status, response.text
    body = contract.decode_lecture(contract.decode_error(response.json()))
    assert body["code"] == code and body["lecture_id"]


def test_a_lecture_retried_with_its_id_is_replayed_not_regenerated(server):
    rid, first, second = sent_twice(server, "/generate_lecture", APP_LECTURE)
    assert second.json()["lecture_id"] == first.json()["lecture_id"]
    assert second.json()["audio_files"] == first.json()["audio_files"]
    progress = contract.decode_progress(
        requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    )
    assert progress["status"] == "succeeded" and progress["step_number"] == progress["total_steps"]


def test_async_story(server):
    response = post(
        server, "/generate_story", APP_STORY, Prefer="respond-async", request_id=new_request_id()
    )
    assert response.status_code == 202
    rid = response.json()["request_id"]
    job = ended_job(server, rid, timeout=120)
    assert job["status"] == "succeeded" and job["result_status"] == 200
    assert contract.decode_story(job["result"])["request_id"] == rid


def test_long_speech_is_joined_into_one_file(server):
    text = " ".join(
        f"Part {i} of a long reading about volcanoes and the rocks they make." for i in range(60)
    )
    assert len(split_for_speech(text)) >= 3
    response = post(server, "/generate_tts", {**APP_TTS, "text": text}, request_id=new_request_id())
    assert response.status_code == 200, response.text
    body = contract.decode_tts(response.json())
    assert body["voice"] == "narrator" and body["text_length"] == len(text)
    voice = "offline-espeak-ng" if shutil.which("espeak-ng") else "offline-tones"
    assert body["model"] == voice and body["provider"] == "offline"
    seconds = audio_seconds(fetch(body["audio_url"], "audio/mpeg"), "audio/mpeg")
    assert seconds == pytest.approx(body["duration_s"], rel=0.02)
    # The file holds every chunk, not just the first (a chunk is at most ~1,500 characters).
    assert seconds >= 0.5 * len(text) * MS_PER_CHAR / 1000


@pytest.mark.parametrize("voice", ["narrator", "Character"])
def test_the_apps_tts_request_and_the_character_voice(server, voice):
    response = post(
        server, "/generate_tts", {**APP_TTS, "voice": voice}, request_id=new_request_id()
    )
    assert response.status_code == 200, response.text
    assert contract.decode_tts(response.json())["voice"] == voice.lower()


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"voice": "narrator"}, 400, "missing_field"),
        ({"text": "", "voice": "narrator"}, 422, "empty_text"),
        ({"text": "Hello there.", "voice": "robot"}, 422, "unknown_voice"),
        ({"text": "x" * 50_001, "voice": "narrator"}, 413, "text_too_long"),
        ({"text": ["a", "list"], "voice": "narrator"}, 422, "invalid_field"),
    ],
)
def test_bad_tts_requests(server, body, status, code):
    response = post(server, "/generate_tts", body, request_id=new_request_id())
    assert response.status_code == status, response.text
    assert contract.decode_error(response.json())["code"] == code
