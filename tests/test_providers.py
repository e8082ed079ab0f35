"""The providers: one contract for both, then what is particular to each.

The Gemini provider runs the real google-genai SDK against the loopback
Gemini (tests/fake_gemini.py); nothing of the SDK is mocked.
"""
from __future__ import annotations

import io
import json
import os
import re
import wave
from typing import Literal

import pytest
from PIL import Image
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict, Field

from liroo import create_app
from liroo.errors import provider_error
from liroo.providers import (
    BadOutput,
    ContentBlocked,
    Pair,
    ProviderUnavailable,
    RateLimited,
    UnsupportedSchema,
    make_provider,
    pairs_to_dict,
)
from liroo.providers.gemini import VOICES, GeminiProvider
from liroo.providers.offline import OfflineProvider, synthetic_speech
from liroo.providers.offline_text import source_text
from liroo.providers.schema import check_schema, dict_to_pairs
from liroo.providers.wav import wav_duration_s
from liroo.settings import Settings, SettingsError
from tests.helpers.bodies import PROMPT, STORY
from tests.helpers.gemini import gemini_settings
from tests.helpers.schemas import SCHEMAS, Comic, Quiz, Story, WithDict

# --- schemas a generation author might write -------------------------------------


@pytest.fixture(params=["offline", "gemini"])
def provider(request):
    if request.param == "offline":
        yield make_provider(Settings(provider="offline"))
        return
    fake = request.getfixturevalue("fake_gemini")
    gemini = make_provider(gemini_settings(fake))
    yield gemini
    gemini.close()


@pytest.fixture
def gemini(fake_gemini):
    provider = GeminiProvider(gemini_settings(fake_gemini))
    yield provider
    provider.close()


def client_view(exc):
    """What the API would answer for a provider error (the mapping needs a request context)."""
    with create_app(Settings(provider="offline")).test_request_context():
        return provider_error(exc)


def calls(operation: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "liroo_provider_calls_total", {"operation": operation, "outcome": outcome}
        )
        or 0.0
    )


# --- the contract both providers keep -----------------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_structured_output_is_a_valid_instance_built_from_the_text(provider, schema):
    before = calls("text", "ok")
    result = provider.generate_structured(PROMPT, schema)
    assert isinstance(result, schema)
    schema.model_validate(result.model_dump(by_alias=True))  # constraints hold
    dumped = json.dumps(result.model_dump(mode="json"))
    # built from the story: its first sentence, its last, and its hero
    assert [w for w in ("lighthouse", "crystals", "Mira") if w not in dumped] == [], dumped
    assert calls("text", "ok") == before + 1


def test_dict_fields_are_refused_before_any_call(provider, request):
    with pytest.raises(UnsupportedSchema, match="dialogue"):
        provider.generate_structured(PROMPT, WithDict)
    if provider.name == "gemini":
        assert request.getfixturevalue("fake_gemini").requests() == []


def test_images_decode_and_differ_by_prompt(provider):
    first = provider.generate_image("A lighthouse on a cliff at dawn", "1:1")
    second = provider.generate_image("A dark forest with an owl at night", "1:1")
    again = provider.generate_image("A lighthouse on a cliff at dawn", "1:1")
    for result in (first, second):
        assert result.provider == provider.name and result.model == provider.image_model
        assert result.mime_type.startswith("image/")
        image = Image.open(io.BytesIO(result.data))
        image.load()
        assert image.size[0] >= 512 and image.size[1] >= 512
    assert first.data != second.data
    assert first.data == again.data


def test_speech_is_a_wav_that_grows_with_the_text(provider):
    short = provider.generate_speech("Hello there.", "narrator")
    long = provider.generate_speech(STORY, "character")
    for result in (short, long):
        assert result.mime_type == "audio/wav" and result.provider == provider.name
        with wave.open(io.BytesIO(result.data)) as wav:
            assert wav.getsampwidth() == 2 and wav.getnchannels() == 1 and wav.getnframes() > 0
    assert wav_duration_s(long.data) > 2 * wav_duration_s(short.data)


def test_an_unknown_aspect_ratio_is_a_callers_bug(provider):
    with pytest.raises(ValueError, match="aspect ratio"):
        provider.generate_image("anything", "7:5")


# --- schemas ----------------------------------------------------------------------


def test_check_schema_names_the_dict_field_even_when_nested():
    class Inner(BaseModel):
        labels: dict[str, int]

    class Outer(BaseModel):
        items: list[Inner]

    with pytest.raises(UnsupportedSchema, match=r"Inner\.labels.*list\[Pair\]"):
        check_schema(Outer)

    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        title: str

    with pytest.raises(UnsupportedSchema):
        check_schema(Loose)
    assert check_schema(Comic)["title"] == "Comic"


@pytest.mark.parametrize(
    "annotation,field,hint",
    [
        (float, Field(gt=0), "ge= instead of gt="),
        (int, Field(lt=5), "le= instead of lt="),
        (set[str], Field(), "list instead of a set"),
        (tuple[int, str], Field(), "instead of a tuple"),
        (Literal[1, 2], Field(), "values must be strings"),
        (Literal[1], Field(), "values must be strings"),
    ],
)
def test_check_schema_refuses_what_gemini_cannot_take_and_says_what_to_do(annotation, field, hint):
    from pydantic import create_model

    model = create_model("Odd", value=(annotation, field))
    with pytest.raises(UnsupportedSchema, match=re.escape(hint)):
        check_schema(model)


def test_pairs_convert_to_and_from_dicts():
    pairs = [
        Pair(key="Mira", value="a girl"),
        Pair(key="Tomas", value="the keeper"),
        Pair(key="Mira", value="again"),
    ]
    assert pairs_to_dict(pairs) == {"Mira": "a girl", "Tomas": "the keeper"}
    assert pairs_to_dict(dict_to_pairs({"a": "1"})) == {"a": "1"}


# --- offline ------------------------------------------------------------------------


def test_offline_comic_follows_the_text_and_its_people():
    comic = OfflineProvider().generate_structured(PROMPT, Comic)
    scenes = [p.scene for p in comic.panels]
    # one panel per sentence, in order
    assert scenes[0].startswith("Mira walked") and len(scenes) == 6
    assert not any("comic" in s.lower() for s in scenes)  # the instructions are not content
    cast = pairs_to_dict(comic.character_style_guide)
    assert {"Mira", "Tomas"} <= set(cast)
    assert "Tomas" in cast["Tomas"]  # described from the sentences about him


def test_offline_quiz_points_at_the_right_option():
    quiz = OfflineProvider().generate_structured(
        f"Make a quiz.\n<source>{STORY}</source>\nReturn JSON.", Quiz
    )
    for question in quiz.questions:
        assert "_____" in question.question
        by_id = {o.id: o.text for o in question.options}
        assert len(by_id) == 4
        answer = by_id[question.correct_answer_id]
        assert (
            question.question.removeprefix("Fill in the blank: ").replace("_____", answer) in STORY
        )
        assert len({o.text for o in question.options}) == 4


def test_offline_structured_output_keeps_every_constraint():
    story = OfflineProvider().generate_structured(PROMPT, Story)
    assert 2 <= len(story.chapters) <= 5 and len(story.keywords) == 3
    for i, chapter in enumerate(story.chapters, 1):
        assert chapter.order == i and 3 <= len(chapter.title) <= 40 and len(chapter.content) >= 120
        assert chapter.image_url is None  # no links are made up offline
    assert 0.1 <= story.score <= 0.9


def test_offline_structured_output_is_deterministic():
    provider = OfflineProvider()
    assert provider.generate_structured(PROMPT, Story) == provider.generate_structured(
        PROMPT, Story
    )


def test_source_text_prefers_tags_then_the_text_after_a_text_label():
    assert source_text("Do this.\n<source>The cat sat.</source>\nThen that.") == "The cat sat."
    assert (
        source_text("Rules: be brief.\nOriginal Text:\nThe cat sat. It purred.")
        == "The cat sat. It purred."
    )
    assert source_text("Just a prompt.") == "Just a prompt."


@pytest.mark.parametrize(
    "ratio,size",
    [("1:1", (1024, 1024)), ("16:9", (1024, 576)), ("9:16", (576, 1024)), ("4:3", (1024, 768))],
)
def test_offline_images_have_the_requested_shape(ratio, size):
    result = OfflineProvider().generate_image("A town by the sea", ratio)
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "PNG" and image.size == size


def test_offline_images_are_pictures_not_placeholders():
    image = Image.open(
        io.BytesIO(OfflineProvider().generate_image("A forest at night", "1:1").data)
    ).convert("RGB")
    colours = image.getcolors(1 << 20)
    assert colours is not None and len(colours) > 200  # gradients, shapes: many colours
    top, bottom = image.crop((0, 0, 1024, 100)), image.crop((0, 924, 1024, 1024))
    assert top.getcolors(1 << 20) != bottom.getcolors(1 << 20)


def test_offline_speech_is_synthetic_and_valid_without_espeak(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # this machine has no espeak-ng anyway
    provider = OfflineProvider()
    result = provider.generate_speech("Read me aloud, please.", "narrator")
    assert provider.tts_model == "offline-tones" and result.model == "offline-tones"
    with wave.open(io.BytesIO(result.data)) as wav:
        assert wav.getframerate() == 24_000 and wav.getsampwidth() == 2 and wav.getnchannels() == 1
        frames = wav.readframes(wav.getnframes())
    assert any(frames)  # not silence
    assert wav_duration_s(synthetic_speech("x" * 20)) == pytest.approx(20 * 0.065, abs=0.01)
    assert wav_duration_s(synthetic_speech("x" * 100_000)) <= 300.0


@pytest.mark.skipif(
    not __import__("shutil").which("espeak-ng"), reason="espeak-ng is not installed here"
)
def test_offline_speech_uses_espeak_when_installed():
    provider = OfflineProvider()
    result = provider.generate_speech("Hello from espeak.", "narrator")
    assert result.model == "offline-espeak-ng" and wav_duration_s(result.data) > 0.3


# --- gemini: what is sent -----------------------------------------------------------


def test_gemini_sends_key_models_schema_and_options(gemini, fake_gemini):
    gemini.generate_structured(PROMPT, Comic, system="You write comics.")
    gemini.generate_image("A lighthouse", "16:9")
    gemini.generate_speech("Hello", "character")
    text, image, speech = fake_gemini.requests()
    for request in (text, image, speech):
        assert request.headers["x-goog-api-key"] == "test-key"
        assert request.path.startswith("/v1")
    assert (text.model, image.model, speech.model) == (
        "gemini-2.5-flash",
        "gemini-2.5-flash-image",
        "gemini-2.5-flash-preview-tts",
    )
    assert text.config_value("responseMimeType") == "application/json"
    schema = text.config_value("responseSchema")
    assert set(schema["properties"]) == {"comic_title", "theme", "character_style_guide", "panels"}
    assert "additionalProperties" not in json.dumps(schema)
    assert text.body["systemInstruction"]["parts"][0]["text"] == "You write comics."
    assert STORY in text.prompt
    assert image.config_value("responseModalities") == ["IMAGE"]
    assert image.config_value("imageConfig", "aspectRatio") == "16:9"
    assert speech.config_value("responseModalities") == ["AUDIO"]
    assert (
        speech.config_value("speechConfig", "voiceConfig", "prebuiltVoiceConfig", "voiceName")
        == VOICES["character"]
    )


def test_gemini_client_is_made_lazily_and_dropped_in_a_forked_child(gemini, fake_gemini):
    assert gemini._client is None
    gemini.generate_speech("Hi", "narrator")
    assert gemini._client is not None
    pid = os.fork()
    if pid == 0:  # the child: a fresh process state, no client shared with the parent
        os._exit(0 if gemini._client is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gemini._client is not None


def test_make_provider_and_create_app_choose_by_settings(fake_gemini):
    assert make_provider(Settings()).name == "offline"
    assert (
        make_provider(Settings(genai_api_key="k", gemini_base_url=fake_gemini.url)).name == "gemini"
    )
    with pytest.raises(SettingsError, match="GENAI_API_KEY"):
        make_provider(Settings(provider="gemini"))
    app = create_app(Settings(provider="offline"))
    assert app.extensions["liroo"].provider.name == "offline"
    assert fake_gemini.requests() == []


# --- gemini: retries and failures ------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503, 500])
def test_gemini_retries_a_transient_error_and_recovers(gemini, fake_gemini, status):
    fake_gemini.fail("http", status=status, operation="text")
    assert isinstance(gemini.generate_structured(PROMPT, Quiz), Quiz)
    assert len(fake_gemini.requests()) == 2


def test_gemini_does_not_retry_a_bad_request(gemini, fake_gemini):
    fake_gemini.fail("http", status=400)
    with pytest.raises(ProviderUnavailable, match="refused"):
        gemini.generate_structured(PROMPT, Quiz)
    assert len(fake_gemini.requests()) == 1


def test_gemini_reports_a_refused_key_without_retrying(fake_gemini):
    fake_gemini.api_key = "the-right-key"
    provider = GeminiProvider(gemini_settings(fake_gemini, genai_api_key="a-wrong-key"))
    with pytest.raises(ProviderUnavailable, match="API key") as caught:
        provider.generate_image("A lighthouse")
    assert len(fake_gemini.requests()) == 1
    assert "a-wrong-key" not in str(caught.value)
    provider.close()


def test_gemini_429_storm_is_rate_limited_with_the_servers_retry_after(gemini, fake_gemini):
    before = calls("image", "rate_limited")
    fake_gemini.fail("http", status=429, retry_after=7, times=3)
    with pytest.raises(RateLimited) as caught:
        gemini.generate_image("A lighthouse")
    assert caught.value.retry_after_s == 7
    assert len(fake_gemini.requests()) == 3  # every attempt, then give up
    assert calls("image", "rate_limited") == before + 1
    api = client_view(caught.value)
    assert api.status == 503 and api.headers["Retry-After"] == "7"


def test_gemini_hang_times_out_into_unavailable(fake_gemini):
    provider = GeminiProvider(
        gemini_settings(fake_gemini, gemini_timeout_s=0.5, gemini_retry_attempts=2)
    )
    fake_gemini.fail("hang", times=2)
    with pytest.raises(ProviderUnavailable, match="no answer within 0.5s"):
        provider.generate_speech("Hello", "narrator")
    assert len(fake_gemini.requests()) == 2  # the SDK retries a timeout once more, then gives up
    provider.close()


@pytest.mark.parametrize("kind", ["malformed_body", "truncated_json", "max_tokens", "empty_parts"])
def test_gemini_unusable_text_is_bad_output(gemini, fake_gemini, kind):
    fake_gemini.fail(kind)
    with pytest.raises(BadOutput):
        gemini.generate_structured(PROMPT, Comic)
    assert len(fake_gemini.requests()) == 1


def test_gemini_answer_not_matching_the_schema_is_bad_output(gemini, fake_gemini):
    fake_gemini.answer({"comic_title": "Only a title"})
    with pytest.raises(BadOutput, match="does not match Comic"):
        gemini.generate_structured(PROMPT, Comic)


def test_gemini_queued_answer_is_returned_exactly(gemini, fake_gemini):
    fake_gemini.answer(
        {
            "title": "Quiz",
            "questions": [
                {
                    "question": f"Q{i}?",
                    "options": [{"id": str(j), "text": f"o{j}"} for j in range(4)],
                    "correct_answer_id": "2",
                    "explanation": "Because.",
                }
                for i in range(2)
            ],
        }
    )
    quiz = gemini.generate_structured(PROMPT, Quiz)
    assert quiz.title == "Quiz" and quiz.questions[1].question == "Q1?"


@pytest.mark.parametrize(
    "kind,operation,reason",
    [
        ("blocked", "text", "SAFETY"),
        ("blocked", "image", "IMAGE_SAFETY"),
        ("blocked", "text", "PROHIBITED_CONTENT"),
        ("prompt_blocked", "image", "BLOCKLIST"),
        ("no_candidates", "speech", None),
    ],
)
def test_gemini_blocked_content_is_content_blocked(gemini, fake_gemini, kind, operation, reason):
    fake_gemini.fail(kind, reason=reason or "SAFETY")
    call = {
        "text": lambda: gemini.generate_structured(PROMPT, Quiz),
        "image": lambda: gemini.generate_image("A lighthouse"),
        "speech": lambda: gemini.generate_speech("Hello", "narrator"),
    }[operation]
    with pytest.raises(ContentBlocked) as caught:
        call()
    assert client_view(caught.value).status == 422


def test_gemini_text_instead_of_an_image_is_bad_output(gemini, fake_gemini):
    fake_gemini.fail("text_instead_of_image", operation="image")
    with pytest.raises(BadOutput, match="got text"):
        gemini.generate_image("A lighthouse")


def test_gemini_speech_wraps_pcm_as_wav_at_its_rate(gemini):
    result = gemini.generate_speech("Twenty characters!!", "narrator")
    with wave.open(io.BytesIO(result.data)) as wav:
        assert wav.getframerate() == 24_000 and wav.getsampwidth() == 2
    assert wav_duration_s(result.data) == pytest.approx(19 * 0.05, abs=0.01)
