"""DELETE /jobs/<id> (cancel) against real gunicorn and the real google-genai SDK on a loopback
Gemini (tests/fake_gemini.py) that holds pictures: after the cancel no model call is made, the
job ends cancelled with its memory reservations released, and only its own caller may cancel it."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.fake_gemini import gemini_env
from tests.servers import wait_for

KEY_A, KEY_B = "cancel-key-aaaa", "cancel-key-bbbb"
TEXT = "Bees carry pollen from flower to flower, and so fruit can grow. Honey is made from nectar."


@pytest.fixture
def server(fake_gemini, start_server):
    return start_server(
        gemini_env(
            fake_gemini,
            LIROO_API_KEYS=f"{KEY_A},{KEY_B}",
            LIROO_PANEL_CONCURRENCY="1",  # one picture at a time: the held one is the only one
            LIROO_IMAGE_CACHE="off",
        )
    )


def key(value: str) -> dict:
    return {"X-API-Key": value}


def outstanding_mb(server) -> float:
    memory = requests.get(server.url("/memory"), timeout=10).json()
    return memory["governor"]["outstanding_reservations_mb"]


def ended(server, rid: str) -> dict:
    """/jobs/<rid> once it no longer runs, read with its owner's key."""

    def look():
        view = requests.get(server.url(f"/jobs/{rid}"), headers=key(KEY_A), timeout=10).json()
        return view if view["status"] != "running" else None

    return wait_for(look, timeout=60, interval=0.1, what=f"job {rid} to end")


def test_a_cancelled_comic_makes_no_further_model_call_and_ends_cancelled(server, fake_gemini):
    fake_gemini.hold("image", let_through=1)  # panel 1 is drawn; panel 2 waits at the model
    rid = "cancel-" + uuid.uuid4().hex
    started = requests.post(
        server.url("/generate_comic"),
        json={"text": TEXT, "level": "beginner"},
        headers={"X-Request-ID": rid, "Prefer": "respond-async", **key(KEY_A)},
        timeout=30,
    )
    assert started.status_code == 202, started.text
    wait_for(lambda: len(fake_gemini.requests("image")) == 2, timeout=60, what="panel 2 held")
    assert outstanding_mb(server) > 0  # the held picture's memory is reserved

    # Another caller, no caller, an unknown id: JSON errors, and the job runs on.
    other = requests.delete(server.url(f"/jobs/{rid}"), headers=key(KEY_B), timeout=10)
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    anonymous = requests.delete(server.url(f"/jobs/{rid}"), timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
    unknown = requests.delete(
        server.url(f"/jobs/cancel-{uuid.uuid4().hex}"), headers=key(KEY_A), timeout=10
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_request"
    malformed = requests.delete(server.url("/jobs/x"), headers=key(KEY_A), timeout=10)
    assert malformed.status_code == 400 and malformed.json()["code"] == "invalid_request_id"

    cancelled = requests.delete(server.url(f"/jobs/{rid}"), headers=key(KEY_A), timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["request_id"] == rid
    fake_gemini.release("image")  # panel 2's answer arrives; panel 3 must never be asked for

    view = ended(server, rid)
    assert view["status"] == "failed" and view["error_code"] == "cancelled", view
    assert view["result_status"] == 409 and view["result"]["code"] == "cancelled"
    wait_for(lambda: outstanding_mb(server) == 0, timeout=30, what="reservations released")
    assert len(fake_gemini.requests("image")) == 2
    assert len(fake_gemini.requests("text")) == 1

    # Cancelling it again answers the same; a retry with the id runs afresh (a failure).
    again = requests.delete(server.url(f"/jobs/{rid}"), headers=key(KEY_A), timeout=10)
    assert again.status_code == 200 and again.json()["error_code"] == "cancelled"


REDIS_URL = "redis://127.0.0.1:6379/6"  # this module's own db (ids are random: nothing flushed)


def stores(tmp_path):
    from liroo.jobs import LocalJobStore, RedisJobStore

    yield LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=60)
    redis_store = RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=60)
    try:
        redis_store.ping()
    except Exception as exc:  # noqa: BLE001 (any failure to reach it)
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield redis_store


def test_both_job_stores_keep_a_cancel_through_progress_and_the_end(tmp_path):
    from liroo.generation.context import Progress
    from liroo.jobs import FAILED

    for store in stores(tmp_path):
        rid = "cancel-" + uuid.uuid4().hex
        assert store.claim(rid, "/generate_comic", "fp").outcome == "new"
        progress = Progress(store, rid, total_steps=3)
        assert not progress.cancel_requested()
        store.cancel(rid)
        progress.advance("Drawing picture 1 of 3")  # a step written after the cancel keeps it
        assert progress.cancel_requested() and store.get(rid).cancel_requested_at > 0
        store.finish(rid, FAILED, 409, {"code": "cancelled"}, error_code="cancelled")
        assert store.get(rid).error_code == "cancelled" and store.cancel_requested(rid)
        # a retry with the id runs afresh, without the old cancel
        assert store.claim(rid, "/generate_comic", "fp").outcome == "new"
        assert not store.cancel_requested(rid)
