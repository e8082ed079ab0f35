"""The governor in front of the real app under real gunicorn: shedding, monitoring, recycling."""

import re

import requests

from tests import contract
from tests.helpers.workers import workers_seen
from tests.servers import SteadyLoad, wait_for


def test_hard_limit_sheds_governed_paths_but_not_monitoring(start_server):
    server = start_server({"MEMORY_LIMIT_MB": "1", "LIROO_RETRY_AFTER_S": "7"})
    response = requests.get(
        server.url("/service"), headers={"X-Request-ID": "req-12345678"}, timeout=10
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Connection"].lower() == "close"
    body = response.json()
    assert body["code"] == "memory_pressure" and body["error"]
    assert (
        body["retry_after_s"] == 7 and body["memory_limit_mb"] == 1 and body["memory_usage_mb"] > 1
    )
    assert body["request_id"] == "req-12345678"

    assert response.headers["X-Content-Type-Options"] == "nosniff"

    # A shed generation request still decodes with the app's rules.
    comic = requests.post(
        server.url("/generate_comic"), json={"text": "Plants", "level": "beginner"}, timeout=10
    )
    assert comic.status_code == 503
    contract.decode_comic(contract.decode_error(comic.json()))
    assert comic.json()["success"] is False
    lecture = requests.post(server.url("/generate_lecture"), json={"text": "Plants"}, timeout=10)
    assert lecture.status_code == 503
    contract.decode_lecture(lecture.json())

    health = requests.get(server.url("/health"), timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["memory_critical"] is True
    # The studio page and its files still load, so a person can see the gauge and the refusals.
    page = requests.get(server.url("/"), headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    script = requests.get(server.url("/studio/static/studio.js"), timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    memory = requests.get(server.url("/memory"), timeout=10)
    assert memory.status_code == 200 and memory.json()["memory_status"] == "critical"
    metrics = requests.get(server.url("/metrics"), timeout=10)
    assert metrics.status_code == 200
    shed = [
        line for line in metrics.text.splitlines() if line.startswith("liroo_memory_shed_total ")
    ]
    assert shed and float(shed[0].split()[1]) >= 1


def test_normal_limits_shed_nothing(offline_server):
    server = offline_server
    with requests.Session() as session:
        statuses = [session.get(server.url("/"), timeout=10).status_code for _ in range(50)]
    assert statuses == [200] * 50
    health = requests.get(server.url("/health"), timeout=10).json()
    contract.decode_health(health)
    assert health["status"] == "healthy"
    memory = requests.get(server.url("/memory"), timeout=10).json()
    for key in (
        "memory_usage_mb",
        "memory_warning_threshold_mb",
        "memory_limit_mb",
        "memory_status",
        "memory_details",
        "psutil_available",
        "timestamp",
        "cgroup",
        "worker",
        "governor",
    ):
        assert key in memory
    assert set(memory["memory_details"]) == {"rss_mb", "vms_mb", "percent"}
    assert memory["memory_status"] == "normal"
    assert memory["governor"]["shed_count"] == 0
    assert memory["worker"]["requests_served"] >= 1


def root_requests_counted(metrics: str) -> float:
    """The answered GET / that /metrics counts, every worker together."""
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("liroo_http_requests_total{")
        and 'route="/"' in line
        and 'status="200"' in line
    )


def test_metrics_cover_every_worker(offline_server):
    server = offline_server  # shared with the module: count what this test adds
    before = root_requests_counted(requests.get(server.url("/metrics"), timeout=10).text)
    with requests.Session() as session:
        for _ in range(40):
            session.get(server.url("/"), timeout=10)
    text = requests.get(server.url("/metrics"), timeout=10).text
    # whichever worker answered the scrape, all requests are counted
    assert root_requests_counted(text) - before == 40
    assert "liroo_http_request_duration_seconds_bucket" in text
    assert "liroo_memory_threshold_bytes" in text


def test_rss_recycling_fails_no_request(start_server):
    server = start_server(
        {
            "LIROO_WORKER_RECYCLE_MB": "1",
            "LIROO_RECYCLE_CHECK_INTERVAL_S": "0.2",
            "LIROO_RECYCLE_STRIKES": "2",
            "LIROO_RECYCLE_MIN_AGE_S": "1",
        }
    )
    recycled_three_times = workers_seen(server, beyond_now=3)
    with SteadyLoad(server) as load:
        wait_for(recycled_three_times, timeout=90, interval=0.1, what="three worker recycles")
    assert "retiring worker" in server.log()
    # Each recycle is logged once, naming the worker.
    recycle_lines = [
        line
        for line in server.log().splitlines()
        if "retiring worker" in line or "governor recycle" in line
    ]
    retired = [re.search(r"\bpid=(\d+)", line) for line in recycle_lines]
    assert all(retired), recycle_lines
    assert len({m.group(1) for m in retired}) == len(retired), recycle_lines
    assert not load.failures, load.failures[:5]
    assert load.answered > 50
