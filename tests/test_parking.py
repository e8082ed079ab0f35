"""Parked joins (liroo/jobs/joins.Parking): woken once, by their job's end, their deadline or the
look that sees the job gone, with no thread of their own.

The local store is SQLite in a temporary directory; the Redis end comes from a second store on the
real Redis at 127.0.0.1:6379 (db 7, this file's own; its keys are unique per test).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from liroo import jobs
from liroo.jobs import SUCCEEDED, LocalJobStore, RedisJobStore
from tests.servers import wait_for

REDIS_URL = "redis://127.0.0.1:6379/7"


class Wakes:
    """The wake functions the worker would give: each counts its calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def for_join(self, name: str):
        def wake() -> None:
            with self.lock:
                self.calls[name] = self.calls.get(name, 0) + 1

        return wake


@pytest.fixture
def local(tmp_path):
    return LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)


def running(store) -> str:
    request_id = "t-" + uuid.uuid4().hex
    assert store.claim(request_id, "/generate_comic", "fp").outcome == "new"
    return request_id


def test_parked_joins_are_woken_once_by_their_jobs_end_in_this_process(local, monkeypatch):
    monkeypatch.setattr(jobs.joins, "LOOK_S", 60.0)  # only the end can wake them
    request_id, other = running(local), running(local)
    joins = jobs.Joins(local, per_request=1)
    wakes = Wakes()
    for n in range(30):  # no cap: a parked join holds no thread
        joins.parking.park(request_id, time.monotonic() + 60, wakes.for_join(f"join-{n}"))
    joins.parking.park(other, time.monotonic() + 60, wakes.for_join("other"))
    assert wakes.calls == {} and joins.parking.parked() == 31
    local.finish(request_id, SUCCEEDED, 200, {"ok": True})  # ENDINGS: in this thread
    assert wakes.calls == {f"join-{n}": 1 for n in range(30)}
    assert joins.parking.parked() == 1  # the other request's join waits on


def test_a_join_parked_after_its_job_ended_is_woken_at_once(local):
    request_id = running(local)
    local.finish(request_id, SUCCEEDED, 200, {"ok": True})
    wakes = Wakes()
    jobs.Joins(local, per_request=1).parking.park(
        request_id, time.monotonic() + 60, wakes.for_join("late")
    )
    assert wakes.calls == {"late": 1}


def test_a_parked_join_is_woken_at_its_deadline_with_the_job_still_running(local):
    parking = jobs.Joins(local, per_request=1).parking
    wakes = Wakes()
    parking.park(running(local), time.monotonic() + 0.3, wakes.for_join("join"))
    wait_for(lambda: wakes.calls == {"join": 1}, timeout=10, what="the deadline's wake")
    assert parking.parked() == 0


def test_a_parked_join_is_woken_when_its_job_is_gone_from_another_process(local, monkeypatch):
    """Another worker without Redis, or an owner whose job went stale: the look sees it."""
    monkeypatch.setattr(jobs.joins, "LOOK_S", 0.1)
    request_id = running(local)
    wakes = Wakes()
    jobs.Joins(local, per_request=1).parking.park(
        request_id, time.monotonic() + 60, wakes.for_join("join")
    )
    other_process = LocalJobStore(local.path, ttl_s=60, running_ttl_s=120)
    other_process.update(request_id, {"status": SUCCEEDED}, finished=True)  # no ENDINGS here
    wait_for(lambda: wakes.calls == {"join": 1}, timeout=10, what="the look's wake")


def test_a_parked_join_is_woken_by_an_end_on_another_instance_through_redis(monkeypatch):
    monkeypatch.setattr(jobs.joins, "LOOK_S", 60.0)  # only Redis's message can wake it in time
    store = RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)
    elsewhere = RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)
    request_id = running(store)
    parking = jobs.Joins(store, per_request=1).parking
    wakes = Wakes()
    parking.park(request_id, time.monotonic() + 60, wakes.for_join("join"))
    # The watcher subscribes once it runs: end it until the end is heard (each end publishes).
    # update, not finish: finish would also signal this process's ENDINGS.
    wait_for(
        lambda: elsewhere.update(request_id, {"status": SUCCEEDED}, finished=True) or wakes.calls,
        timeout=10,
        what="the end published on another instance",
    )
    assert wakes.calls == {"join": 1}


# --- the worker's side: ParkedRequests (liroo/outgoing.py), without sockets
# -----------------------------------------------------------------


def test_a_parked_request_is_resumed_once_whether_its_wake_comes_before_or_after_its_park():
    from liroo.outgoing import ParkedRequests

    resumed = []
    parked = ParkedRequests(lambda conn, environ: resumed.append((conn, environ)))
    parked.park("early", {"n": 1})
    assert resumed == [] and parked.waiting == {"early": {"n": 1}}
    parked.wake("early")
    parked.wake("late")  # its thread has not handed it to the loop yet
    assert resumed == [("early", {"n": 1})]
    parked.park("late", {"n": 2})
    assert resumed == [("early", {"n": 1}), ("late", {"n": 2})] and parked.waiting == {}
    parked.park("stopping", {})
    assert parked.let_go() == ["stopping"] and parked.waiting == {}
