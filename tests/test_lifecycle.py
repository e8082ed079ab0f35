"""Worker lifecycles on real gunicorn: graceful recycling (RSS and request count) and SIGTERM,
with the loopback Gemini making requests slow on purpose."""
import concurrent.futures
import signal
import time
import uuid

import redis
import requests

from tests.fake_gemini import gemini_env
from tests.helpers.workers import workers_seen
from tests.servers import GunicornServer, SteadyLoad, wait_for


def slow_image(server, rid, timeout=120):
    return requests.post(server.url("/generate_image"), json={"prompt": f"a slow picture {rid}"},
                         headers={"X-Request-ID": rid}, timeout=timeout)


def in_flight(fake, n=1):
    return lambda: len(fake.requests("image")) >= n


def test_a_long_request_survives_its_workers_recycling(start_server, fake_gemini):
    """The worker retires for memory while a request runs for longer than the SIGTERM grace:
    the request finishes, and a replacement serves new requests meanwhile."""
    fake_gemini.set_latency(5, operation="image")
    server = start_server(gemini_env(
        fake_gemini, WEB_CONCURRENCY=1, LIROO_GRACEFUL_TIMEOUT_S=1, LIROO_WORKER_RECYCLE_MB=1,
        LIROO_RECYCLE_CHECK_INTERVAL_S=0.2, LIROO_RECYCLE_STRIKES=2, LIROO_RECYCLE_MIN_AGE_S=1))
    original = set(server.worker_pids())
    rid = "long-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(slow_image, server, rid)
        wait_for(in_flight(fake_gemini), timeout=30, what="the slow request to reach the model")
        wait_for(lambda: "retiring worker" in server.log(), timeout=30, what="the worker to retire")
        # A replacement is already accepting while the old worker drains.
        wait_for(
            lambda: set(server.worker_pids()) - original, timeout=30, what="a replacement worker"
        )
        assert requests.get(server.url("/"), timeout=10).status_code == 200
        response = slow.result()
    assert response.status_code == 200, response.text
    assert response.json()["url"]


def steady_count(server, count: int, hold_s: float):
    """A predicate for wait_for: true once the master has had exactly ``count`` children for
    ``hold_s`` seconds without a break (a count that only passes through ``count`` does not do)."""
    since = [None]

    def held():
        if len(server.worker_pids()) != count:
            since[0] = None
            return False
        since[0] = since[0] or time.monotonic()
        return time.monotonic() - since[0] >= hold_s

    return held


def test_a_recycling_storm_fails_nothing_and_leaves_the_configured_worker_count(start_server):
    """Request-count recycling under steady load: no request fails. Both workers reach their
    limit together, again and again, so one retires as soon as the other has gone (the race that
    used to leave an extra worker each time): afterwards the master's children are back to
    WEB_CONCURRENCY and stay there."""
    server = start_server(
        {
            "WEB_CONCURRENCY": "2",
            "LIROO_MAX_REQUESTS": "20",
            "LIROO_MAX_REQUESTS_JITTER": "0",
            "LIROO_RECYCLE_CHECK_INTERVAL_S": "0.1",
        }
    )
    storm = workers_seen(server, in_all=8)  # the first two and six replacements
    with SteadyLoad(server, path="/health", clients=6) as load:
        wait_for(storm, timeout=120, interval=0.05, what="six request-count recycles")
    assert "retiring worker" in server.log() and "max_requests" in server.log()
    assert not load.failures, load.failures[:5]
    assert load.answered > 100
    # Every retiring worker drains in well under a second here (only /health was asked for).
    wait_for(steady_count(server, 2, hold_s=3), timeout=30, interval=0.1,
             what="2 workers, steadily")
    # ...and never by the master killing an extra worker it had started by mistake.
    assert "was sent" not in server.log()


def test_sigterm_lets_a_short_request_finish(fake_gemini):
    fake_gemini.set_latency(2, operation="image")
    server = GunicornServer(gemini_env(fake_gemini)).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(slow_image, server, "term-" + uuid.uuid4().hex)
            wait_for(in_flight(fake_gemini), timeout=30, what="the request to reach the model")
            server.proc.send_signal(signal.SIGTERM)
            response = slow.result()
        assert response.status_code == 200, response.text
        assert server.proc.wait(30) == 0
    finally:
        server.__exit__(None, None, None)


def test_sigterm_hands_back_work_that_cannot_finish(fake_gemini):
    """A request longer than the grace is marked interrupted, so the app's retry on another
    instance runs it at once instead of waiting for a dead owner."""
    db = redis.Redis(host="127.0.0.1", port=6379, db=4)
    db.flushdb()
    env = gemini_env(fake_gemini, REDIS_URL="redis://127.0.0.1:6379/4", LIROO_GRACEFUL_TIMEOUT_S=4)
    fake_gemini.set_latency(60, operation="image")
    rid = "handback-" + uuid.uuid4().hex
    first = GunicornServer(env).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            doomed = pool.submit(slow_image, first, rid)
            wait_for(in_flight(fake_gemini), timeout=30, what="the request to reach the model")
            first.proc.send_signal(signal.SIGTERM)
            first.proc.wait(30)
            try:
                doomed.result()
            except requests.RequestException:
                pass  # the connection is cut: the app will retry
        fake_gemini.set_latency(0, operation="image")
        with GunicornServer(env) as second:
            progress = requests.get(second.url(f"/progress/{rid}"), timeout=10).json()
            assert progress["status"] == "failed" and progress["error_code"] == "interrupted"
            retry = slow_image(second, rid, timeout=60)
            assert retry.status_code == 200, retry.text
            assert retry.headers.get("X-Idempotent-Replay") is None  # it ran again
    finally:
        first.__exit__(None, None, None)
        db.flushdb()
