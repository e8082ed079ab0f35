"""One table from exceptions to answers, one error-body shape (liroo/errors.py).

A failure reads the same to the app wherever it is met: in a view (Flask's
handler), inside a generation (the runner's recorded body), or at the
governor's door (its own 503, built without the app's code).
"""
from __future__ import annotations

import errno
import json

import pytest
from flask import g

from liroo import api
from liroo.api.runner import failure_answer
from liroo.errors import ApiError
from liroo.generation.context import DeadlineExceeded
from liroo.governor import Governor, GovernorConfig, MemoryGovernorMiddleware, MemoryPressure
from liroo.governor.probe import MemoryProbe
from liroo.providers.base import ProviderError, RateLimited
from liroo.storage import StorageError
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
        return failure_answer(exc, g.request_id, api.answer_fields())


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


def test_the_governors_503_has_the_shape_of_the_apps(app, tmp_path):
    """The governor imports nothing of the app, so it builds its 503 itself: same fields, same
    words."""
    cgroup = FakeCgroupV2(tmp_path, limit_mb=1000, used_mb=800)  # the hard limit is 750 MB
    governor = Governor(GovernorConfig(), probe=MemoryProbe(cgroup.root))
    door = MemoryGovernorMiddleware(
        lambda environ, start_response: [b""],
        governor,
        request_id=lambda environ: REQUEST_ID,
        extra_fields=api.shed_fields,
    )
    answered = {}
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/generate_lecture",
        "wsgi.input": None,
        "CONTENT_LENGTH": "0",
    }
    shed = json.loads(
        b"".join(door(environ, lambda status, headers: answered.update(status=status)))
    )
    assert answered["status"].startswith("503")

    pressure = MemoryPressure(800.0, 750.0, governor.config.retry_after_s)
    _, recorded = generation_answer(app, pressure)
    assert set(shed) == set(recorded)
    for field in (
        "error",
        "code",
        "memory_usage_mb",
        "memory_limit_mb",
        "retry_after_s",
        "request_id",
        "success",
    ):
        assert shed[field] == recorded[field], field
