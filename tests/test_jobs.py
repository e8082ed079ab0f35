"""Both job stores against the same contract: SQLite in a temp folder, and the real Redis on
127.0.0.1:6379.

test_the_claim_rule runs the claim rule's truth table, read from the docstring of
liroo.jobs.model.decide, against both stores: the Python rule (LocalJobStore) and the
Lua one (RedisJobStore, on Redis db 11) must give the same answers.
"""

import os
import threading
import time

import pytest

from liroo import jobs
from liroo.jobs import FAILED, RUNNING, SUCCEEDED, Heartbeats, LocalJobStore, RedisJobStore
from tests.helpers.http import new_request_id

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["local", "redis"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)
    return RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)


def test_first_claim_runs_and_retry_waits(store):
    rid = new_request_id()
    first = store.claim(rid, "/generate_comic", "fp1")
    assert first.outcome == "new" and first.job.status == RUNNING
    again = store.claim(rid, "/generate_comic", "fp1")
    assert again.outcome == "running"
    assert store.claim(rid, "/generate_comic", "other").outcome == "conflict"


def test_progress_and_result_are_kept(store):
    rid = new_request_id()
    store.claim(rid, "/generate_comic", "fp")
    store.progress(rid, "Drawing panel 2 of 4", 3, 6, "panel 2")
    job = store.get(rid)
    assert (job.step, job.step_number, job.total_steps, job.details) == (
        "Drawing panel 2 of 4",
        3,
        6,
        "panel 2",
    )
    assert job.percentage == 50.0
    store.finish(rid, SUCCEEDED, 200, {"success": True, "comic": {"comic_title": "T"}})
    job = store.get(rid)
    assert job.status == SUCCEEDED and job.percentage == 100.0
    assert job.result() == (200, {"success": True, "comic": {"comic_title": "T"}})
    replay = store.claim(rid, "/generate_comic", "fp")
    assert replay.outcome == "finished" and replay.job.result()[1]["comic"]["comic_title"] == "T"


def test_a_failed_job_is_retried_not_replayed(store):
    rid = new_request_id()
    store.claim(rid, "/generate_image", "fp")
    store.finish(
        rid,
        FAILED,
        502,
        {"error": "x", "code": "provider_unavailable"},
        error_code="provider_unavailable",
    )
    assert store.get(rid).error_code == "provider_unavailable"
    assert store.claim(rid, "/generate_image", "fp").outcome == "new"
    assert store.get(rid).status == RUNNING


def test_an_abandoned_job_is_taken_over(store, monkeypatch):
    rid = new_request_id()
    store.claim(rid, "/generate_image", "fp")
    assert store.claim(rid, "/generate_image", "fp").outcome == "running"
    # The owner stops beating: pretend the clock moved past the stale line.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + jobs.STALE_AFTER_S + 5)
    assert store.claim(rid, "/generate_image", "fp").outcome == "new"


def test_unknown_id(store):
    assert store.get(new_request_id()) is None


def test_only_one_of_many_concurrent_claims_wins(store):
    rid = new_request_id()
    outcomes = []
    barrier = threading.Barrier(8)

    def claim():
        barrier.wait()
        outcomes.append(store.claim(rid, "/generate_comic", "fp").outcome)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["new"] + ["running"] * 7


def test_local_store_is_shared_across_fork(tmp_path):
    store = LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)
    rid = new_request_id()
    store.claim(rid, "/x", "fp")  # opens a connection in the parent before the fork
    pid = os.fork()
    if pid == 0:
        try:
            store.progress(rid, "from child", 1, 2)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert store.get(rid).step == "from child"


def test_heartbeats_keep_a_job_fresh(store):
    rid = new_request_id()
    store.claim(rid, "/x", "fp")
    before = store.get(rid).heartbeat
    beats = Heartbeats(store, interval_s=0.05)
    beats.add(rid)
    from tests.servers import wait_for

    wait_for(lambda: store.get(rid).heartbeat > before, timeout=10, what="a heartbeat")
    beats.discard(rid)


def test_running_on_finds_a_workers_running_jobs_only(store):
    mine, done, theirs = new_request_id(), new_request_id(), new_request_id()
    for request_id in (mine, done):
        assert store.claim(request_id, "/generate_comic", "fp").outcome == "new"
    store.finish(done, SUCCEEDED, 200, {"ok": True})
    assert store.get(mine).worker == jobs.worker_tag()
    assert mine in store.running_on(jobs.worker_tag())
    assert done not in store.running_on(jobs.worker_tag())
    assert store.running_on(jobs.worker_tag(os.getpid() + 1)) == []
    assert theirs not in store.running_on(jobs.worker_tag())


def test_a_success_is_replayed_only_within_the_replay_window(store, monkeypatch):
    rid = new_request_id()
    store.claim(rid, "/generate_comic", "fp", replay_s=10)
    store.finish(rid, SUCCEEDED, 200, {"ok": True})
    assert store.claim(rid, "/generate_comic", "fp", replay_s=10).outcome == "finished"
    later = time.time() + 11
    monkeypatch.setattr(time, "time", lambda: later)
    # no window: kept for the TTL
    assert store.claim(rid, "/generate_comic", "fp").outcome == "finished"
    assert store.claim(rid, "/generate_comic", "fp", replay_s=10).outcome == "new"


def claim_rule_rows():
    """The rows of the truth table in liroo.jobs.model.decide's docstring."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in jobs.decide.__doc__.splitlines()
        if line.strip().startswith("|")
    ]
    header, body = rows[0], rows[1:]
    assert header[:5] == ["stored", "status", "touched", "replay_s", "outcome"] and len(body) >= 10
    return [pytest.param(*row[:5], id="-".join(row[:4]).replace(" ", "_")) for row in body]


CLAIM_RULE_REDIS_URL = "redis://127.0.0.1:6379/10"  # its own db: test_jobs_server flushes 11


@pytest.fixture(params=["local", "redis"])
def either_store(request, tmp_path):
    if request.param == "local":
        yield LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)
        return
    store = RedisJobStore(CLAIM_RULE_REDIS_URL, ttl_s=60, running_ttl_s=120)
    yield store
    for key in store._redis.scan_iter(match="*t-*"):
        store._redis.delete(key)


@pytest.mark.parametrize("stored, status, touched, replay_s, outcome", claim_rule_rows())
def test_the_claim_rule(either_store, monkeypatch, stored, status, touched, replay_s, outcome):
    store, rid = either_store, new_request_id()
    window = None if replay_s == "none" else float(replay_s)
    if stored != "none":
        assert store.claim(rid, "/generate_comic", "fp", owner="key-a").outcome == "new"
        if status != RUNNING:
            store.finish(
                rid, status, 200 if status == SUCCEEDED else 502, {"ok": status == SUCCEEDED}
            )
    if touched == "old":  # the clock moves past both the stale line and the replay window
        later = time.time() + max(jobs.STALE_AFTER_S, window or 0) + 5
        monkeypatch.setattr(time, "time", lambda: later)
    fingerprint = "another fp" if stored == "other body" else "fp"
    owner = "key-b" if stored == "other owner" else "key-a"
    assert (
        store.claim(rid, "/generate_comic", fingerprint, owner=owner, replay_s=window).outcome
        == outcome
    )


# --- joins: woken by the end, capped per request
# ------------------------------------------------------------


@pytest.fixture
def no_second_look(monkeypatch):
    """A join looks at its job again only when woken: a missed wake would hang the test."""
    monkeypatch.setattr(jobs.joins, "LOOK_S", 60.0)


class CountingStore:
    """The store a join uses, counting its looks (reads of the job)."""

    def __init__(self, store):
        self.store = store
        self.looks = 0

    def get(self, request_id):
        self.looks += 1
        return self.store.get(request_id)

    def wait_for_end(self, request_id, timeout_s, still_running):
        return self.store.wait_for_end(request_id, timeout_s, still_running)


def test_a_join_is_woken_by_the_jobs_end_not_by_polling(store, no_second_look):
    rid = new_request_id()
    store.claim(rid, "/generate_comic", "fp")
    # The end comes from this process (local) or from another instance sharing Redis.
    if isinstance(store, RedisJobStore):
        finisher = RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)
    else:
        finisher = store
    counting = CountingStore(store)
    joins = jobs.Joins(counting, per_request=1)
    seen = {}
    join = threading.Thread(
        target=lambda: seen.update(job=joins.wait(rid, time.monotonic() + 30)), daemon=True
    )
    join.start()
    from tests.servers import wait_for

    wait_for(lambda: counting.looks >= 2, timeout=10, what="the join to be waiting")
    with pytest.raises(jobs.JoinsFull):  # one join per request here: the next is refused at once
        joins.wait(rid, time.monotonic() + 30)
    finisher.finish(rid, SUCCEEDED, 200, {"ok": True})
    join.join(15)
    assert not join.is_alive(), "the join was not woken by the end"
    assert seen["job"].status == SUCCEEDED and seen["job"].result() == (200, {"ok": True})
    assert counting.looks == 3  # a look, the check once waiting, the look after the wake


def test_a_join_gives_up_at_its_deadline_with_the_job_still_running(store):
    rid = new_request_id()
    store.claim(rid, "/generate_comic", "fp")
    job = jobs.Joins(store, per_request=1).wait(rid, time.monotonic() + 0.3)
    assert job.status == RUNNING


# --- derived ids: keyed with the server's secret
# ------------------------------------------------------------


def derive(app, seed="fp:device-token:addr:198.51.100.7"):
    from liroo.requestid import generation_request_id

    with app.test_request_context("/generate_comic", method="POST"):
        return generation_request_id(None, lambda: seed)[0]


def test_derived_ids_cannot_be_computed_without_the_servers_secret():
    import hashlib
    import hmac

    from liroo import create_app
    from liroo.requestid import DerivedIdKey
    from liroo.settings import Settings

    seed = "fp:device-token:addr:198.51.100.7"
    configured = [create_app(Settings.from_env({}, id_secret="shared")) for _ in range(2)]
    ids = {derive(app, seed) for app in configured}
    assert ids == {"auto-" + hmac.new(b"shared", seed.encode(), hashlib.sha256).hexdigest()[:40]}
    # the public recipe (the body's fingerprint and the address) no longer gives the id
    assert "auto-" + hashlib.sha256(seed.encode()).hexdigest()[:40] not in ids
    # without a configured secret or Redis: each instance its own, so nobody outside computes it
    assert DerivedIdKey(None).secret() != DerivedIdKey(None).secret()


def test_instances_sharing_redis_share_one_secret():
    import redis

    from liroo.requestid import DerivedIdKey

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(DerivedIdKey.REDIS_KEY)
    first, second = DerivedIdKey(None, client), DerivedIdKey(None, redis.Redis.from_url(REDIS_URL))
    assert first.secret() == second.secret() == client.get(DerivedIdKey.REDIS_KEY)
    assert DerivedIdKey("configured", client).secret() == b"configured"
