"""Provider faults through the real google-genai SDK, against the loopback Gemini, on one real
gunicorn server.

Each test queues faults in the fake (tests/fake_gemini.py) and checks what
the app answers: the right status and ``code`` or a success after retries
(the fake's record of requests proves the retries), a request that ends even
when the model never answers, ``/progress/<id>`` showing ``failed`` with an
``error_code``, and no worker dying on the way (the same worker pids, no
exit in the log). Storage and Redis faults are in test_faults_storage.py and
test_faults_redis.py.
"""

from __future__ import annotations

import pytest
import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.bodies import APP_COMIC, APP_TTS, LONG_TEXT, script_with
from tests.helpers.http import new_request_id, post
from tests.servers import GunicornServer, wait_for

ATTEMPTS = 3
CLIENT_TIMEOUT_S = 120  # the test's own patience: a request still open after this has hung
WORKER_DEATHS = (
    "Worker exiting",
    "exited with code",
    "WORKER TIMEOUT",
    "was sent SIGKILL",
    "Traceback",
)


@pytest.fixture(scope="module")
def fake(module_fake_gemini):
    return module_fake_gemini


@pytest.fixture(scope="module")
def server(fake):
    env = gemini_env(
        fake,
        LIROO_GEMINI_RETRY_ATTEMPTS=ATTEMPTS,
        LIROO_GEMINI_RETRY_MAX_S=0.2,
        LIROO_GEMINI_TIMEOUT_S=2,
    )
    with GunicornServer(env) as srv:
        srv.steady_workers = wait_for(
            lambda: len(srv.worker_pids()) == 2 and set(srv.worker_pids()),
            timeout=30,
            what="both workers",
        )
        yield srv


@pytest.fixture(autouse=True)
def no_worker_dies(fake, server):
    fake.reset()
    yield
    assert set(server.worker_pids()) == server.steady_workers, "a worker died or was replaced"
    log = server.log()
    assert not [sign for sign in WORKER_DEATHS if sign in log], log[-3000:]


def call(server, path, body, request_id=None):
    request_id = request_id or new_request_id("fault")
    return request_id, post(server, path, body, request_id, timeout=CLIENT_TIMEOUT_S)


def assert_failed(server, request_id, response, status, code):
    assert response.status_code == status, response.text
    body = contract.decode_error(response.json())
    assert body["code"] == code and body["request_id"] == request_id
    progress = contract.decode_progress(
        requests.get(server.url(f"/progress/{request_id}"), timeout=10).json()
    )
    assert progress["status"] == "failed" and progress["success"] is False
    assert progress["error_code"] == code and progress["error"] == body["error"]
    return body


def comic(server, **extra):
    return call(server, "/generate_comic", {**APP_COMIC, **extra})


def image(server):
    return call(
        server, "/generate_image", {"prompt": "A lighthouse at dusk", "image_style": "Watercolor"}
    )


# --- rate limits, server errors and timeouts: retried, then a clear answer
# ---------------------------


def test_a_429_storm_longer_than_the_retries_is_a_503_with_retry_after(server, fake):
    fake.fail("http", times=ATTEMPTS, status=429, retry_after=7, operation="text")
    rid, response = comic(server)
    body = assert_failed(server, rid, response, 503, "provider_rate_limited")
    # Gemini's own hint
    assert response.headers["Retry-After"] == "7" and body["retry_after_s"] == 7
    assert len(fake.requests("text")) == ATTEMPTS and fake.requests("image") == []


def test_fewer_429s_than_attempts_succeed_after_retries(server, fake):
    fake.fail("http", times=ATTEMPTS - 1, status=429, retry_after=1, operation="text")
    rid, response = comic(server)
    assert response.status_code == 200, response.text
    assert contract.decode_comic(response.json())["success"] is True
    assert len(fake.requests("text")) == ATTEMPTS  # two refusals, then the answer
    assert requests.get(server.url(f"/progress/{rid}"), timeout=10).json()["status"] == "succeeded"


@pytest.mark.parametrize("status", [500, 503])
def test_a_short_burst_of_server_errors_is_retried(server, fake, status):
    fake.fail("http", times=ATTEMPTS - 1, status=status, operation="image")
    _, response = image(server)
    assert response.status_code == 200, response.text
    assert contract.decode_image(response.json())["url"]
    assert len(fake.requests("image")) == ATTEMPTS


@pytest.mark.parametrize("status", [500, 503])
def test_a_lasting_server_error_is_a_502(server, fake, status):
    fake.fail("http", times=ATTEMPTS, status=status, operation="image")
    rid, response = image(server)
    assert_failed(server, rid, response, 502, "provider_unavailable")
    assert len(fake.requests("image")) == ATTEMPTS


def test_a_model_that_never_answers_ends_the_request_with_a_502(server, fake):
    """Every attempt hangs: each is cut at LIROO_GEMINI_TIMEOUT_S, and after the last the request
    ends with a 502 (the client's own timeout, far longer, is never reached)."""
    fake.fail("hang", times=ATTEMPTS, operation="text")
    try:
        rid, response = comic(server)
    except requests.Timeout:
        pytest.fail("the request hung until the client gave up")
    assert_failed(server, rid, response, 502, "provider_unavailable")
    assert len(fake.requests("text")) == ATTEMPTS


def test_one_slow_answer_is_retried(server, fake):
    fake.fail("hang", times=1, operation="image")
    _, response = image(server)
    assert response.status_code == 200, response.text
    assert len(fake.requests("image")) == 2


# --- answers that are not results
# ------------------------------------------------------------------


# What each kind of unusable answer becomes for the client.
BAD_OUTPUT = (502, "provider_bad_output")
BLOCKED = (422, "content_blocked")
UNUSABLE = {
    "malformed_body": BAD_OUTPUT,
    "truncated_json": BAD_OUTPUT,
    "max_tokens": BAD_OUTPUT,
    "empty_parts": BAD_OUTPUT,
    "text_instead_of_image": BAD_OUTPUT,  # prose where JSON or a picture was asked for
    "blocked": BLOCKED,
    "prompt_blocked": BLOCKED,
    "no_candidates": BLOCKED,
}


@pytest.mark.parametrize("kind", UNUSABLE)
def test_unusable_text_answers(server, fake, kind):
    fake.fail(kind, operation="text")
    rid, response = comic(server)
    body = assert_failed(server, rid, response, *UNUSABLE[kind])
    assert "comic" not in body
    assert len(fake.requests("text")) == 1 and fake.requests("image") == []  # no retry, no pictures


@pytest.mark.parametrize(
    "kind",
    [
        "malformed_body",
        "empty_parts",
        "text_instead_of_image",
        "blocked",
        "prompt_blocked",
        "no_candidates",
    ],
)
def test_unusable_image_answers(server, fake, kind):
    fake.fail(kind, operation="image")
    rid, response = image(server)
    body = assert_failed(server, rid, response, *UNUSABLE[kind])
    assert "url" not in body and "image_url" not in body
    assert len(fake.requests("image")) == 1


@pytest.mark.parametrize("kind", ["malformed_body", "empty_parts", "blocked"])
def test_unusable_speech_answers(server, fake, kind):
    fake.fail(kind, operation="speech")
    rid, response = call(server, "/generate_tts", APP_TTS)
    body = assert_failed(server, rid, response, *UNUSABLE[kind])
    assert "audio_url" not in body
    assert len(fake.requests("speech")) == 1  # an unusable answer is not asked for again


# --- a comic with some pictures missing
# ------------------------------------------------------------


@pytest.mark.parametrize("failed_panels, succeeds", [(4, True), (5, False)])
def test_a_comic_keeps_success_only_with_at_least_half_its_pictures(
    server, fake, failed_panels, succeeds
):
    fake.answer(script_with(8))
    fake.fail("text_instead_of_image", times=failed_panels, operation="image")
    rid, response = comic(server, text=LONG_TEXT)
    assert len(fake.requests("image")) == 8
    if not succeeds:
        assert_failed(server, rid, response, 502, "provider_bad_output")
        return
    assert response.status_code == 200, response.text
    panels = contract.decode_comic(response.json())["comic"]["panel_layout"]
    missing = [p for p in panels if "image_url" not in p]
    assert len(panels) == 8 and len(missing) == failed_panels
    assert all(p["image_error"] == "provider_bad_output" for p in missing)
    progress = requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    assert progress["status"] == "succeeded" and "4 of 8 panels drawn" in progress["details"]


def test_a_429_storm_on_every_panel_is_a_503(server, fake):
    fake.answer(script_with(3))
    fake.fail("http", times=3 * ATTEMPTS, status=429, retry_after=3, operation="image")
    rid, response = comic(server)  # three panels, each refused on every attempt
    assert_failed(server, rid, response, 503, "provider_rate_limited")
    assert response.headers["Retry-After"] == "3"
    assert len(fake.requests("image")) == 3 * ATTEMPTS
