"""Retries cost nothing: a stored answer is replayed past a shut memory door, on any instance, and
retries of a running request join it without holding the worker's threads.

Real parts: gunicorn on loopback, the real Redis at 127.0.0.1:6379 (db 14, this file's own,
flushed before and after each test that uses it), the loopback Gemini holding pictures for the
joins.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import uuid

import pytest
import redis
import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.bodies import APP_COMIC, APP_PROCESS
from tests.helpers.http import post
from tests.servers import GunicornServer, wait_for

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def redis_db():
    db = redis.Redis.from_url(REDIS_URL)
    db.flushdb()
    yield db
    db.flushdb()


COMIC = "/generate_comic"


def a_comic() -> dict:
    return {**APP_COMIC, "text": f"{APP_COMIC['text']} Story {uuid.uuid4().hex}."}


def parked_joins(pool, fake_gemini, body, first_server, join_server, count):
    """The comic of ``body`` started on ``first_server`` (its pictures held by the test), then
    ``count`` joins of it sent to ``join_server`` and each parked in that worker's loop; a join
    refused or answered before the comic is made fails the wait."""
    first = pool.submit(post, first_server, COMIC, body)
    wait_for(lambda: fake_gemini.requests("image"), timeout=60, what="the comic's pictures")
    joins = [pool.submit(post, join_server, COMIC, body) for _ in range(count)]
    wait_for(
        lambda: (
            join_server.log().count("parked in the worker's loop") >= count
            or any(j.done() for j in joins)
        ),
        timeout=60,
        what="every join to be parked",
    )
    return first, joins


def test_a_stored_answer_is_replayed_past_a_shut_memory_door_on_another_instance(
    start_server, redis_db
):
    """The answer was made on one instance; the app's retry lands on another that is over its
    memory limit (MEMORY_LIMIT_MB=1: the door refuses all new work)."""
    calm = start_server({"REDIS_URL": REDIS_URL})
    pressed = start_server({"REDIS_URL": REDIS_URL, "MEMORY_LIMIT_MB": "1"})
    body = a_comic()
    first = post(calm, COMIC, body)  # no id, as the app sends it
    assert first.status_code == 200, first.text
    chosen = "chosen-" + uuid.uuid4().hex
    flashcards = {**APP_PROCESS, "output_format": "flashcards"}
    assert post(calm, "/process", flashcards, chosen).status_code == 200

    refused = post(pressed, COMIC, a_comic())
    assert refused.status_code == 503 and refused.json()["code"] == "memory_pressure"

    again = post(pressed, COMIC, body)
    assert again.status_code == 200, again.text
    assert again.headers.get("X-Idempotent-Replay") == "true"
    # one derived id on both instances: the secret they share through Redis
    assert again.json()["request_id"] == first.json()["request_id"]
    contract.decode_comic(again.json())
    # the same comic; its media URLs carry the asking request's own host
    assert again.text.replace(pressed.base_url, calm.base_url) == first.text
    kept = post(pressed, "/process", flashcards, chosen)
    assert kept.status_code == 200 and kept.headers.get("X-Idempotent-Replay") == "true"
    # a different body under a taken id is not a replay: it goes on to the shut door
    conflict = post(pressed, COMIC, a_comic(), chosen)
    assert conflict.status_code == 503 and conflict.json()["code"] == "memory_pressure", (
        conflict.text
    )
    assert conflict.headers.get("X-Idempotent-Replay") is None
    assert "Traceback" not in calm.log() + pressed.log()


JOINS = 60


def test_sixty_joins_of_a_slow_comic_leave_the_server_answering(start_server, fake_gemini):
    """One worker with 4 threads: 60 joins that each held a thread (or were refused past a cap)
    would leave /health unanswered; parked in the worker's loop they hold none, and each gets
    the comic once it is made."""
    server = start_server(gemini_env(fake_gemini, WEB_CONCURRENCY="1", LIROO_THREADS="4"))
    fake_gemini.hold("image")  # the comic runs until the test releases its pictures
    body = a_comic()
    with concurrent.futures.ThreadPoolExecutor(JOINS + 1) as pool:
        # the app's retries, each parked while the comic is made
        first, joins = parked_joins(pool, fake_gemini, body, server, server, JOINS)
        # While they wait for the comic: cheap routes and new work answer at once.
        for path in ("/health", "/openapi.json", "/health"):
            assert requests.get(server.url(path), timeout=5).status_code == 200
        fresh = requests.post(
            server.url("/process"), json={**APP_PROCESS, "output_format": "flashcards"}, timeout=5
        )
        assert fresh.status_code == 200, fresh.text
        assert not first.done()
        assert not any(j.done() for j in joins), [j.result().text for j in joins if j.done()][:2]
        fake_gemini.release("image")
        answer = first.result()
        results = [j.result() for j in joins]
    assert answer.status_code == 200, answer.text
    assert [r.status_code for r in results] == [200] * JOINS, [r.text for r in results if r.ok]
    for response in results:
        assert response.headers.get("X-Idempotent-Replay") == "true"
        assert response.json()["comic"] == answer.json()["comic"]
    assert "Traceback" not in server.log()


def test_joins_on_another_instance_are_woken_through_redis_without_a_door(
    start_server, fake_gemini, redis_db
):
    """The comic runs on one instance; its retries land on another (no memory door there:
    LIROO_GOVERNOR=off), which parks them with its 2 threads free, and Redis's message of the
    end wakes them."""
    env = gemini_env(fake_gemini, REDIS_URL=REDIS_URL)
    running = start_server(env)
    other = start_server(
        {**env, "LIROO_GOVERNOR": "off", "WEB_CONCURRENCY": "1", "LIROO_THREADS": "2"}
    )
    fake_gemini.hold("image")
    body = a_comic()
    with concurrent.futures.ThreadPoolExecutor(11) as pool:
        first, joins = parked_joins(pool, fake_gemini, body, running, other, 10)
        assert requests.get(other.url("/health"), timeout=5).status_code == 200
        assert not any(j.done() for j in joins), [j.result().text for j in joins if j.done()][:2]
        fake_gemini.release("image")
        answer = first.result()
        results = [j.result() for j in joins]
    assert answer.status_code == 200, answer.text
    assert [r.status_code for r in results] == [200] * 10
    for response in results:  # the same comic; its media URLs carry the asking instance's host
        assert response.headers.get("X-Idempotent-Replay") == "true"
        same = json.loads(response.text.replace(other.base_url, running.base_url))
        assert same["comic"] == answer.json()["comic"]
    assert "Traceback" not in running.log() + other.log()


def test_a_stopping_worker_answers_its_parked_joins_at_once(fake_gemini):
    """SIGTERM while joins are parked: each gets a JSON 503 with Retry-After (its retry joins the
    work elsewhere), and the workers stop without waiting for them."""
    server = GunicornServer(
        gemini_env(fake_gemini, LIROO_GRACEFUL_TIMEOUT_S=3, WEB_CONCURRENCY=1)
    ).start()
    fake_gemini.hold("image")
    body = a_comic()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            first, joins = parked_joins(pool, fake_gemini, body, server, server, 5)
            assert not any(j.done() for j in joins)
            server.proc.send_signal(signal.SIGTERM)
            results = [j.result() for j in joins]
            first.result()
            fake_gemini.release("image")
        for response in results:
            assert response.status_code == 503, response.text
            assert contract.decode_error(response.json())["code"] == "unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        assert server.proc.wait(30) == 0
        assert "Traceback" not in server.log()
    finally:
        fake_gemini.release("image")
        server.__exit__(None, None, None)


# --- the layer itself, without sockets
# -----------------------------------------------------------------


def layer_around(max_body_bytes: int = 1024):
    """A ReplayLayer over a one-route app whose look never finds anything; records what each
    side was given."""
    from flask import Flask

    from liroo.api.claims import NotStored
    from liroo.api.replay import ReplayLayer
    from liroo.requestid import REPLAY_LOOKED

    flask_app = Flask(__name__)
    flask_app.add_url_rule("/generate_comic", "comic", lambda: "", methods=["POST"])
    seen = {"looked": [], "door": []}

    def look(environ, start_response):
        seen["looked"].append(environ["wsgi.input"].read())
        raise NotStored()

    def door(environ, start_response):
        parts = []
        try:  # as werkzeug reads: until an empty read
            while part := environ["wsgi.input"].read(65536):
                parts.append(part)
            body = b"".join(parts)
        except OSError as exc:
            body = (b"".join(parts), exc)
        seen["door"].append((body, environ.get(REPLAY_LOOKED, False)))
        return [b""]

    return ReplayLayer(flask_app, look, door, max_body_bytes), seen


def environ_for(path: str, body: bytes = b"", method: str = "POST") -> dict:
    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(
        path=path, method=method, data=body, content_type="application/json"
    ).get_environ()


def test_a_request_the_look_does_not_answer_reaches_the_door_with_its_body():
    layer, seen = layer_around()
    layer(environ_for("/generate_comic", b'{"text": "x"}'), lambda *args: None)
    assert seen["looked"] == [b'{"text": "x"}']
    assert seen["door"] == [(b'{"text": "x"}', True)]  # its rate-limit budget spent by the look


def test_only_bodies_the_app_may_read_are_looked_at():
    layer, seen = layer_around(max_body_bytes=8)
    for environ in (
        environ_for("/generate_comic", b'{"text": "too long"}'),  # over the body limit
        environ_for("/generate_comic", method="GET"),
        environ_for("/nowhere", b"{}"),
    ):
        layer(environ, lambda *args: None)
    assert seen["looked"] == [] and len(seen["door"]) == 3


def test_a_body_that_failed_to_arrive_fails_the_same_way_behind_the_door():
    class Broken:
        def __init__(self):
            self.sent = False

        def read(self, size=-1):
            if self.sent:
                raise OSError("the client went away")
            self.sent = True
            return b'{"te'

    layer, seen = layer_around()
    environ = environ_for("/generate_comic", b'{"text": "x"}')
    environ["wsgi.input"] = Broken()
    layer(environ, lambda *args: None)
    assert seen["looked"] == []
    read, error = seen["door"][0][0]  # as far as it came, then the same error
    assert read == b'{"te' and str(error) == "the client went away"
