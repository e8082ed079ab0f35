"""The loopback Gemini itself, spoken to over plain HTTP (the provider tests drive it through the
SDK)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading

import pytest
import requests
from PIL import Image
from pydantic import BaseModel, Field

from tests.fake_gemini import FakeGemini
from tests.servers import ROOT, clean_env, wait_for


class Card(BaseModel):
    front: str
    back: str = Field(min_length=40)


class Deck(BaseModel):
    cards: list[Card] = Field(min_length=2, max_length=4)


def post(
    fake: FakeGemini, model: str, prompt: str, config: dict | None = None, version: str = "v1"
) -> requests.Response:
    body = {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": config or {},
    }
    return requests.post(
        f"{fake.url}/{version}/models/{model}:generateContent",
        json=body,
        headers={"x-goog-api-key": "k"},
        timeout=10,
    )


def inline_data(response: requests.Response) -> tuple[str, bytes]:
    part = response.json()["candidates"][0]["content"]["parts"][0]["inlineData"]
    return part["mimeType"], base64.b64decode(part["data"])


def test_unknown_paths_get_a_json_404_and_any_v1_version_is_served(fake_gemini):
    missing = requests.post(f"{fake_gemini.url}/v1/models/m:countTokens", json={}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert post(fake_gemini, "m", "hi", version="v1beta").status_code == 200
    assert [r.api_version for r in fake_gemini.requests()] == ["v1beta"]


def test_text_answers_satisfy_a_json_schema_with_refs(fake_gemini):
    config = {
        "responseMimeType": "application/json",
        "responseJsonSchema": Deck.model_json_schema(),
    }
    response = post(
        fake_gemini,
        "gemini-2.5-flash",
        "Text:\nThe sun is a star. The moon orbits the earth.",
        config,
    )
    text = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    deck = Deck.model_validate_json(text)
    assert "sun" in deck.cards[0].back.lower()
    (request,) = fake_gemini.requests()
    assert (request.model, request.operation, request.headers["x-goog-api-key"]) == (
        "gemini-2.5-flash",
        "text",
        "k",
    )


def test_queued_answers_and_faults_are_served_in_order_and_by_operation(fake_gemini):
    fake_gemini.answer({"exact": True})
    fake_gemini.fail("http", status=503, retry_after=2, operation="image")
    assert (
        post(fake_gemini, "m", "hi").json()["candidates"][0]["content"]["parts"][0]["text"]
        == '{"exact": true}'
    )
    assert fake_gemini.pending_faults == 1  # a text request does not take an image fault
    failed = post(fake_gemini, "m", "a picture", {"responseModalities": ["IMAGE"]})
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "2"
    assert failed.json()["error"]["details"][0]["retryDelay"] == "2s"
    assert post(fake_gemini, "m", "a picture", {"responseModalities": ["IMAGE"]}).status_code == 200


def test_images_follow_the_prompt_and_the_configured_size():
    with FakeGemini(image_size=(320, 200), image_mode="RGBA") as fake:
        first = inline_data(post(fake, "img", "a cat", {"responseModalities": ["IMAGE"]}))
        second = inline_data(post(fake, "img", "a dog", {"responseModalities": ["IMAGE"]}))
    assert first[0] == "image/png" and first[1] != second[1]
    image = Image.open(io.BytesIO(first[1]))
    assert image.size == (320, 200) and image.mode == "RGBA"


def test_noise_images_are_incompressible():
    with FakeGemini(image_size=(256, 256), image_mode="RGBA", image_noise=True) as fake:
        _, data = inline_data(post(fake, "img", "anything", {"responseModalities": ["IMAGE"]}))
    assert len(data) > 256 * 256 * 4 * 0.9


def test_speech_is_pcm_whose_length_follows_the_text(fake_gemini):
    audio = {"responseModalities": ["AUDIO"]}
    mime, short = inline_data(post(fake_gemini, "tts", "Hello.", audio))
    _, long = inline_data(post(fake_gemini, "tts", "Hello. " * 20, audio))
    assert mime == "audio/L16;codec=pcm;rate=24000"
    assert len(long) > 5 * len(short) and len(short) % 2 == 0


def test_latency_holds_requests_so_they_overlap(fake_gemini):
    fake_gemini.set_latency(0.3, operation="text")
    threads = [threading.Thread(target=post, args=(fake_gemini, "m", f"hi {i}")) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake_gemini.max_in_flight == 3


def test_a_hold_answers_the_first_requests_and_keeps_the_rest_until_released(fake_gemini):
    fake_gemini.hold("image", let_through=1)
    picture = {"responseModalities": ["IMAGE"]}
    assert post(fake_gemini, "img", "first", picture).status_code == 200  # let through
    answers = []
    held = threading.Thread(
        target=lambda: answers.append(post(fake_gemini, "img", "second", picture).status_code)
    )
    held.start()
    wait_for(lambda: len(fake_gemini.requests("image")) == 2, timeout=10, what="the second call")
    assert post(fake_gemini, "m", "text is not held").status_code == 200 and answers == []
    fake_gemini.release("image")
    held.join(10)
    assert answers == [200]


def test_blocked_and_empty_answers_have_gemini_shapes(fake_gemini):
    fake_gemini.fail("blocked", reason="IMAGE_SAFETY")
    fake_gemini.fail("prompt_blocked", reason="BLOCKLIST")
    fake_gemini.fail("empty_parts")
    blocked = post(fake_gemini, "m", "x").json()["candidates"][0]
    assert blocked["finishReason"] == "IMAGE_SAFETY" and "content" not in blocked
    assert post(fake_gemini, "m", "x").json()["promptFeedback"] == {"blockReason": "BLOCKLIST"}
    assert post(fake_gemini, "m", "x").json()["candidates"][0]["content"]["parts"] == []


def test_runs_alone_for_benchmarks():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_gemini", "--port", "0", "--image-size", "64x32"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKE_GEMINI_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        body = {
            "contents": [{"parts": [{"text": "a tiny picture"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"]},
        }
        answer = requests.post(
            f"{url}/v1/models/img:generateContent", data=json.dumps(body), timeout=10
        )
        _, data = inline_data(answer)
        assert Image.open(io.BytesIO(data)).size == (64, 32)
    finally:
        proc.terminate()
        proc.stdout.close()
        assert proc.wait(timeout=10) == 0


def test_an_unknown_fault_is_refused():
    with FakeGemini() as fake, pytest.raises(ValueError, match="unknown fault"):
        fake.fail("gremlins")
