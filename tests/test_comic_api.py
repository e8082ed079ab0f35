"""/generate_comic, /generate_image, /progress and /jobs on a real gunicorn with the offline
provider."""

import uuid

import pytest
import requests

from tests import contract
from tests.helpers.bodies import APP_COMIC
from tests.helpers.http import post
from tests.servers import ended_job, sent_twice


@pytest.fixture(scope="module")
def server(offline_server):
    return offline_server


def test_the_apps_comic_request_decodes(server):
    response = post(server, "/generate_comic", APP_COMIC)
    assert response.status_code == 200, response.text
    body = contract.decode_comic(response.json())
    assert body["success"] is True and body["provider"] == "offline"
    panels = body["comic"]["panel_layout"]
    assert 3 <= len(panels) <= 8
    assert [p["panel_id"] for p in panels] == list(range(1, len(panels) + 1))
    assert response.headers["X-Request-ID"] == body["request_id"]
    for panel in panels:  # every picture is really there, as a JPEG
        picture = requests.get(panel["image_url"], timeout=10)
        assert picture.status_code == 200 and picture.headers["Content-Type"] == "image/jpeg"
        assert picture.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("style", ["comic_book", "STUDIO GHIBLI", "pixel_art", "3D Render"])
def test_raw_style_values_and_levels_are_accepted(server, style):
    response = post(
        server,
        "/generate_image",
        {"prompt": "a lighthouse at dusk", "image_style": style, "level": "Intermediate"},
    )
    assert response.status_code == 200, (style, response.text)
    contract.decode_image(response.json())


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"level": "beginner", "image_style": "Comic Book"}, 400, "missing_field"),
        ({"text": "   ", "level": "beginner"}, 422, "empty_text"),
        ({"text": "Plants", "level": "expert"}, 422, "unknown_level"),
        ({"text": "Plants", "image_style": "Cubism"}, 422, "unknown_style"),
        ({"text": "x" * 20_001}, 413, "text_too_long"),
        ({"text": 42}, 422, "invalid_field"),
        (
            {"text": "Plants", "request_id": "../../etc"},
            400,
            "invalid_request_id",
        ),  # as a bad X-Request-ID
    ],
)
def test_bad_comic_requests(server, body, status, code):
    response = post(server, "/generate_comic", body)
    assert response.status_code == status, response.text
    error = contract.decode_error(response.json())
    assert error["code"] == code


JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "method, data, headers, status",
    [
        pytest.param("POST", "{not json", JSON_TYPE, 400, id="not-json"),
        pytest.param("POST", "[1, 2]", JSON_TYPE, 400, id="not-an-object"),
        pytest.param(
            "POST",
            "text=hi",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            id="form-encoded",
        ),
        pytest.param("POST", b'{"text": "\xff\xfe"}', JSON_TYPE, 400, id="not-utf8"),
        pytest.param("GET", None, {}, 405, id="wrong-method"),
    ],
)
def test_bad_bodies(server, method, data, headers, status):
    response = requests.request(
        method, server.url("/generate_comic"), data=data, headers=headers, timeout=10
    )
    assert response.status_code == status, response.text
    contract.decode_error(response.json())


def test_caller_ids_are_used_and_bad_ones_refused(server):
    rid = "app-" + uuid.uuid4().hex
    response = post(server, "/generate_image", {"prompt": "a blue whale", "request_id": rid})
    assert response.json()["request_id"] == rid and response.headers["X-Request-ID"] == rid
    bad = post(
        server, "/generate_image", {"prompt": "a blue whale"}, **{"X-Request-ID": "no/slashes/here"}
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request_id"


def test_progress_after_the_request_and_unknown_ids(server):
    rid = "cmc-" + uuid.uuid4().hex
    response = post(server, "/generate_comic", APP_COMIC, **{"X-Request-ID": rid})
    assert response.status_code == 200
    progress = requests.get(server.url(f"/progress/{rid}"), timeout=10)
    body = contract.decode_progress(progress.json())
    assert body["status"] == "succeeded" and body["progress_percentage"] == 100
    assert body["step_number"] == body["total_steps"]
    missing = requests.get(server.url("/progress/" + uuid.uuid4().hex), timeout=10)
    assert (
        missing.status_code == 404
        and contract.decode_error(missing.json())["code"] == "unknown_request"
    )


def test_retry_with_the_same_id_replays_and_a_different_body_conflicts(server):
    rid, first, second = sent_twice(server, "/generate_comic", APP_COMIC)
    assert second.json()["comic"] == first.json()["comic"]
    other = post(
        server,
        "/generate_comic",
        {**APP_COMIC, "text": "Something else entirely."},
        **{"X-Request-ID": rid},
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_conflict"


def test_a_retry_without_an_id_is_not_paid_twice(server):
    """The app retries with the same body and no id: the retry gets the first answer."""
    body = {**APP_COMIC, "text": "Retries without ids. " + uuid.uuid4().hex}
    first = post(server, "/generate_comic", body)
    retry = post(server, "/generate_comic", body)
    assert first.status_code == retry.status_code == 200
    assert retry.headers.get("X-Idempotent-Replay") == "true"
    assert retry.json()["request_id"] == first.json()["request_id"]
    other_device = post(server, "/generate_comic", {**body, "user_token": "another-device"})
    assert other_device.headers.get("X-Idempotent-Replay") is None
    assert other_device.json()["request_id"] != first.json()["request_id"]


def test_async_mode(server):
    body = {**APP_COMIC, "text": "An async comic. " + uuid.uuid4().hex}
    response = post(server, "/generate_comic", body, Prefer="respond-async")
    assert response.status_code == 202
    rid = response.json()["request_id"]
    assert response.headers["Location"] == f"/jobs/{rid}"
    job = ended_job(server, rid, timeout=60)
    assert job["status"] == "succeeded" and job["result_status"] == 200
    contract.decode_comic(job["result"])
    assert job["result"]["request_id"] == rid
