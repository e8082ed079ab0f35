"""One table from exceptions to answers (liroo/errors.py), one error answer and its rendering
(liroo/error_answer.py).

A failure reads the same to the app wherever it is met: in a view (Flask's
handler), inside a generation (the runner's recorded body), at the governor's
door (rendered by the app's ``render_error``), or in the worker's own pages.
"""
from __future__ import annotations

import errno
import json

import pytest
from flask import g

from liroo import routes
from liroo.api.runner import failure_answer
from liroo.error_answer import ApiError, ErrorAnswer
from liroo.errors import code_for, door_error
from liroo.generation.context import Cancelled, DeadlineExceeded
from liroo.generation.failures import failure_code
from liroo.governor import Governor, GovernorConfig, MemoryGovernorMiddleware, MemoryPressure
from liroo.governor.probe import MemoryProbe
from liroo.providers.base import ProviderError, RateLimited
from liroo.storage import StorageError
from liroo.worker_contract import interrupted_answer
from tests.cgroupfake import FakeCgroupV2

REQUEST_ID = "errors-test-0001"


@pytest.fixture(scope="module")
def app(offline_app):
    return offline_app


def flask_answer(app, exc: Exception, path: str = "/generate_lecture") -> tuple[int, dict, dict]:
    """What Flask's error handler answers for ``exc`` raised in the view at ``path``."""
    with app.test_request_context(path, method="POST", headers={"X-Request-ID": REQUEST_ID}):
        app.preprocess_request()
        response = app.handle_user_exception(exc)
        return response.status_code, response.get_json(), dict(response.headers)


def generation_answer(app, exc: Exception, path: str = "/generate_lecture") -> tuple[int, dict]:
    """What the runner records (and answers) for a generation at ``path`` that raised ``exc``."""
    with app.test_request_context(path, method="POST", headers={"X-Request-ID": REQUEST_ID}):
        app.preprocess_request()
        return failure_answer(exc, g.request_id, routes.answer_fields())


FAILURES = {
    "api_error": lambda: ApiError(422, "invalid_field", "The field 'x' is not valid.", field="x"),
    "memory_pressure": lambda: MemoryPressure(800.0, 750.0, 5, 100.0),
    "provider": lambda: ProviderError("upstream said no"),
    "provider_rate_limited": lambda: RateLimited("slow down", retry_after_s=7),
    "storage": lambda: StorageError("bucket gone"),
    "disk_full": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "deadline": lambda: DeadlineExceeded(),
    "unexpected": lambda: RuntimeError("secret detail"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_a_failure_reads_the_same_in_a_view_and_in_a_generation(app, name):
    status, body, headers = flask_answer(app, FAILURES[name]())
    recorded_status, recorded = generation_answer(app, FAILURES[name]())
    assert status == recorded_status and status != 200
    assert body["code"] == recorded["code"] and body["error"] == recorded["error"]
    assert "secret detail" not in json.dumps(body) + json.dumps(recorded)
    # The sentence first, then the code (../shared/client-contract.md); a generation's body
    # leads with what ComicResponse decodes first.
    assert list(body)[:2] == ["error", "code"]
    assert list(recorded)[:3] == ["success", "error", "code"] and recorded["success"] is False
    # The generation's body is the view's plus what ComicResponse decodes (success, timestamp).
    assert set(recorded) - set(body) <= {"success", "timestamp", "retry_after_s"}
    assert {k: v for k, v in body.items() if k != "lecture_id"} == {
        k: recorded[k] for k in body if k != "lecture_id"}
    assert body["request_id"] == REQUEST_ID and body["lecture_id"]
    assert ("Retry-After" in headers) == ("retry_after_s" in recorded)
    if "Retry-After" in headers:
        assert recorded["retry_after_s"] == int(headers["Retry-After"])


def test_a_full_disk_is_storage_unavailable_wherever_it_is_met(app):
    status, body, headers = flask_answer(
        app, OSError(errno.ENOSPC, "No space left on device"), "/health"
    )
    assert (status, body["code"]) == (503, "storage_unavailable") and headers["Retry-After"]
    assert "lecture_id" not in body  # a route's own fields only on its own answers


def shed_at_the_door(tmp_path, path: str, **door) -> tuple[str, dict, bytes]:
    """The governor's 503 for a request to ``path`` over the hard limit: status, headers, body."""
    cgroup = FakeCgroupV2(tmp_path, limit_mb=1000, used_mb=800)  # the hard limit is 750 MB
    governor = Governor(GovernorConfig(), probe=MemoryProbe(cgroup.root))
    app = MemoryGovernorMiddleware(
        lambda environ, start_response: [b""],
        governor,
        request_id=lambda environ: REQUEST_ID,
        **door,
    )
    answered = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "wsgi.input": None}
    body = b"".join(
        app(environ, lambda status, headers: answered.update(status=status, headers=headers))
    )
    assert answered["status"] == "503 Service Unavailable"
    return answered["status"], dict(answered["headers"]), body


def test_the_door_answers_in_the_apps_shape_with_the_apps_renderer(app, tmp_path):
    """The governor imports nothing of the app: the app gives it its renderer (errors.door_error),
    and a request shed at the door reads like the same pressure met inside a generation."""
    _, headers, raw = shed_at_the_door(tmp_path, "/generate_lecture", render_error=door_error)
    shed = json.loads(raw)
    assert list(shed) == [
        "success",
        "timestamp",
        "lecture_id",
        "error",
        "code",
        "memory_usage_mb",
        "memory_limit_mb",
        "retry_after_s",
        "request_id",
    ]
    assert headers["Retry-After"] == str(shed["retry_after_s"])
    assert headers["Content-Length"] == str(len(raw)) and headers["X-Request-ID"] == REQUEST_ID

    pressure = MemoryPressure(800.0, 750.0, GovernorConfig().retry_after_s)
    _, recorded = generation_answer(app, pressure)
    assert set(shed) == set(recorded)
    for field in set(shed) - {"timestamp", "lecture_id"}:
        assert shed[field] == recorded[field], field


def test_the_door_without_an_app_answers_plain_json(tmp_path):
    """The governor as a library: its own default body, the sentence first."""
    _, _, raw = shed_at_the_door(tmp_path, "/heavy")
    shed = json.loads(raw)
    assert list(shed) == [
        "error", "code", "memory_usage_mb", "memory_limit_mb", "retry_after_s", "request_id"
    ]
    assert shed["code"] == "memory_pressure" and shed["request_id"] == REQUEST_ID


def test_the_workers_pages_are_whole_http_answers_with_the_error_body():
    page = ErrorAnswer.for_status(408).http_page()
    body = b'{"error": "The request took too long to arrive.", "code": "request_timeout"}'
    assert page == (
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nX-Content-Type-Options: nosniff\r\n\r\n" + body
    )
    with_headers = ErrorAnswer.for_status(503).with_headers(**{"Retry-After": "2"}).http_page()
    assert b"\r\nX-Content-Type-Options: nosniff\r\nRetry-After: 2\r\n\r\n{" in with_headers


def test_an_interrupted_answer_is_rendered_from_the_fields_the_app_left():
    answer = interrupted_answer({"request_id": REQUEST_ID, "lecture_id": "lec-1"})
    body = answer.body()
    assert answer.status == 503
    assert list(body) == ["success", "error", "code", "lecture_id", "request_id", "timestamp"]
    assert (body["code"], body["request_id"], body["lecture_id"]) == (
        "interrupted", REQUEST_ID, "lec-1")
    assert interrupted_answer().body() == {
        "error": "The server restarted while working on this; please retry.",
        "code": "interrupted",
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MemoryPressure(800.0, 750.0, 5), "memory_pressure"),
        (DeadlineExceeded(), "deadline_exceeded"),
        (Cancelled(), "cancelled"),
        (StorageError("bucket gone"), "storage_unavailable"),
        (OSError(errno.ENOSPC, "No space left on device"), "storage_unavailable"),
        (RateLimited("slow down"), "provider_rate_limited"),
        (RuntimeError("unexpected"), None),
    ],
)
def test_one_failed_picture_gets_its_code_from_the_same_table(error, code):
    assert code_for(error) == code
    assert failure_code(error, "image_failed") == (code or "image_failed")
    assert failure_code(None, "image_failed") is None
