"""Gemini pacing: one budget per model for the service (Redis), else for the instance (shared
memory).

Real parts: forked processes sharing the instance's memory, the Redis at
127.0.0.1:6379 (db 5, this file's own) standing for two instances' shared
store, a port where nothing listens standing for a Redis that is gone, and the
real SDK against the loopback Gemini for the 429 hold. Time is a fake clock
that moves only when a caller sleeps, so nothing waits on the wall.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

import pytest
import redis

from liroo.providers import RateLimited
from liroo.providers.gemini import GeminiProvider
from liroo.providers.pacing import Pacer, RedisState, SharedMemoryState, make_pacer, service_burst
from liroo.settings import Settings
from tests.helpers.bodies import PROMPT
from tests.helpers.gemini import gemini_settings
from tests.helpers.schemas import Quiz
from tests.servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/5"


class FakeClock:
    """Time that moves only when told: sleeping advances it, and every sleep is recorded."""

    def __init__(self, advance_on_sleep: bool = True) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []
        self.advance_on_sleep = advance_on_sleep
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self.advance_on_sleep:
                self.now += seconds


def pacer(per_minute=60, burst=3, clock=None, **kwargs) -> Pacer:
    clock = clock or FakeClock()
    return Pacer(per_minute, burst, clock=clock, sleep=clock.sleep, **kwargs)


@pytest.fixture
def model():
    """A model name no other run uses, so Redis keys never meet; removed from Redis afterwards."""
    name = "test-model-" + uuid.uuid4().hex
    yield name
    redis.Redis.from_url(REDIS_URL).delete(RedisState.PREFIX + name)


# --- the rule
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["instance", "redis"])
def test_a_burst_goes_at_once_then_calls_are_spaced_at_the_rate(where, model):
    clock = FakeClock()
    paced = pacer(60, 3, clock, shared=RedisState(REDIS_URL) if where == "redis" else None)
    assert [paced.acquire(model) for _ in range(5)] == [
        0,
        0,
        0,
        pytest.approx(1.0),
        pytest.approx(1.0),
    ]
    clock.now += 3600  # a long idle gives back only the burst
    assert [paced.acquire(model) for _ in range(4)] == [0, 0, 0, pytest.approx(1.0)]


@pytest.mark.parametrize("where", ["instance", "redis"])
def test_a_429_holds_every_caller_back_for_its_retry_after(where, model):
    clock = FakeClock()
    paced = pacer(60, 5, clock, shared=RedisState(REDIS_URL) if where == "redis" else None)
    paced.cool_down(model, 5)  # a 429 with Retry-After: 5
    assert paced.acquire(model) == pytest.approx(5.0)  # exactly when the server said
    assert paced.acquire(model) == pytest.approx(1.0)  # then at the rate: the burst was spent


@pytest.mark.parametrize("where", ["instance", "redis"])
def test_a_wait_longer_than_allowed_is_refused_without_taking_a_slot(where, model):
    clock = FakeClock()
    paced = pacer(
        6, 1, clock, max_wait_s=2, shared=RedisState(REDIS_URL) if where == "redis" else None
    )
    paced.acquire(model)  # one call per 10 s
    with pytest.raises(RateLimited) as caught:
        paced.acquire(model)
    assert caught.value.retry_after_s == 10
    clock.now += 10
    assert paced.acquire(model) == 0  # the refused call did not use the slot


def test_concurrent_threads_queue_in_turn():
    clock = FakeClock(advance_on_sleep=False)  # time stands still: each thread's wait is its place
    paced = pacer(60, 1, clock)
    threads = [threading.Thread(target=paced.acquire, args=("m",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the first did not sleep
    assert sorted(clock.sleeps) == [pytest.approx(float(n)) for n in range(1, 8)]


def test_models_have_their_own_budgets_and_zero_means_unpaced():
    paced = pacer(60, 1)
    assert paced.acquire("text") == 0 and paced.acquire("image") == 0
    assert paced.acquire("text") == pytest.approx(1.0)
    unpaced = Pacer(0)
    assert [unpaced.acquire("a") for _ in range(100)] == [0] * 100
    unpaced.cool_down("a", 30)
    assert unpaced.acquire("a") == 0


# --- one budget for the instance's workers, and for the service's instances
# ------------------------------


def test_forked_workers_share_the_instances_budget():
    """Made before the fork, as gunicorn's preloaded app makes it: a child's calls spend the
    parent's budget."""
    clock = FakeClock()
    paced = pacer(60, 3, clock)
    pid = os.fork()
    if pid == 0:  # the "other worker": takes the whole burst
        os._exit(0 if [paced.acquire("m") for _ in range(3)] == [0, 0, 0] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert paced.acquire("m") == pytest.approx(1.0), "the burst was spent by the other process"


def test_two_instances_share_one_budget_through_redis(model):
    clock = FakeClock()
    # own memory each
    first, second = (pacer(60, 4, clock, shared=RedisState(REDIS_URL)) for _ in range(2))
    assert [
        first.acquire(model),
        second.acquire(model),
        first.acquire(model),
        second.acquire(model),
    ] == [0] * 4
    assert second.acquire(model) == pytest.approx(1.0)
    second.cool_down(model, 10)  # a 429 seen by one instance...
    assert first.acquire(model) >= 10  # ...holds the other back too


def test_without_redis_each_instance_paces_alone_at_the_full_figure_and_says_so_once(model, caplog):
    clock = FakeClock()
    gone = RedisState(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    paced = pacer(60, 2, clock, shared=gone)
    with caplog.at_level(logging.WARNING, logger="liroo.providers.pacing"):
        waits = [paced.acquire(model) for _ in range(4)]
    assert waits == [
        0,
        0,
        pytest.approx(1.0),
        pytest.approx(1.0),
    ]  # the instance's budget, full figure
    outages = [r for r in caplog.records if "Redis cannot be reached" in r.getMessage()]
    assert len(outages) == 1, "one line per outage, not one per call"


def test_pacing_comes_back_to_redis_when_it_answers(model, caplog):
    clock = FakeClock()
    paced = pacer(60, 2, clock, shared=RedisState(f"redis://127.0.0.1:{free_port()}/0"), retry_s=0)
    paced.acquire(model)  # falls back to the instance
    paced.shared = RedisState(REDIS_URL)  # "Redis is back" (same state, now reachable)
    other = pacer(60, 2, clock, shared=RedisState(REDIS_URL))
    with caplog.at_level(logging.WARNING, logger="liroo.providers.pacing"):
        assert [paced.acquire(model), other.acquire(model)] == [0, 0]
        assert other.acquire(model) == pytest.approx(1.0)  # both draw on Redis again
    assert any("Redis answers again" in r.getMessage() for r in caplog.records)


# --- the settings and the provider
# ----------------------------------------------------------------------


def test_the_burst_lets_one_comics_pictures_start_together_within_a_minutes_budget():
    assert service_burst(60, 8) == 8
    assert service_burst(600, 8) == 60  # a tenth of a large budget
    assert service_burst(5, 8) == 5  # never more than the minute's figure at once


def test_the_rpm_is_one_figure_for_the_service_not_a_workers_share():
    paced = make_pacer(Settings(gemini_rpm=120, workers=2, max_panels=8, gemini_timeout_s=2.0))
    assert paced.per_minute == 120 and paced.burst == 12 and paced.max_wait_s == 2.0
    assert paced.shared is None and isinstance(paced.local, SharedMemoryState)
    assert isinstance(make_pacer(Settings(gemini_rpm=60, redis_url=REDIS_URL)).shared, RedisState)


def test_a_gemini_429_holds_the_models_budget_for_other_callers(fake_gemini):
    clock = FakeClock()
    paced = pacer(600, 10, clock)
    provider = GeminiProvider(gemini_settings(fake_gemini), pacer=paced)
    fake_gemini.fail("http", status=429, retry_after=3)
    provider.generate_structured(PROMPT, Quiz)  # retried by the SDK, and it succeeds
    assert len(fake_gemini.requests()) == 2
    assert paced.acquire(provider.text_model) >= 3.0
    assert paced.acquire(provider.image_model) == 0  # other models are not held back
    provider.close()


class Bound:
    """A request's bounds for waits (pacing.WaitBound) in the fake clock's time."""

    def __init__(self, answer_by: float, work_by: float) -> None:
        self._answer_by, self._work_by = answer_by, work_by
        self.told_late = 0

    def answer_by(self) -> float:
        return self._answer_by

    def work_by(self) -> float:
        return self._work_by

    def late(self) -> None:
        self.told_late += 1


def test_a_wait_stays_within_the_requests_deadline():
    """A slot later than the request's answer tells it it is late (it answers, and the work
    waits on); one later than its work may wait is refused without taking the slot."""
    from liroo.providers.pacing import bounded_by

    clock = FakeClock()
    paced = pacer(6, 1, clock)  # one call per 10 s, no wait bound of its own
    model = "bounded-" + uuid.uuid4().hex
    paced.acquire(model)
    in_time = Bound(answer_by=clock.now + 30, work_by=clock.now + 60)
    with bounded_by(in_time):
        assert paced.acquire(model) == pytest.approx(10.0)
    assert in_time.told_late == 0
    late = Bound(answer_by=clock.now + 5, work_by=clock.now + 60)
    with bounded_by(late):
        assert paced.acquire(model) == pytest.approx(10.0)
    assert late.told_late == 1
    too_far = Bound(answer_by=clock.now + 5, work_by=clock.now + 5)
    with bounded_by(too_far), pytest.raises(RateLimited):
        paced.acquire(model)
    assert too_far.told_late == 0
    assert paced.acquire(model) == pytest.approx(10.0)  # outside the block: no bound, slot unused
