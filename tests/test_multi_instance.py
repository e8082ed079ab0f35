"""One service, not N processes: several instances behind a real load balancer, sharing Redis.

Real parts only: three gunicorn instances of the app (one worker each, so an
instance's Gemini budget is a whole one, as on a Cloud Run instance) behind
HAProxy from Debian's packages (round-robin, every request balanced on its
own, health-checked), the Redis at 127.0.0.1:6379 (dbs 12 and 13, this
file's own), and one loopback Gemini all instances call through the real SDK.
Each instance has its own API key, so the fake's record of calls (with their
arrival times) says which instance made each one. Every request goes through
the balancer, as the app's would.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.bodies import APP_COMIC
from tests.servers import GunicornServer, free_port, wait_for

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (Debian package 'haproxy'; .ci/run installs it)",
)

CLUSTER_REDIS = "redis://127.0.0.1:6379/12"
RATE_LIMIT_REDIS = "redis://127.0.0.1:6379/13"
RPM = 30  # the service's Gemini budget per model: one call every 2 s...
BURST = 3  # ...after a burst of LIROO_MAX_PANELS (3) at once
INSTANCES = 3


class HAProxy:
    """HAProxy in the foreground on a free loopback port, round-robin over ``servers``, each
    health-checked."""

    def __init__(self, servers: list[GunicornServer]) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="liroo-haproxy-")
        lines = [f"    server i{n} 127.0.0.1:{s.port} check" for n, s in enumerate(servers)]
        self.config = Path(self._dir.name) / "haproxy.cfg"
        self.config.write_text(
            "\n".join(
                [
                    "global",
                    "    maxconn 512",
                    "defaults",
                    "    mode http",
                    "    timeout connect 2s",
                    "    timeout client 180s",
                    "    timeout server 180s",
                    "    retries 3",
                    # A refused connection (a dead instance) is sent to another.
                    "    option redispatch",
                    "frontend liroo",
                    f"    bind 127.0.0.1:{self.port}",
                    "    default_backend instances",
                    "backend instances",
                    "    balance roundrobin",
                    "    option httpchk GET /health",
                    "    default-server inter 300ms fall 1 rise 2",
                    *lines,
                    "",
                ]
            )
        )
        self.log_path = Path(self._dir.name) / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "HAProxy":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(
            lambda: requests.get(self.url("/health"), timeout=2).status_code == 200,
            20,
            what="haproxy to answer",
        )
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self._dir.cleanup()


def kill_instance(server: GunicornServer) -> None:
    """kill -9 of the instance: its workers and its master, with no chance to hand anything back."""
    for pid in server.worker_pids() + [server.proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(10)


def comic(text: str, **extra) -> dict:
    return {**APP_COMIC, "text": text, **extra}


def post(balancer: HAProxy, body: dict, timeout: float = 180, **headers) -> requests.Response:
    return requests.post(
        balancer.url("/generate_comic"), json=body, headers=headers, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(module_fake_gemini):
    """Three instances sharing Redis db 12, behind HAProxy; yields (balancer, instances, fake)."""
    redis.Redis.from_url(CLUSTER_REDIS).flushdb()
    fake = module_fake_gemini
    instances = [
        GunicornServer(
            gemini_env(
                fake,
                GENAI_API_KEY=f"instance-{n}",
                REDIS_URL=CLUSTER_REDIS,
                LIROO_GEMINI_RPM=RPM,
                LIROO_MAX_PANELS=BURST,
                WEB_CONCURRENCY=1,
                LIROO_LOG_LEVEL="WARNING",
            )
        )
        for n in range(INSTANCES)
    ]
    started = []
    try:
        for server in instances:
            started.append(server.start())
        with HAProxy(instances) as balancer:
            yield balancer, instances, fake
    finally:
        for server in started:
            server.__exit__(None, None, None)
        redis.Redis.from_url(CLUSTER_REDIS).flushdb()


@pytest.fixture
def fresh(cluster):
    balancer, instances, fake = cluster
    fake.reset()
    shared = redis.Redis.from_url(CLUSTER_REDIS)
    # each test starts with the whole Gemini budget
    for key in shared.scan_iter(match="liroo:pace:*"):
        shared.delete(key)
    return cluster


def instance_of(request) -> str:
    return request.headers.get("x-goog-api-key", "")


# --- the behaviours
# ----------------------------------------------------------------------------------------


def test_progress_polled_every_half_second_through_the_balancer_always_answers(fresh):
    """Polls land round-robin on every instance: each answers 200, and progress never goes back."""
    balancer, _, fake = fresh
    fake.set_latency(0.3, operation="text")
    fake.set_latency(1.2, operation="image")
    request_id = "poll-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            post,
            balancer,
            comic("Rivers carve valleys over many years. " * 3),
            **{"X-Request-ID": request_id},
        )
        wait_for(
            lambda: (
                requests.get(balancer.url(f"/progress/{request_id}"), timeout=5).status_code == 200
            ),
            30,
            what="the comic's first progress",
        )  # the id is known once the POST has claimed it
        polls = []
        while True:
            response = requests.get(balancer.url(f"/progress/{request_id}"), timeout=5)
            polls.append((response.status_code, response.json()))
            if response.status_code != 200 or response.json().get("status") != "running":
                break
            time.sleep(0.5)  # the polling interval under test, not a synchronisation
        result = running.result(timeout=180)
    assert result.status_code == 200, result.text
    assert [status for status, _ in polls] == [200] * len(polls), polls
    percentages = [contract.decode_progress(body)["progress_percentage"] for _, body in polls]
    assert percentages == sorted(percentages), percentages
    assert percentages[-1] == 100 and len(polls) >= 3, percentages


def test_a_retry_of_a_finished_request_replays_without_a_model_call(fresh):
    balancer, _, fake = fresh
    body = comic("Volcanoes form where magma rises through the crust. " + uuid.uuid4().hex)
    first = post(balancer, body)  # no id, as the app sends it: the retry finds it by its body
    assert first.status_code == 200, first.text
    calls = len(fake.requests())
    for _ in range(INSTANCES):  # whichever instance the balancer picks
        again = post(balancer, body)
        assert again.status_code == 200 and again.headers.get("X-Idempotent-Replay") == "true"
        assert again.json()["comic"] == first.json()["comic"]
    assert len(fake.requests()) == calls, "a replay calls no model"


def test_two_comics_at_once_on_different_instances_keep_within_the_shared_budget(fresh):
    balancer, _, fake = fresh
    fake.set_latency(0.1, operation="image")
    bodies = [
        comic(f"Comic {n}: the moon pulls the tides twice a day. " + uuid.uuid4().hex)
        for n in range(2)
    ]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda body: post(balancer, body), bodies))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    images = sorted(fake.requests("image"), key=lambda r: r.received_at)
    assert len({instance_of(r) for r in images}) == 2, "the two comics ran on two instances"
    times = [r.received_at for r in images]
    assert len(times) >= 6
    interval = 60 / RPM
    # A call's trip to the fake may be delayed on a busy machine; unpaced, 6 calls come at once.
    slack = 0.75
    for i in range(len(times)):  # any n calls in a row span at least (n - burst) intervals
        for j in range(i + BURST, len(times)):
            needed = (j - i + 1 - BURST) * interval
            assert times[j] - times[i] >= needed - slack, (
                f"calls {i}..{j} came {times[j] - times[i]:.2f}s apart; the budget allows no less "
                f"than {needed}s"
            )


def test_a_gemini_429_on_one_instance_holds_back_the_others_for_its_retry_after(fresh):
    balancer, _, fake = fresh
    fake.fail("http", status=429, retry_after=3, operation="image")
    first = requests.post(
        balancer.url("/generate_image"),
        json={"prompt": "a red kite " + uuid.uuid4().hex},
        timeout=60,
    )
    assert first.status_code == 200, first.text  # the SDK's own retry got through
    second = requests.post(
        balancer.url("/generate_image"),
        json={"prompt": "a blue kite " + uuid.uuid4().hex},
        timeout=60,
    )  # the balancer's next instance
    assert second.status_code == 200, second.text
    calls = sorted(fake.requests("image"), key=lambda r: r.received_at)
    refused, others = calls[0], [r for r in calls if instance_of(r) != instance_of(calls[0])]
    assert others, "the second picture was made by another instance"
    assert others[0].received_at - refused.received_at >= 3 - 0.25, (
        "the other instance waited for Retry-After"
    )


def test_the_rate_limit_lets_exactly_its_count_through_across_instances(module_fake_gemini):
    """Two instances (two workers each) sharing Redis db 13: "3 per minute", 8 at once -> exactly 3
    served."""
    redis.Redis.from_url(RATE_LIMIT_REDIS).flushdb()
    instances = [
        GunicornServer(
            {
                "REDIS_URL": RATE_LIMIT_REDIS,
                "LIROO_RATE_LIMIT": "3 per minute",
                "WEB_CONCURRENCY": "2",
                "LIROO_LOG_LEVEL": "WARNING",
            }
        )
        for _ in range(2)
    ]
    try:
        for server in instances:
            server.start()
        with HAProxy(instances) as balancer:

            def send(n):
                return requests.post(
                    balancer.url("/generate_image"),
                    json={"prompt": f"a kite {n}"},
                    headers={"Connection": "close"},
                    timeout=60,
                )

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = sorted(r.status_code for r in pool.map(send, range(8)))
    finally:
        for server in instances:
            server.__exit__(None, None, None)
        redis.Redis.from_url(RATE_LIMIT_REDIS).flushdb()
    assert statuses == [200] * 3 + [429] * 5, statuses


def test_kill_9_of_the_instance_running_a_comic_then_the_apps_retry_completes_on_another(fresh):
    """Last in this file: it leaves one instance dead."""
    balancer, instances, fake = fresh
    fake.set_latency(3.0, operation="image")  # long enough to kill it mid-comic
    marker = uuid.uuid4().hex
    body = comic(f"Glaciers move slowly downhill and shape mountains. {marker}")
    first_attempt = threading.Thread(target=lambda: _swallow(post, balancer, body), daemon=True)
    first_attempt.start()
    text_call = wait_for(
        lambda: next((r for r in fake.requests("text") if marker in r.prompt), None),
        30,
        what="the comic's script call",
    )
    wait_for(
        lambda: any(instance_of(r) == instance_of(text_call) for r in fake.requests("image")),
        30,
        what="its pictures to start",
    )
    victim = next(s for n, s in enumerate(instances) if f"instance-{n}" == instance_of(text_call))
    kill_instance(victim)
    first_attempt.join(30)
    fake.set_latency(0.1, operation="image")

    retry = post(balancer, body)  # the app's retry: same body, no id
    assert retry.status_code == 200, retry.text
    result = contract.decode_comic(retry.json())
    assert result["success"] is True and all(
        p.get("image_url") for p in result["comic"]["panel_layout"]
    )
    finishers = {
        instance_of(r)
        for r in fake.requests()
        if marker in r.prompt or r.received_at > text_call.received_at
    }
    assert finishers - {instance_of(text_call)}, "another instance finished the work"
    assert retry.headers.get("X-Idempotent-Replay") != "true"


def _swallow(call, *args):
    try:
        return call(*args)
    except requests.RequestException:
        return None  # the instance died under it: the app sees a failure and retries
