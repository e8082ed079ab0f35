"""Deadlines and shares at the door, in the real app under real gunicorn (two workers).

As in test_admission_server.py, LIROO_IMAGE_RESERVE_MB is set so that one
picture fits at a time, and the loopback Gemini holds pictures so that
requests line up at the door behind one that runs.
"""

import math

import pytest
import requests

from tests.helpers.door import admission, one_picture_at_a_time
from tests.helpers.http import post_in_thread
from tests.servers import GunicornServer, wait_for

DEADLINE_S = 20
LATENCY_S = 3.0


def joins_the_line_or_is_answered(server, body: dict, headers: dict | None = None):
    """Sends a picture request; returns (thread, result, whether it is waiting in the line)."""
    before = admission(server)["queue_length"]
    thread, result = post_in_thread(server.url("/generate_image"), body, headers)
    wait_for(
        lambda: (
            "response" in result or "error" in result or admission(server)["queue_length"] > before
        ),
        timeout=30,
        what="the request to join the line or be answered",
    )
    return thread, result, "response" not in result and "error" not in result


@pytest.fixture(scope="module")
def server(module_fake_gemini):
    env = one_picture_at_a_time(
        module_fake_gemini,
        queue=12,
        LIROO_DEADLINE_S=DEADLINE_S,
        LIROO_GEMINI_TIMEOUT_S=60,
    )
    with GunicornServer(env=env) as running:
        yield running


def test_a_newcomer_whose_turn_would_come_too_late_is_refused_at_once(server, module_fake_gemini):
    """With one picture running and others waiting, a newcomer whose place in line times the
    measured service time passes its deadline gets its 503 at once, with a Retry-After that is
    that expected wait; a client's shorter deadline (X-Request-Timeout-Ms) is honoured too."""
    fake = module_fake_gemini
    fake.reset()
    fake.set_latency(LATENCY_S, operation="image")
    learned = requests.post(server.url("/generate_image"), json={"prompt": "a kite"}, timeout=60)
    assert learned.status_code == 200
    # What the door learned from it, in every worker (as the client saw it, where nothing is).
    service_s = admission(server).get("service_s", learned.elapsed.total_seconds())
    assert service_s is not None and service_s >= LATENCY_S  # measured, in every worker

    fake.hold("image")
    waiting = [post_in_thread(server.url("/generate_image"), {"prompt": "picture 0"})]
    wait_for(lambda: len(fake.requests("image")) == 2, timeout=30, what="a picture to run")
    refused = None
    try:
        for i in range(1, 8):  # a refusal comes at the sixth place or earlier
            thread, result, queued = joins_the_line_or_is_answered(
                server, {"prompt": f"picture {i}"}
            )
            waiting.append((thread, result))
            if not queued:
                refused = result["response"]
                break
        assert refused is not None, "every newcomer queued, however late its turn would come"
        figures = admission(server)
        place, running = figures["queue_length"], figures.get("running")
        assert running == 1
        expected_wait = (place + 1) * service_s / running
        # Refused only because its turn would come after its deadline less its own service.
        assert expected_wait > DEADLINE_S - service_s - 1
        assert (place * service_s) <= DEADLINE_S - service_s + 1
        assert refused.status_code == 503 and refused.json()["code"] == "memory_pressure"
        retry_after = int(refused.headers["Retry-After"])
        assert math.ceil(expected_wait - 0.01) <= retry_after <= math.ceil(expected_wait + 0.01)
        assert refused.json()["retry_after_s"] == retry_after

        # The client's own, shorter deadline: no time to wait behind a running picture, so it is
        # refused at once, where the same request without the header waits its turn (above).
        _, short, queued = joins_the_line_or_is_answered(
            server, {"prompt": "in a hurry"}, {"X-Request-Timeout-Ms": "2000"}
        )
        assert not queued and short["response"].status_code == 503
    finally:
        fake.release()
        for thread, _ in waiting:
            thread.join(120)
    for _, result in waiting:
        assert result["response"].status_code in (200, 503), result


def test_a_malformed_request_timeout_is_a_json_400(server):
    response = requests.post(
        server.url("/generate_image"),
        json={"prompt": "a kite"},
        headers={"X-Request-Timeout-Ms": "soon"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request_timeout" and response.json()["error"]


def test_one_caller_cannot_take_every_place_in_the_line(start_server, fake_gemini):
    """Without a rate limit, one API key fills only its share of the door's line (here 2 of 4);
    another caller still gets a place."""
    server = start_server(
        one_picture_at_a_time(
            fake_gemini,
            queue=4,
            LIROO_ADMISSION_CALLER_SHARE=0.5,
            LIROO_API_KEYS="key-one,key-two",
            LIROO_GEMINI_TIMEOUT_S=60,
        )
    )
    one = {"Authorization": "Bearer key-one"}
    fake_gemini.hold("image")
    waiting = [post_in_thread(server.url("/generate_image"), {"prompt": "running"}, one)]
    try:
        wait_for(lambda: len(fake_gemini.requests("image")) == 1, timeout=30, what="a picture")
        for i in range(2):
            thread, result, queued = joins_the_line_or_is_answered(
                server, {"prompt": f"one {i}"}, one
            )
            waiting.append((thread, result))
            assert queued
        thread, result, queued = joins_the_line_or_is_answered(server, {"prompt": "one more"}, one)
        waiting.append((thread, result))
        assert not queued and result["response"].status_code == 503
        assert result["response"].headers["Retry-After"]
        thread, result, queued = joins_the_line_or_is_answered(
            server, {"prompt": "another caller"}, {"X-API-Key": "key-two"}
        )
        waiting.append((thread, result))
        assert queued, "another caller found the line full"
    finally:
        fake_gemini.release()
        for thread, _ in waiting:
            thread.join(120)
