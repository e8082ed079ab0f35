"""HTTP calls to a real server (tests/servers.py) the way the app makes them."""

import threading
import uuid

import requests


def new_request_id(prefix: str = "t") -> str:
    """An X-Request-ID no other test sends, so an answer is never replayed from an earlier test."""
    return f"{prefix}-{uuid.uuid4().hex}"


def post(
    server, path: str, body: dict, request_id: str | None = None, timeout: float = 120, **headers
) -> requests.Response:
    """POST ``body`` as JSON to ``path``; ``request_id`` goes as X-Request-ID, and without one the
    request carries none, as the app sends it."""
    if request_id:
        headers["X-Request-ID"] = request_id
    return requests.post(server.url(path), json=body, headers=headers, timeout=timeout)


def fetch(url: str, content_type: str) -> bytes:
    """The bytes at ``url``, which must answer 200 with ``content_type``."""
    response = requests.get(url, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == content_type, url
    return response.content


def post_in_thread(url: str, body: dict, headers: dict | None = None):
    """POST ``body`` (with a fresh request id) from a thread of its own; returns the started
    thread and a dict that gets its ``response``, or the ``error`` that kept it from one."""
    result: dict = {}

    def run():
        try:
            result["response"] = requests.post(
                url,
                json=body,
                headers={"X-Request-ID": new_request_id(), **(headers or {})},
                timeout=120,
            )
        except requests.RequestException as exc:  # recorded so the test fails with the reason
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result
