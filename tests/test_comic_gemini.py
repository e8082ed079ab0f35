"""Comics through the real google-genai SDK against the loopback Gemini, on real gunicorn servers:
what reaches the model, live progress, retries that never reach the model again, memory-aware
panel concurrency, panel failures, and two servers sharing one Redis."""
import concurrent.futures
import uuid

import pytest
import redis
import requests

from tests import contract
from tests.fake_gemini import FakeGemini, gemini_env
from tests.helpers.bodies import APP_COMIC, LONG_TEXT, script_with
from tests.helpers.http import post
from tests.servers import wait_for


def test_the_apps_request_through_gemini(start_server, fake_gemini):
    server = start_server(gemini_env(fake_gemini))
    response = post(server, "/generate_comic", APP_COMIC)
    assert response.status_code == 200, response.text
    body = contract.decode_comic(response.json())
    assert body["success"] and body["provider"] == "gemini"
    panels = body["comic"]["panel_layout"]
    assert all(p.get("image_url") for p in panels)

    text_calls = fake_gemini.requests("text")
    assert len(text_calls) == 1
    assert text_calls[0].headers["x-goog-api-key"] == "test-key"
    assert text_calls[0].config_value("responseMimeType") == "application/json"
    assert (
        "beginner" in text_calls[0].prompt.lower()
        and APP_COMIC["text"][:40] in text_calls[0].prompt
    )
    image_calls = fake_gemini.requests("image")
    assert len(image_calls) == len(panels)
    for call in image_calls:
        assert "comic book" in call.prompt.lower()
        assert "Do not draw any text" in call.prompt
        assert "Characters (keep their look consistent)" in call.prompt


@pytest.mark.parametrize("cap, in_flight", [(None, 7), ("3", 3)])
def test_panel_cap_and_concurrency_from_memory(start_server, fake_gemini, cap, in_flight):
    """With memory to spare (and no pacing) every panel is drawn at once, once a fresh worker has
    seen one picture (its cost sizes the reservations: images.Lanes); LIROO_PANEL_CONCURRENCY
    caps it when set."""
    fake_gemini.set_latency(0.3, operation="image")
    fake_gemini.answer(script_with(12))  # the model proposes more than the cap
    extra = {"LIROO_PANEL_CONCURRENCY": cap} if cap else {}
    server = start_server(gemini_env(fake_gemini, **extra))
    response = post(server, "/generate_comic", {**APP_COMIC, "text": LONG_TEXT})
    assert response.status_code == 200, response.text
    assert len(response.json()["comic"]["panel_layout"]) == 8
    assert len(fake_gemini.requests("image")) == 8
    assert fake_gemini.max_in_flight == in_flight
    first = response.json()["comic"]["panel_layout"][0]
    assert first["dialogue"] == {"Ria": "Look 1! Wow."}  # lines of one speaker are joined, not lost
    assert response.json()["comic"]["character_style_guide"] == {
        "Ria": "a girl in a yellow raincoat"
    }


def test_a_script_with_too_few_panels_is_bad_output(start_server, fake_gemini):
    fake_gemini.answer(script_with(2))
    server = start_server(gemini_env(fake_gemini))
    response = post(server, "/generate_comic", APP_COMIC)
    assert response.status_code == 502
    assert contract.decode_error(response.json())["code"] == "provider_bad_output"
    assert fake_gemini.requests("image") == []


def test_panels_wait_for_memory_instead_of_failing(start_server, fake_gemini):
    """Room for one floor-sized reservation: the first picture is drawn alone, none fails.

    The floor (LIROO_IMAGE_RESERVE_MB) sizes a picture only until one has been seen;
    later pictures reserve what recent answers held (liroo/generation/images.py), so
    the others may then run together.
    """
    latency = 0.1
    fake_gemini.set_latency(latency, operation="image")
    server = start_server(
        gemini_env(fake_gemini, MEMORY_LIMIT_MB=3000, LIROO_IMAGE_RESERVE_MB=1800)
    )
    response = post(server, "/generate_comic", APP_COMIC)
    assert response.status_code == 200, response.text
    panels = response.json()["comic"]["panel_layout"]
    assert all(p.get("image_url") for p in panels)
    first, second = sorted(r.received_at for r in fake_gemini.requests("image"))[:2]
    assert second - first >= latency  # the second call waited for the first picture's answer


def test_no_room_at_all_is_a_503_after_the_deadline(start_server, fake_gemini):
    server = start_server(
        gemini_env(
            fake_gemini,
            MEMORY_LIMIT_MB=3000,
            LIROO_IMAGE_RESERVE_MB=5000,
            LIROO_RESERVATION_WAIT_S=0.3,
        )
    )
    response = post(server, "/generate_comic", APP_COMIC)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    body = contract.decode_comic(contract.decode_error(response.json()))
    assert body["success"] is False and body["code"] == "memory_pressure"
    assert fake_gemini.requests("image") == []  # refused before any model call


def test_a_failed_panel_is_reported_not_faked(start_server, fake_gemini):
    server = start_server(gemini_env(fake_gemini))
    fake_gemini.fail("http", times=2, status=400, operation="image")  # 400s are not retried
    response = post(server, "/generate_comic", {**APP_COMIC, "text": LONG_TEXT})
    assert response.status_code == 200, response.text
    panels = contract.decode_comic(response.json())["comic"]["panel_layout"]
    missing = [p for p in panels if "image_url" not in p]
    assert len(missing) == 2
    assert all(p["image_error"] == "provider_unavailable" for p in missing)


def test_too_many_failed_panels_fail_the_comic(start_server, fake_gemini):
    server = start_server(gemini_env(fake_gemini))
    fake_gemini.fail("http", times=20, status=400, operation="image")
    rid = "fail-" + uuid.uuid4().hex
    response = post(server, "/generate_comic", APP_COMIC, rid)
    assert response.status_code == 502
    body = contract.decode_error(response.json())
    assert (
        body["success"] is False
        and body["code"] == "provider_unavailable"
        and body["request_id"] == rid
    )
    progress = contract.decode_progress(
        requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    )
    assert (
        progress["status"] == "failed" and progress["success"] is False and progress["error_code"]
    )


def test_progress_is_live_and_a_retry_never_reaches_the_model(start_server, fake_gemini):
    fake_gemini.hold("image", let_through=1)  # one panel drawn, the rest wait for the test
    server = start_server(gemini_env(fake_gemini))
    rid = "live-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, server, "/generate_comic", APP_COMIC, rid)

        def running_with_a_panel():
            body = requests.get(server.url(f"/progress/{rid}"), timeout=5).json()
            assert body.get("status") in (None, "running"), body  # held: it cannot end yet
            return body if body.get("partial", {}).get("panels") else None

        live = contract.decode_progress(
            wait_for(running_with_a_panel, timeout=60, what="live progress")
        )
        assert live["status"] == "running" and live["step_number"] >= 2
        assert 0 < live["progress_percentage"] < 100 and "panel" in live["step"].lower()
        retry_while_running = pool.submit(post, server, "/generate_comic", APP_COMIC, rid)
        fake_gemini.release("image")
        a, b = first.result(), retry_while_running.result()
    assert a.status_code == b.status_code == 200
    assert a.json()["comic"] == b.json()["comic"]
    calls = len(fake_gemini.requests())
    late_retry = post(server, "/generate_comic", APP_COMIC, rid)
    assert late_retry.json()["comic"] == a.json()["comic"]
    assert len(fake_gemini.requests()) == calls  # answered from the stored result
    assert len(fake_gemini.requests("text")) == 1
    done = contract.decode_progress(requests.get(server.url(f"/progress/{rid}"), timeout=5).json())
    assert done["status"] == "succeeded" and done["progress_percentage"] == 100


@pytest.fixture
def redis_db():
    client = redis.Redis(host="127.0.0.1", port=6379, db=3)
    client.flushdb()
    yield "redis://127.0.0.1:6379/3"
    client.flushdb()


def test_two_servers_share_jobs_through_redis(start_server, fake_gemini, redis_db):
    fake_gemini.hold("image")  # it stays running until the other server has been asked
    env = gemini_env(fake_gemini, REDIS_URL=redis_db)
    worker, other = start_server(env), start_server(env)
    rid = "shared-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        doing = pool.submit(post, worker, "/generate_comic", APP_COMIC, rid)

        def running_elsewhere():
            response = requests.get(other.url(f"/progress/{rid}"), timeout=5)
            return (
                response.json()
                if response.status_code == 200 and response.json()["status"] == "running"
                else None
            )

        contract.decode_progress(
            wait_for(running_elsewhere, timeout=60, what="progress on the other server")
        )
        fake_gemini.release("image")
        result = doing.result()
    assert result.status_code == 200
    calls = len(fake_gemini.requests())
    replay = post(other, "/generate_comic", APP_COMIC, rid)  # the retry lands on the other instance
    assert replay.status_code == 200 and replay.headers.get("X-Idempotent-Replay") == "true"
    # The same comic; its local media URLs are made absolute with the asking request's own host.
    assert replay.text.replace(other.base_url, worker.base_url) == result.text.replace(
        other.base_url, worker.base_url
    )
    assert other.base_url + "/media/" in replay.text
    assert len(fake_gemini.requests()) == calls


def test_a_comic_under_pressure_is_served_holding_its_own_pictures(start_server):
    """3072x3072 pictures (27 MB each decoded) under a 220 MB limit: the comic's own pictures in
    hand are what leaves no room for the next, so its panels go fewer at a time, down to one,
    and every panel is drawn. (On main each panel waited LIROO_RESERVATION_WAIT_S for memory its
    own request held, and the comic was refused with 503 memory_pressure.)"""
    with FakeGemini(image_size=(3072, 3072), image_noise=True) as fake:
        fake.answer(script_with(5))
        env = gemini_env(
            fake,
            MEMORY_LIMIT_MB=220,
            WEB_CONCURRENCY=1,
            LIROO_GEMINI_TIMEOUT_S=60,  # 36 MB answers on a loaded machine
            LIROO_WORKER_RECYCLE_MB=100000,
        )
        server = start_server(env)
        response = post(server, "/generate_comic", {**APP_COMIC, "text": LONG_TEXT})
        # On a slow machine the comic may outlive its 55 s deadline: it answers 503 still_working
        # and goes on, and the app's retry of the same body joins it, as the app would.
        for _ in range(3):
            if response.status_code != 503:
                break
            assert response.json()["code"] == "still_working", response.text
            response = post(server, "/generate_comic", {**APP_COMIC, "text": LONG_TEXT})
        assert response.status_code == 200, response.text
        panels = contract.decode_comic(response.json())["comic"]["panel_layout"]
        assert len(panels) == 5 and all(p.get("image_url") for p in panels)
        assert len(fake.requests("image")) == 5  # each drawn once: none refused and redrawn
