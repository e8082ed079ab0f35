"""What the Cloud Run deployment relies on: the startup probe's /ready, and async work only where it
runs.

Real gunicorn on loopback with the offline provider; Redis at 127.0.0.1:6379
(db 8, this file's own), and a port where nothing listens for a Redis that cannot be reached.
Cloud Run itself cannot run here: ``K_SERVICE``, which Cloud Run sets, stands
for it.
"""

from __future__ import annotations

import uuid

import requests

from liroo.settings import Settings
from tests import contract
from tests.helpers.bodies import APP_COMIC
from tests.servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/8"


def test_async_is_off_on_cloud_run_unless_enabled():
    assert Settings.from_env({}).async_enabled is True
    assert Settings.from_env({"K_SERVICE": "liroo-backend"}).async_enabled is False
    assert (
        Settings.from_env({"K_SERVICE": "liroo-backend", "LIROO_ASYNC": "on"}).async_enabled is True
    )
    assert Settings.from_env({"LIROO_ASYNC": "off"}).async_enabled is False


def test_with_async_off_respond_async_is_answered_synchronously_never_202(start_server):
    """On Cloud Run with request-based billing, work after a 202 would starve: the whole answer
    comes at once."""
    server = start_server({"K_SERVICE": "liroo-backend"})
    request_id = "sync-" + uuid.uuid4().hex
    response = requests.post(
        server.url("/generate_comic"),
        json=APP_COMIC,
        timeout=120,
        headers={"Prefer": "respond-async", "X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.text
    assert "Preference-Applied" not in response.headers
    comic = contract.decode_comic(response.json())
    assert comic["success"] is True and comic["request_id"] == request_id


def test_with_async_on_respond_async_answers_202(start_server):
    server = start_server({"K_SERVICE": "liroo-backend", "LIROO_ASYNC": "on"})
    response = requests.post(
        server.url("/generate_comic"),
        json=APP_COMIC,
        timeout=120,
        headers={"Prefer": "respond-async", "X-Request-ID": "async-" + uuid.uuid4().hex},
    )
    assert response.status_code == 202 and response.headers["Preference-Applied"] == "respond-async"


def test_ready_says_whether_the_configured_redis_answers(start_server, offline_server):
    alone = offline_server  # the embedded defaults: no Redis
    assert requests.get(alone.url("/ready"), timeout=10).json()["redis"] == "not configured"
    shared = start_server({"REDIS_URL": REDIS_URL})
    ready = requests.get(shared.url("/ready"), timeout=10)
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"


def test_ready_fails_while_redis_cannot_be_reached_and_health_stays_cheap(start_server):
    # nothing listens there
    server = start_server({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    unready = requests.get(server.url("/ready"), timeout=10)
    assert unready.status_code == 503
    body = unready.json()
    assert body["code"] == "redis_unavailable" and body["error"] and body["redis"] == "unreachable"
    health = requests.get(server.url("/health"), timeout=10)
    assert health.status_code == 200
    contract.decode_health(health.json())
    assert "redis" not in health.json(), (
        "/health never asks Redis: the app calls it before every generation"
    )
