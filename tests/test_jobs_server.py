"""Jobs on real gunicorn: a killed worker's jobs handed back, progress never shed, replays of
derived ids bounded in time and per caller, and URLs that never carry another request's host.

Real parts: gunicorn on loopback, the loopback Gemini (slow on purpose), the real Redis at
127.0.0.1:6379 (db 11 only, flushed before and after each test that uses it).
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import time
from urllib.parse import urlsplit

import psutil
import pytest
import redis
import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.bodies import APP_PROCESS
from tests.helpers.http import new_request_id
from tests.servers import wait_for

REDIS_DB = 11
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture
def redis_db():
    db = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    db.flushdb()
    yield db
    db.flushdb()


def progress(server, request_id):
    return requests.get(server.url(f"/progress/{request_id}"), timeout=10)


def flashcards(server, **headers):
    return requests.post(
        server.url("/process"),
        json={**APP_PROCESS, "output_format": "flashcards"},
        headers=headers,
        timeout=60,
    )


# --- 12.5: a worker killed outright
# --------------------------------------------------------------------


def worker_talking_to(server, port: int) -> int:
    """The worker process with an open connection to ``port`` (the loopback Gemini)."""
    for pid in server.worker_pids():
        try:
            if any(
                c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp")
            ):
                return pid
        except psutil.NoSuchProcess:
            continue
    return 0


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_killed_workers_job_is_handed_back_at_once(start_server, fake_gemini, redis_db, store):
    env = gemini_env(fake_gemini, **({"REDIS_URL": REDIS_URL} if store == "redis" else {}))
    server = start_server(env)
    fake_gemini.set_latency(120, operation="image")
    request_id = new_request_id("killed")
    body = {"prompt": f"a slow picture {request_id}"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(
            requests.post,
            server.url("/generate_image"),
            json=body,
            headers={"X-Request-ID": request_id},
            timeout=120,
        )
        gemini_port = urlsplit(fake_gemini.url).port
        victim = wait_for(
            lambda: worker_talking_to(server, gemini_port),
            timeout=30,
            what="a worker to be waiting on the model",
        )
        assert progress(server, request_id).json()["status"] == "running"
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(requests.RequestException):
            doomed.result()  # the client's connection dies with the worker: it will retry

    # The master saw the worker die: the job reads as interrupted well before a heartbeat could go
    # stale (30 s), which is how long it read "running" before.
    def handed_back():
        view = progress(server, request_id).json()
        return view["status"] == "failed" and view["error_code"] == "interrupted" and view

    view = contract.decode_progress(
        wait_for(
            handed_back, timeout=15, interval=0.1, what="the dead worker's job to be handed back"
        )
    )
    assert view["success"] is False
    assert f"worker {victim} died with 1 running jobs" in server.log()

    fake_gemini.set_latency(0, operation="image")
    retry = requests.post(
        server.url("/generate_image"), json=body, headers={"X-Request-ID": request_id}, timeout=60
    )
    assert retry.status_code == 200, retry.text
    assert retry.headers.get("X-Idempotent-Replay") is None  # it ran again, at once
    assert progress(server, request_id).json()["status"] == "succeeded"
    if store == "redis":  # the dead worker's index of its jobs is gone with them
        assert not [
            k
            for k in redis_db.keys("liroo:worker:*")
            if redis_db.sismember(k, f"liroo:job:{request_id}")
        ]


# --- 13.2: progress is never shed
# ---------------------------------------------------------------------


def test_progress_answers_while_generation_is_shed(start_server, redis_db):
    """Two instances share Redis; the second is past its memory limit (MEMORY_LIMIT_MB=1)."""
    calm = start_server({"REDIS_URL": REDIS_URL})
    request_id = new_request_id("shed")
    assert flashcards(calm, **{"X-Request-ID": request_id}).status_code == 200
    pressed = start_server({"REDIS_URL": REDIS_URL, "MEMORY_LIMIT_MB": "1"})

    shed = flashcards(pressed, **{"X-Request-ID": new_request_id("shed")})
    assert shed.status_code == 503 and shed.json()["code"] == "memory_pressure"
    for path in (f"/progress/{request_id}", f"/jobs/{request_id}"):
        response = requests.get(pressed.url(path), timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert contract.decode_progress(response.json())["status"] == "succeeded"
    unknown = requests.get(pressed.url(f"/progress/{new_request_id('unknown')}"), timeout=10)
    assert unknown.status_code == 404  # the view's own answer, not the governor's 503
    metrics = requests.get(pressed.url("/metrics"), timeout=10).text
    shed_total = [
        line for line in metrics.splitlines() if line.startswith("liroo_memory_shed_total ")
    ]
    assert float(shed_total[0].split()[1]) == 1  # only the generation request was shed


# --- 13.5 and 12.8: replays of derived ids
# --------------------------------------------------------------

REPLAY_S = 3


def test_a_derived_id_is_replayed_within_the_window_then_runs_afresh(start_server):
    server = start_server({"LIROO_DERIVED_REPLAY_S": str(REPLAY_S)})
    first = flashcards(server)
    assert first.status_code == 200, first.text
    finished = time.time()
    derived = first.json()["request_id"]
    assert derived.startswith("auto-")
    explicit = new_request_id("explicit")
    assert flashcards(server, **{"X-Request-ID": explicit}).status_code == 200

    again = flashcards(server)  # the app's blind retry, seconds later
    assert again.headers.get("X-Idempotent-Replay") == "true"
    assert again.json()["request_id"] == derived

    wait_for(
        lambda: time.time() > finished + REPLAY_S + 0.5,
        timeout=REPLAY_S + 5,
        interval=0.1,
        what="the replay window to pass",
    )
    fresh = flashcards(server)  # the student asks again, on purpose
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers.get("X-Idempotent-Replay") is None
    assert fresh.json()["request_id"] == derived  # the same id, run again
    replay = flashcards(server)  # and that new result is replayed in its own window
    assert replay.headers.get("X-Idempotent-Replay") == "true"
    # An id the caller chose keeps replaying for LIROO_JOB_TTL_S.
    kept = flashcards(server, **{"X-Request-ID": explicit})
    assert kept.status_code == 200 and kept.headers.get("X-Idempotent-Replay") == "true"


def test_a_derived_id_includes_the_callers_address_with_keys_off(start_server):
    # as on Cloud Run: one proxy's X-Forwarded-For
    server = start_server({"LIROO_TRUSTED_PROXIES": "1"})
    mine = flashcards(server, **{"X-Forwarded-For": "198.51.100.7"})
    theirs = flashcards(server, **{"X-Forwarded-For": "203.0.113.9"})
    assert mine.status_code == theirs.status_code == 200
    assert theirs.json()["request_id"] != mine.json()["request_id"]
    # another caller is never replayed my answer
    assert theirs.headers.get("X-Idempotent-Replay") is None
    retry = flashcards(server, **{"X-Forwarded-For": "198.51.100.7"})
    assert retry.headers.get("X-Idempotent-Replay") == "true"
    assert retry.json()["request_id"] == mine.json()["request_id"]


# --- 12.8: URLs never carry another request's Host
# -------------------------------------------------------


def raw_post(server, path: str, body: bytes, host_line: bytes) -> tuple[int, dict]:
    """A POST over a plain socket, so the Host header can be empty or malformed."""
    import json

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\n"
            + host_line
            + b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_a_replay_carries_the_asking_requests_host_not_the_first_ones(offline_server):
    server = offline_server  # BASE_URL unset: URLs come from the request's host
    request_id = new_request_id("host")
    body = {"prompt": "a red kite over a hill"}
    first = requests.post(
        server.url("/generate_image"),
        json=body,
        headers={"X-Request-ID": request_id, "Host": "evil.example"},
        timeout=60,
    )
    assert first.status_code == 200, first.text
    # its own host, for its own answer
    assert first.json()["url"].startswith("http://evil.example/media/")

    replay = requests.post(
        server.url("/generate_image"), json=body, headers={"X-Request-ID": request_id}, timeout=60
    )
    assert replay.headers.get("X-Idempotent-Replay") == "true"
    for url in (
        replay.json()["url"],
        replay.json()["image_url"],
        requests.get(server.url(f"/jobs/{request_id}"), timeout=10).json()["result"]["url"],
    ):
        assert url.startswith(server.base_url + "/media/"), url
        fetched = requests.get(url, timeout=10)
        assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "host_line",
    [b"Host: \r\n", b"Host: bad host!\r\n", b"Host: /media\r\n"],
    ids=["empty", "spaces", "a path"],
)
def test_a_host_no_url_can_be_made_from_is_refused(offline_server, host_line):
    server = offline_server  # one for the three: each is refused and changes nothing
    status, body = raw_post(server, "/generate_image", b'{"prompt": "a lighthouse"}', host_line)
    assert status == 400, body
    assert contract.decode_error(body)["code"] == "invalid_host"
    assert "Traceback" not in server.log()


def test_with_base_url_the_host_header_is_not_used(start_server):
    server = start_server({"BASE_URL": "https://media.liroo.test"})
    status, body = raw_post(server, "/generate_image", b'{"prompt": "a lighthouse"}', b"Host: \r\n")
    assert status == 200, body
    assert body["url"].startswith("https://media.liroo.test/media/")
