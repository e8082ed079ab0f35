"""A stopping worker answers what it cannot finish, on real gunicorn with the loopback Gemini made
slow."""

import concurrent.futures
import signal
import uuid

import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.servers import GunicornServer, wait_for


def test_sigterm_answers_a_comic_that_cannot_finish_with_503_interrupted(fake_gemini):
    """Pictures take 12 s, the grace is 8 s (Cloud Run grants 10): the client gets a JSON 503
    `interrupted` with Retry-After before the grace ends, instead of a cut connection."""
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
