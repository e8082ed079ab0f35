"""The door's rule and estimates as pure functions, and the small shared tables behind them
(in-process, no sockets)."""

import os

import pytest

from liroo.governor import rule
from liroo.governor.timings import ALL_ROUTES, ServiceTimes
from liroo.governor.turns import CALLER_SHARE_FULL, LINE_FULL, AdmissionQueue, caller_tag


def test_fits_counts_promises_only_for_costed_work():
    assert rule.fits(used=600, unspent=100, cost=40, limit=750)
    assert not rule.fits(used=600, unspent=100, cost=50, limit=750)  # 750 is not under 750
    # Uncosted work asks only whether the reading is under the limit.
    assert rule.fits(used=700, unspent=500, cost=0, limit=750)
    assert not rule.fits(used=750, unspent=0, cost=0, limit=750)


def test_how_many_heavy_requests_fit_in_what_is_neither_used_nor_promised():
    assert rule.how_many_fit(used=500, unspent=72, cost=50, limit=3072) == 49  # 2500 / 50, less
    assert rule.how_many_fit(used=500, unspent=72, cost=49, limit=3072) == 51  # one reaching it
    assert rule.how_many_fit(used=500, unspent=72, cost=5000, limit=3072) == 0
    assert rule.how_many_fit(used=350, unspent=0, cost=20, limit=300) == 0  # over: never negative
    assert rule.how_many_fit(used=100, unspent=0, cost=0, limit=300) == 0  # no figure yet: none
    # The count is what the admission rule would let in at once, no more and no fewer.
    for used, unspent, cost, limit in [(500, 72, 50, 3072), (0, 0, 0.5, 3.0), (10, 5, 7, 100)]:
        n = rule.how_many_fit(used, unspent, cost, limit)
        assert rule.fits(used, unspent + (n - 1) * cost, cost, limit)
        assert not rule.fits(used, unspent + n * cost, cost, limit)


def test_the_expected_wait_is_the_place_times_the_drain_interval():
    # Two requests running, 4 s each: one ends every 2 s; third in line (two ahead) waits 6 s.
    assert rule.drain_wait_s(place=2, service_s=4.0, running=2) == 6.0
    assert rule.drain_wait_s(place=0, service_s=4.0, running=0) == 4.0  # never divides by zero


def test_retry_after_rounds_the_expected_wait_up_within_bounds():
    assert rule.retry_after_s(6.01, fallback_s=5) == 7
    assert rule.retry_after_s(0.2, fallback_s=5) == 1
    assert rule.retry_after_s(10_000.0, fallback_s=5) == rule.RETRY_AFTER_MAX_S
    assert rule.retry_after_s(None, fallback_s=5) == 5  # nothing measured yet


def test_a_wait_ends_early_enough_for_the_service_to_end_by_the_deadline():
    assert rule.wait_end(now=100.0, wait_s=15.0, deadline=None, service_s=3.0) == 115.0
    assert rule.wait_end(now=100.0, wait_s=15.0, deadline=110.0, service_s=3.0) == 107.0
    assert rule.wait_end(now=100.0, wait_s=15.0, deadline=110.0, service_s=None) == 110.0


def test_a_client_can_shorten_its_deadline_but_never_lengthen_it():
    assert rule.request_deadline(100.0, 55.0, None) == 155.0
    assert rule.request_deadline(100.0, 55.0, "2500") == 102.5
    assert rule.request_deadline(100.0, 55.0, " 999999999 ") == 155.0
    for bad in ("", "soon", "-5", "0", "1.5", "\u0661\u0662", "9" * 40):
        with pytest.raises(ValueError):
            rule.request_deadline(100.0, 55.0, bad)


def test_the_service_average_follows_recent_runs():
    assert rule.ewma(0.0, 0, 4.0) == 4.0  # the first run is the average
    assert rule.ewma(4.0, 1, 14.0) == pytest.approx(4.0 + rule.SERVICE_WEIGHT * 10)


def test_a_caller_gets_at_least_one_place():
    assert rule.caller_slots(32, 0.5) == 16 and rule.caller_slots(1, 0.5) == 1


def test_service_times_are_learned_per_route_and_shared_with_forked_workers():
    times = ServiceTimes()
    times.register("/slow")
    assert times.expected_s("/slow") is None and times.expected_s(ALL_ROUTES) is None
    pid = os.fork()
    if pid == 0:  # a worker measures a request and keeps one running
        times.record("/slow", 6.0)
        times.started(+1)
        os._exit(0)
    os.waitpid(pid, 0)
    assert times.expected_s("/slow") == times.expected_s(ALL_ROUTES) == 6.0
    assert times.expected_s("/unknown") is None
    # The worker died with a request running: it runs no more once the master forgets it.
    times.forget(pid)
    assert times.running() == 0
    times.started(+1)
    assert times.running() == 1
    times.started(-1)
    assert times.running() == 0


def test_one_caller_holds_only_its_share_of_the_line():
    line = AdmissionQueue(slots=8)
    one, two = caller_tag("key:one"), caller_tag("addr:10.0.0.2")
    assert one and two and one != two and caller_tag("") == 0
    first, _ = line.enter(4, one, caller_bound=2)
    second, _ = line.enter(4, one, caller_bound=2)
    assert first and second and line.is_first(first) and not line.is_first(second)
    assert line.enter(4, one, caller_bound=2) == (None, CALLER_SHARE_FULL)
    assert line.enter(4, two, caller_bound=2)[0]
    assert line.enter(4, 0)[0]  # no caller known: only the line's bound applies
    assert line.enter(4, two, caller_bound=2) == (None, LINE_FULL)
    line.leave(first)
    assert line.enter(4, one, caller_bound=2)[0] and line.length() == 4
