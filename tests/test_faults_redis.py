"""Redis unavailable: generation keeps working on one instance, progress degrades to in-process,
logged.

Decision (liroo/jobs/fallback.py, FallbackJobStore): with REDIS_URL set and Redis
unreachable, jobs are claimed in the instance's local store, so requests are
served, progress and idempotent retries work on this instance, and one
WARNING says so; Redis is tried again at most every few seconds and new jobs
go back to it once it answers. The rate limit (liroo/ratelimits.py) and Gemini
pacing fall back to the instance's own count the same way.

Real parts only: gunicorn servers on loopback, and redis-server processes this
file starts on free ports and kills mid-test (a server pointed at a port where
nothing listens stands for a Redis that is gone from the start).
"""

from __future__ import annotations

import concurrent.futures
import logging
import subprocess
import threading
import time

import pytest
import redis
import requests

from liroo.jobs import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    FallbackJobStore,
    JobStoreUnavailable,
    LocalJobStore,
    RedisJobStore,
)
from tests import contract
from tests.helpers.bodies import APP_COMIC, APP_PROCESS
from tests.helpers.http import new_request_id, post
from tests.servers import free_port, slow_pictures_env, wait_for

OUTAGE = "Redis cannot be used"
RECOVERY = "Redis answers again"


class RedisProcess:
    """A throwaway redis-server on a loopback port: no persistence, so a restart starts empty."""

    def __init__(self, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = args  # more redis-server options, e.g. ("--replicaof", "127.0.0.1", "6390")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProcess":
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        wait_for(client.ping, timeout=20, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_process():
    process = RedisProcess().start()
    yield process
    process.kill()


def progress(server, request_id):
    return requests.get(server.url(f"/progress/{request_id}"), timeout=10)


def flashcards(server, request_id):
    return post(server, "/process", {**APP_PROCESS, "output_format": "flashcards"}, request_id)


# --- the store itself
# ----------------------------------------------------------------------------------


def test_the_store_degrades_moves_running_jobs_and_recovers(redis_process, tmp_path, caplog):
    store = FallbackJobStore(
        RedisJobStore(redis_process.url, ttl_s=60, running_ttl_s=120),
        LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120),
        retry_s=0.0,
    )  # try Redis again on every call, so the test needs no waiting
    shared = redis_process.client()
    caplog.set_level(logging.INFO, logger="liroo.jobs")

    before = new_request_id("before")
    assert store.claim(before, "/generate_comic", "fp").outcome == "new"
    store.progress(before, "Drawing panel 1 of 3", 1, 5)
    assert shared.exists(f"liroo:job:{before}")  # a normal job lives in Redis

    redis_process.kill()
    # The running job's next update moves it to the local store, with its progress.
    store.progress(before, "Drawing panel 2 of 3", 2, 5, "panel 2")
    job = store.get(before)
    assert (job.status, job.step, job.step_number) == (RUNNING, "Drawing panel 2 of 3", 2)
    store.heartbeat([before])
    store.finish(before, SUCCEEDED, 200, {"success": True})
    assert store.get(before).result() == (200, {"success": True})
    assert store.claim(before, "/generate_comic", "fp").outcome == "finished"  # a retry is replayed

    during = new_request_id("during")
    assert store.claim(during, "/generate_image", "fp").outcome == "new"
    assert store.claim(during, "/generate_image", "fp").outcome == "running"
    assert store.claim(during, "/generate_image", "other").outcome == "conflict"
    store.finish(
        during, FAILED, 502, {"error": "x", "code": "provider_unavailable"}, "provider_unavailable"
    )
    assert store.get(during).error_code == "provider_unavailable"
    outage_warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and OUTAGE in r.getMessage()
    ]
    assert len(outage_warnings) == 1  # once per outage, not once per call

    redis_process.start()  # the same port, empty (no persistence)
    shared = redis_process.client()
    after = new_request_id("after")
    assert store.claim(after, "/generate_tts", "fp").outcome == "new"
    assert shared.exists(f"liroo:job:{after}")  # new jobs are shared again
    store.progress(after, "Reading", 1, 2)  # its first plain write: the outage is over
    assert store.get(during).status == FAILED  # jobs of the outage stay answerable here
    assert store.get(before).status == SUCCEEDED
    assert any(RECOVERY in r.getMessage() for r in caplog.records)


def test_while_down_redis_is_tried_at_most_every_retry_interval(tmp_path):
    calls = []

    class CountingRedis(RedisJobStore):
        def get(self, request_id):
            calls.append(request_id)
            return super().get(request_id)

    store = FallbackJobStore(
        CountingRedis(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60, running_ttl_s=120),
        LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120),
        retry_s=3600,
    )
    for _ in range(5):
        with pytest.raises(JobStoreUnavailable):  # not "unknown": it may be running elsewhere
            store.get(new_request_id("unknown"))
    assert len(calls) == 1 and not store.redis_available


def test_while_redis_cannot_be_asked_a_job_is_never_unknown(redis_process, tmp_path):
    def instance(name):
        return FallbackJobStore(
            RedisJobStore(redis_process.url, ttl_s=60, running_ttl_s=120),
            LocalJobStore(str(tmp_path / f"{name}.sqlite3"), ttl_s=60, running_ttl_s=120),
            retry_s=3600,
        )

    here, elsewhere = instance("here"), instance("elsewhere")
    mine, theirs = new_request_id("mine"), new_request_id("theirs")
    assert here.claim(mine, "/generate_comic", "fp").outcome == "new"
    here.progress(mine, "Drawing panel 2 of 3", 3, 5, partial={"panels": [{"n": 1}]})
    assert elsewhere.claim(theirs, "/generate_comic", "fp").outcome == "new"

    redis_process.kill()
    # The first read that finds Redis gone moves this process's running jobs here, as they were.
    job = here.get(mine)
    assert (job.status, job.step, job.step_number) == (RUNNING, "Drawing panel 2 of 3", 3)
    assert job.partial_items() == {"panels": [{"n": 1}]}
    for unknown_here in (theirs, new_request_id("unknown")):
        with pytest.raises(JobStoreUnavailable) as refused:
            here.get(unknown_here)
        assert refused.value.code == 503 and refused.value.retry_after >= 1


# --- real servers
# --------------------------------------------------------------------------------------


def test_a_server_whose_redis_is_gone_still_serves_and_answers_progress(start_server):
    # nothing listens there
    server = start_server({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    comic_id = new_request_id("noredis")
    response = post(server, "/generate_comic", APP_COMIC, comic_id)
    assert response.status_code == 200, response.text
    body = contract.decode_comic(response.json())
    assert body["success"] is True and body["request_id"] == comic_id
    done = contract.decode_progress(progress(server, comic_id).json())
    assert done["status"] == "succeeded" and done["progress_percentage"] == 100
    # idempotency still holds on this instance
    retry = post(server, "/generate_comic", APP_COMIC, comic_id)
    assert (
        retry.headers.get("X-Idempotent-Replay") == "true"
        and retry.json()["comic"] == body["comic"]
    )
    assert OUTAGE in server.log()
    assert "Traceback" not in server.log()


def test_redis_killed_mid_run_degrades_then_recovers(start_server, redis_process):
    server = start_server({"REDIS_URL": redis_process.url, "LIROO_RATE_LIMIT": "1000 per minute"})
    shared = redis_process.client()

    before = new_request_id("before")
    assert post(server, "/generate_comic", APP_COMIC, before).status_code == 200
    assert shared.exists(f"liroo:job:{before}")
    assert OUTAGE not in server.log()

    redis_process.kill()
    during = new_request_id("during")
    response = post(server, "/generate_comic", APP_COMIC, during)
    assert response.status_code == 200, response.text
    assert contract.decode_comic(response.json())["success"] is True
    assert contract.decode_progress(progress(server, during).json())["status"] == "succeeded"
    # held by Redis, which is gone: the degradation, a 503 to retry (never "unknown")
    gone = progress(server, before)
    assert gone.status_code == 503 and int(gone.headers["Retry-After"]) >= 1, gone.text
    assert contract.decode_error(gone.json())["code"] == "job_store_unavailable"
    assert OUTAGE in server.log()

    redis_process.start()
    shared = redis_process.client()

    def new_jobs_reach_redis():
        # Every worker that saw the outage logs its end once it is asked again; probes land on both.
        probe = new_request_id("probe")
        assert flashcards(server, probe).status_code == 200
        return shared.exists(f"liroo:job:{probe}") and RECOVERY in server.log()

    wait_for(new_jobs_reach_redis, timeout=60, interval=0.5, what="new jobs to go back to Redis")
    assert contract.decode_progress(progress(server, during).json())["status"] == "succeeded"
    assert "Traceback" not in server.log()


def test_the_rate_limit_falls_back_to_the_instances_count_without_redis(start_server):
    server = start_server(
        {
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "LIROO_RATE_LIMIT": "2 per minute",
            "WEB_CONCURRENCY": "2",
        }
    )  # two workers, one count: the instance's

    def fresh(request_id):  # a new connection each time, so both workers are asked
        return post(
            server,
            "/process",
            {**APP_PROCESS, "output_format": "flashcards"},
            request_id,
            Connection="close",
        )

    statuses = [fresh(new_request_id("limit")).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429], statuses
    refused = fresh(new_request_id("limit"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert contract.decode_error(refused.json())["code"] == "rate_limited"
    assert "the rate limit counts on this instance alone" in server.log()
    assert "Traceback" not in server.log()


# --- a Redis that answers, but wrongly
# ------------------------------------------------------------------


class GarbageServer:
    """A TCP server on a loopback port answering every connection with bytes that are not RESP."""

    def __init__(self) -> None:
        import socketserver
        import threading

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    while self.request.recv(65536):
                        self.request.sendall(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
                        )
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"redis://127.0.0.1:{self._server.server_address[1]}/0"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def kill(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_only_replica():
    primary = RedisProcess().start()
    replica = RedisProcess(
        None, "--replicaof", "127.0.0.1", str(primary.port), "--replica-read-only", "yes"
    ).start()
    probe = replica.client()
    with pytest.raises(redis.exceptions.ReadOnlyError):
        probe.set("liroo:probe", "1")  # the fault is real: writes are refused
    probe.close()
    return replica, [replica, primary]


def full_redis():
    full = RedisProcess(None, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction").start()
    client = full.client()
    # Fill it: writes are refused from now on.
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(10_000):
            client.set(f"filler:{i}", "x" * 1024)
    # Then well over its limit, so that no write squeezes in when a few bytes are freed (a
    # Redis exactly at its limit lets a small write through now and then: an outage that flaps).
    client.config_set("maxmemory", "256kb")
    client.close()
    return full, [full]


def garbage_port():
    garbage = GarbageServer()
    return garbage, [garbage]


@pytest.mark.parametrize(
    "make_fault, ready_says",
    [
        (read_only_replica, "refuses writes"),  # it answers PING
        (full_redis, "refuses writes"),
        (garbage_port, "unreachable"),  # no PING answered
    ],
    ids=["read-only replica", "maxmemory noeviction", "not Redis"],
)
def test_a_redis_that_answers_wrongly_falls_back_like_an_outage(
    start_server, make_fault, ready_says
):
    fault, processes = make_fault()
    try:
        server = start_server({"REDIS_URL": fault.url, "LIROO_RATE_LIMIT": "1000 per minute"})
        comic_id = new_request_id("wrong")
        response = post(server, "/generate_comic", APP_COMIC, comic_id)
        assert response.status_code == 200, response.text
        body = contract.decode_comic(response.json())
        assert body["success"] is True
        # Nothing silently lost: progress and the stored result answer from this instance.
        for _ in range(3):  # on whichever worker the poll lands
            view = progress(server, comic_id)
            assert view.status_code == 200, view.text
            assert contract.decode_progress(view.json())["status"] == "succeeded"
        retry = post(server, "/generate_comic", APP_COMIC, comic_id)
        assert (
            retry.headers.get("X-Idempotent-Replay") == "true"
            and retry.json()["comic"] == body["comic"]
        )
        for _ in range(4):
            assert flashcards(server, new_request_id("more")).status_code == 200
        # Not ready while Redis cannot be used for jobs: a read-only replica answers PING.
        ready = requests.get(server.url("/ready"), timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["redis"] == ready_says
        log = server.log()
        assert OUTAGE in log
        outages = log.count(OUTAGE)
        assert 1 <= outages <= 2, log  # once per worker (two), not once per call
        assert "Traceback" not in log and "internal_error" not in log
    finally:
        for process in processes:
            process.kill()


# --- Redis lost or slow while a comic runs
# --------------------------------------------------------------


def test_redis_killed_mid_comic_its_progress_is_never_unknown(start_server, redis_process):
    """Every poll of the running comic answers 200 (from this instance's store once the job has
    moved there) or 503 with Retry-After: never 404 unknown_request, the app's "it failed"."""
    server = start_server({"REDIS_URL": redis_process.url, **slow_pictures_env(1.0)})
    comic_id = new_request_id("killed-mid-comic")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, server, "/generate_comic", APP_COMIC, comic_id)
        wait_for(
            lambda: progress(server, comic_id).json().get("status") == "running",
            timeout=60,
            what="the comic to run",
        )
        redis_process.kill()
        polls = []
        while not running.done():
            view = progress(server, comic_id)
            polls.append(view)
            time.sleep(0.3)  # the polling interval under test, not a synchronisation
        answer = running.result()
    assert answer.status_code == 200, answer.text
    statuses = [view.status_code for view in polls]
    assert statuses and set(statuses) <= {200, 503}, statuses
    for view in polls:
        if view.status_code == 503:
            assert int(view.headers["Retry-After"]) >= 1
            assert contract.decode_error(view.json())["code"] == "job_store_unavailable"
        else:
            assert contract.decode_progress(view.json())["status"] in ("running", "succeeded")
    assert 200 in statuses  # the job answers from this instance while it runs
    done = progress(server, comic_id)
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert "Traceback" not in server.log()


@pytest.fixture
def debuggable_redis():
    process = RedisProcess(None, "--enable-debug-command", "local").start()
    yield process
    process.kill()


def test_a_slow_redis_holds_no_thread(start_server, debuggable_redis):
    """DEBUG SLEEP: Redis answers nothing for 8 s. Reads give up after LIROO_REDIS_READ_TIMEOUT_S
    (0.5 s) and count as an outage: 40 polls at once, /jobs and /ready answer (503) within the
    clients' 3 s timeout, and /health answers, all while Redis still sleeps."""
    server = start_server({"REDIS_URL": debuggable_redis.url})
    stored = new_request_id("stored")
    assert flashcards(server, stored).status_code == 200  # its job lives in Redis only

    asleep = redis.Redis(
        host="127.0.0.1", port=debuggable_redis.port
    )  # no timeout: it waits it out
    sleeper = threading.Thread(
        target=asleep.execute_command, args=("DEBUG", "SLEEP", 8), daemon=True
    )
    sleeper.start()
    quick = redis.Redis(host="127.0.0.1", port=debuggable_redis.port, socket_timeout=0.2)
    wait_for(lambda: not _answers(quick), timeout=5, what="Redis to sleep")

    def get(path):
        return requests.get(server.url(path), timeout=3)

    paths = [f"/progress/{stored}"] * 40 + [f"/jobs/{stored}", "/ready", "/health"]
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(get, paths))
    assert sleeper.is_alive(), "every answer came while Redis was still asleep"
    for n, path in enumerate(paths):
        expected = 200 if path == "/health" else 503
        assert answers[n].status_code == expected, (path, answers[n].text)
        if expected == 503:
            assert int(answers[n].headers["Retry-After"]) >= 1
    sleeper.join(15)
    assert "Traceback" not in server.log()


def _answers(client) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
