"""A stopping worker answers what it cannot finish, on real gunicorn with the loopback Gemini made
slow."""

import concurrent.futures
import json
import signal
import socket
import uuid

import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.servers import GunicornServer, wait_for


def newcomer_answer(port: int, status: bytes) -> bytes | None:
    """The answer to a GET /health on a new connection if its status line has ``status``."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while piece := sock.recv(4096):
            answer += piece
    return answer if status in answer.split(b"\r\n", 1)[0] else None


def test_sigterm_answers_a_comic_that_cannot_finish_with_503_interrupted(fake_gemini):
    """Pictures take 12 s, the grace is 8 s (Cloud Run grants 10): the client gets a JSON 503
    `interrupted` with Retry-After before the grace ends, instead of a cut connection; and a
    connection opened during the stop gets a JSON 503 with Retry-After at once."""
    fake_gemini.set_latency(12, operation="image")
    server = GunicornServer(
        gemini_env(fake_gemini, LIROO_GEMINI_TIMEOUT_S=60, LIROO_GRACEFUL_TIMEOUT_S=8)
    ).start()
    rid = "stop-" + uuid.uuid4().hex
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            comic = pool.submit(
                requests.post,
                server.url("/generate_comic"),
                json={
                    "text": "Plants make food from light.",
                    "level": "beginner",
                    "image_style": "Comic Book",
                    "user_token": "device",
                },
                headers={"X-Request-ID": rid},
                timeout=120,
            )
            wait_for(
                lambda: fake_gemini.requests("image"),
                timeout=30,
                what="the pictures to be asked for",
            )
            server.proc.send_signal(signal.SIGTERM)
            # A connection opened during the stop is answered at once (before, no worker accepted
            # it: silence until the grace ended, then a refusal).
            late = wait_for(
                lambda: newcomer_answer(server.port, b" 503 "),
                timeout=5,
                what="a connection opened during the stop to be answered 503",
            )
            assert not comic.done()  # answered while the comic still runs
            head, _, body = late.partition(b"\r\n\r\n")
            assert b"Retry-After: " in head and b"Connection: close" in head
            assert contract.decode_error(json.loads(body))["code"] == "unavailable"
            response = comic.result()
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0 and response.headers["X-Request-ID"] == rid
        body = contract.decode_error(response.json())
        assert body["code"] == "interrupted" and body["request_id"] == rid
        assert body["success"] is False and body["timestamp"]
        assert server.proc.wait(30) == 0  # the master exits cleanly after the grace
        assert "answered 503 interrupted" in server.log()
    finally:
        server.__exit__(None, None, None)
