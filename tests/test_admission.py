"""Admission that counts each byte once, the door's FIFO line, and fair turns between requests
(in-process).

The accounting test uses the real probe (this process's RSS, read from
/proc/self/statm) under real allocations; the door's tests use fake cgroup
files that the real probe reads (tests/cgroupfake.py), so a test can put the
"container" at any level.
"""

import gc
import os
import threading
import time

import pytest

from liroo.governor import (
    Governor,
    GovernorConfig,
    MemoryGovernorMiddleware,
    MemoryPressure,
    MemoryProbe,
)
from liroo.governor.cleanup import Cleaner
from liroo.governor.probe import MB
from tests.cgroupfake import FakeCgroupV2
from tests.helpers.wsgi import call, hello_app
from tests.servers import wait_for


@pytest.fixture
def cgroup(tmp_path):
    return FakeCgroupV2(tmp_path, limit_mb=1000, used_mb=100)  # hard limit 750


def make_governor(cgroup, **config):
    return Governor(GovernorConfig(**config), probe=MemoryProbe(cgroup.root))


def rss_probe(tmp_path) -> MemoryProbe:
    """The real probe reading this process's RSS: a root with /proc/self/statm and no cgroup to
    find."""
    (tmp_path / "proc" / "self").mkdir(parents=True)
    os.symlink("/proc/self/statm", tmp_path / "proc" / "self" / "statm")
    probe = MemoryProbe(str(tmp_path))
    assert probe.source == "rss"
    return probe


def allocate(mb: int) -> bytearray:
    block = bytearray(mb * MB)
    for offset in range(0, len(block), 4096):  # touch every page, so it is resident
        block[offset] = 1
    return block


# --- each byte counted once ----------------------------------------------------------


def test_memory_a_reservation_holds_is_counted_once_with_real_allocations(tmp_path, request):
    probe = rss_probe(tmp_path)
    size = 120
    # Settle this process first: earlier tests in this pytest process may leave garbage and free
    # heap that a collection or a trim during the test would give back, hiding the allocation
    # (it failed once so: "grew 0 MB"). Collections stay off until the readings are taken.
    Cleaner(probe).run(full=True, reason="test")
    gc.disable()
    request.addfinalizer(gc.enable)
    base = probe.used_bytes() / MB
    # Room for the reservation and 72 MB more, whatever this process already uses.
    governor = Governor(GovernorConfig(limit_mb=base + size + 72), probe=probe)
    with governor.reserve(size) as reservation:
        # Promised, not yet allocated: the promise counts, so 100 MB more does not fit.
        assert governor.admits(40) and not governor.admits(100)
        block = allocate(size)
        grown = probe.used_bytes() / MB - base
        assert grown >= size * 0.95, f"the allocation did not show in RSS ({grown:.0f} MB)"
        # Allocated and still promised: counted twice (the old accounting), 40 MB no longer fits...
        assert not governor.admits(40)
        reservation.hold(size)
        # ...until the holder says it holds it: counted once, in the reading.
        assert governor.outstanding_mb() == 0 and reservation.unspent == 0
        assert governor.admits(40), "40 MB truly fits and is refused: memory counted twice"
        assert not governor.admits(100), (
            "100 MB does not fit and is admitted: memory not counted at all"
        )
        decision = governor.admit(40)  # the door agrees, and pledges the 40 MB
        assert decision.admitted and governor.outstanding_mb() == 40
        decision.pledge.release()
        del block
    assert governor.outstanding_mb() == 0


def test_hold_then_shrink_and_grow_keep_the_ledger_exact(cgroup):
    governor = make_governor(cgroup)
    with governor.reserve(300) as reservation:
        reservation.hold(100)
        assert governor.outstanding_mb() == 200
        reservation.shrink_to(50)  # it now holds 50 (all of it in hand), nothing promised
        assert governor.outstanding_mb() == 0 and reservation.nbytes == 50 * MB
        reservation.grow_to(250)  # 200 more promised for the next step
        assert governor.outstanding_mb() == 200
    assert governor.outstanding_mb() == 0


def test_a_pledge_made_at_the_door_is_taken_over_by_the_first_reservation(cgroup):
    governor = make_governor(cgroup)
    decision = governor.admit(100)
    assert decision.admitted and governor.outstanding_mb() == 100
    with governor.reserve(150):
        assert governor.outstanding_mb() == 150  # not 250: the pledge became part of it
        decision.pledge.release()  # nothing left of it to give back
        assert governor.outstanding_mb() == 150
    assert governor.outstanding_mb() == 0


# --- the door's line ---------------------------------------------------------------------


class Gate:
    """A WSGI app that answers only when let through, so a test controls how long requests run."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self, environ, start_response):
        self.entered.release()
        self.open.wait(30)
        return hello_app(environ, start_response)


def in_thread(fn, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn(*args)))
    thread.start()
    return thread, result


def test_a_request_that_does_not_fit_waits_then_runs_when_memory_frees(cgroup):
    governor = make_governor(cgroup, admission_wait_s=30)
    app = MemoryGovernorMiddleware(hello_app, governor, route_costs_mb={"/heavy": 100})
    cgroup.set_used(700)  # 700 + 100 > 750
    thread, result = in_thread(call, app, "/heavy")
    wait_for(lambda: governor.queue_length() == 1, timeout=10, what="the request to queue")
    assert governor.snapshot()["admission"]["queue_length"] == 1 and "value" not in result
    assert call(app, "/health")[0] == "200 OK"  # monitoring never waits
    cgroup.set_used(300)
    thread.join(30)
    assert result["value"][0] == "200 OK"
    admission = governor.snapshot()["admission"]
    assert (
        admission["queued"] == 1
        and admission["admitted_after_wait"] == 1
        and admission["queue_length"] == 0
    )
    # the pledge went with the request
    assert governor.shed_count == 0 and governor.outstanding_mb() == 0


def test_a_request_is_refused_after_its_wait(cgroup):
    governor = make_governor(cgroup, admission_wait_s=0.3)
    app = MemoryGovernorMiddleware(hello_app, governor, route_costs_mb={"/heavy": 100})
    cgroup.set_used(700)
    status, headers, _ = call(app, "/heavy")
    assert status.startswith("503") and headers["Retry-After"] == "5"
    admission = governor.snapshot()["admission"]
    assert admission["shed_after_wait"] == 1 and admission["longest_wait_s"] >= 0.3
    assert governor.queue_length() == 0


def test_over_the_hard_limit_by_the_reading_a_request_is_refused_without_waiting(cgroup):
    governor = make_governor(cgroup, admission_wait_s=30)
    app = MemoryGovernorMiddleware(hello_app, governor, route_costs_mb={"/heavy": 100})
    cgroup.set_used(800)  # no promise ending can make room
    assert call(app, "/heavy")[0].startswith("503")
    assert governor.snapshot()["admission"]["queued"] == 0 and governor.shed_count == 1


def test_a_full_line_refuses_at_once_and_monitoring_still_answers(cgroup):
    governor = make_governor(cgroup, admission_wait_s=30, admission_queue=1)
    app = MemoryGovernorMiddleware(
        hello_app, governor, route_costs_mb={"/heavy": 100}, exempt_prefixes=("/progress/",)
    )
    cgroup.set_used(700)
    waiting, result = in_thread(call, app, "/heavy")
    wait_for(lambda: governor.queue_length() == 1, timeout=10, what="the first request to queue")
    status, headers, _ = call(app, "/heavy")
    assert status.startswith("503") and headers["Retry-After"] == "5"
    assert governor.snapshot()["admission"]["shed_queue_full"] == 1
    for path in ("/health", "/memory", "/metrics", "/progress/abc"):
        assert call(app, path)[0] == "200 OK"
    cgroup.set_used(100)
    waiting.join(30)
    assert result["value"][0] == "200 OK"


def test_the_line_is_first_come_first_served(cgroup):
    gate = Gate()
    governor = make_governor(cgroup, admission_wait_s=30)
    app = MemoryGovernorMiddleware(gate, governor, route_costs_mb={"/heavy": 100})
    cgroup.set_used(700)
    first, first_result = in_thread(call, app, "/heavy")
    wait_for(lambda: governor.queue_length() == 1, timeout=10, what="the first request to queue")
    second, second_result = in_thread(call, app, "/heavy")
    wait_for(lambda: governor.queue_length() == 2, timeout=10, what="the second request to queue")
    cgroup.set_used(600)  # room for one (600 + 100 < 750), not two (its pledge counts)
    assert gate.entered.acquire(timeout=10)
    assert governor.queue_length() == 1 and not gate.entered.acquire(timeout=0.3)
    gate.open.set()  # the first ends, its pledge goes: the second runs
    first.join(30)
    second.join(30)
    assert first_result["value"][0] == second_result["value"][0] == "200 OK"


def test_the_line_is_shared_by_forked_workers(cgroup):
    """A request waiting in a forked worker is in the same line: the parent's newcomer queues behind
    it."""
    governor = make_governor(cgroup, admission_wait_s=30, admission_queue=1)
    cgroup.set_used(700)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # a "worker" whose request waits at the door until memory frees
        try:
            decision = governor.admit(100)
            os.write(write_fd, b"a" if decision.admitted else b"r")
        finally:
            os._exit(0)
    try:
        wait_for(
            lambda: governor.queue_length() == 1, timeout=10, what="the child's request to queue"
        )
        # the line (of 1) is full
        assert not governor.admit(100).admitted and governor.door_shed_full == 1
    finally:
        cgroup.set_used(100)
        assert os.read(read_fd, 1) == b"a"
        os.waitpid(pid, 0)


# --- fair turns between requests ------------------------------------------------------------


def test_a_request_holding_nothing_goes_before_one_holding_several(cgroup):
    """Comic A holds two pictures and waits for more; comic B's first picture gets the next room."""
    governor = make_governor(cgroup)  # limit 750, used 100: room for 3 x 200
    order = []
    a1, a2 = governor.reserve(200, group="A"), governor.reserve(200, group="A")
    a1.__enter__(), a2.__enter__()
    blocker = governor.reserve(200, group="C")
    blocker.__enter__()

    def picture(group):
        with governor.reserve(200, wait_s=30, group=group):
            order.append(group)

    a3, _ = in_thread(picture, "A")
    wait_for(
        lambda: governor.waiting_reservations() == 1, timeout=10, what="A's third picture to wait"
    )
    b1, _ = in_thread(picture, "B")
    wait_for(
        lambda: governor.waiting_reservations() == 2, timeout=10, what="B's first picture to wait"
    )
    blocker.__exit__(None, None, None)  # room for one: B (holding none) before A (holding two)
    b1.join(30)
    a1.__exit__(None, None, None)
    a3.join(30)
    a2.__exit__(None, None, None)
    assert order == ["B", "A"]


def test_reservations_of_a_busy_request_let_the_door_go_first(cgroup):
    """While a request waits at the door, a request already drawing two pictures does not take the
    room."""
    governor = make_governor(cgroup, admission_wait_s=30)
    # kept: a dropped one would release
    drawing = [governor.reserve(150, group="A") for _ in range(2)]
    for reservation in drawing:
        reservation.__enter__()
    blocker = governor.reserve(300, group="C")
    blocker.__enter__()  # 100 + 600 used: nothing more fits
    order = []
    a_more, _ = in_thread(
        lambda: governor.reserve(200, wait_s=30, group="A").__enter__() and order.append("A")
    )
    wait_for(
        lambda: governor.waiting_reservations() == 1, timeout=10, what="A's next picture to wait"
    )
    door, result = in_thread(lambda: (governor.admit(200), order.append("door"))[0])
    wait_for(lambda: governor.queue_length() == 1, timeout=10, what="the newcomer to queue")
    blocker.__exit__(None, None, None)  # room for one of them: the newcomer at the door
    door.join(30)
    assert result["value"].admitted and order == ["door"]
    result["value"].pledge.release()
    a_more.join(30)
    assert order == ["door", "A"]


def test_a_step_waiting_to_grow_holds_none_of_the_pledges_it_could_not_complete_with(cgroup):
    """Hold-and-wait: a growing step that took the door's pledges and then waited for the rest kept
    the pledged requests from starting, and two such steps stalled each other."""
    governor = make_governor(cgroup)  # hard limit 750
    # Two admitted requests (each pledge bound to its request's id, as run_generation does).
    first = governor.admit(100)
    governor.adopt_pledge("first")
    second = governor.admit(100)
    governor.adopt_pledge("second")
    assert first.admitted and second.admitted and governor.outstanding_mb() == 200
    cgroup.set_used(500)  # room: 750 - 500 - 200 = 50
    with governor.reserve(0) as growing:
        thread, result = in_thread(growing.grow_to, 300, 30)  # 200 pledged + 50 free < 300
        wait_for(lambda: governor.waiting_reservations() == 1, timeout=10, what="the step to wait")
        assert governor.outstanding_mb() == 200  # the pledges, still the admitted requests'
        with governor.reserve(100, group="first"), governor.reserve(100, group="second"):
            assert governor.outstanding_mb() == 200  # both started on their pledges, at once
        assert governor.waiting_reservations() == 1 and thread.is_alive()
        cgroup.set_used(400)  # now 350 free: the step grows
        thread.join(30)
        assert not thread.is_alive() and growing.nbytes == 300 * MB
        assert governor.outstanding_mb() == 300
    first.pledge.release(), second.pledge.release()
    assert governor.outstanding_mb() == 0


def test_a_step_finishing_work_under_way_does_not_wait_behind_new_steps(cgroup):
    """An encode frees the samples it consumes: it takes free room even while a new step (which
    needs more than is free) waits for its turn."""
    governor = make_governor(cgroup)  # limit 750, used 100
    blocker = governor.reserve(600, group="C")
    blocker.__enter__()  # 50 MB free
    order = []

    def step(group, mb, under_way):
        with governor.reserve(mb, wait_s=30, group=group, under_way=under_way):
            order.append(group)

    new, _ = in_thread(step, "B", 100, False)
    wait_for(lambda: governor.waiting_reservations() == 1, timeout=10, what="B's step to wait")
    finishing, _ = in_thread(step, "A", 40, True)
    finishing.join(30)
    assert order == ["A"] and new.is_alive()  # A went past B's turn; B still waits for room
    blocker.__exit__(None, None, None)
    new.join(30)
    assert order == ["A", "B"] and governor.outstanding_mb() == 0


def test_a_waiting_first_step_counts_its_requests_pledge_as_its_own(cgroup):
    """The pledge the door gave a request is still there for its first step when that step had
    to wait: it waits only for the rest, not for its whole size on top of the pledge."""
    governor = make_governor(cgroup)  # hard limit 750
    decision = governor.admit(100)
    governor.adopt_pledge("R")  # the request's id (its first step runs in another thread)
    cgroup.set_used(600)  # 600 + 100 pledged: 50 free, and the step wants 150
    first_step = governor.reserve(150, wait_s=30, group="R")
    step, result = in_thread(first_step.__enter__)
    wait_for(lambda: governor.waiting_reservations() == 1, timeout=10, what="the step to wait")
    cgroup.set_used(580)  # 100 pledged + 70 free: enough (150 on top of the pledge would not be)
    step.join(30)
    assert not step.is_alive() and result["value"].nbytes == 150 * MB
    assert governor.outstanding_mb() == 150  # the pledge became part of it
    first_step.__exit__(None, None, None)
    decision.pledge.release()
    assert governor.outstanding_mb() == 0


# --- pledges are each request's own; deadlines bound every wait --------------------------------


def test_a_requests_pledge_is_taken_by_its_own_steps_only(cgroup):
    """The door's pledge for B is B's: A's step cannot start on it (pooled per process, it could,
    and B's first step then found nothing promised and waited)."""
    governor = make_governor(cgroup)  # hard limit 750
    cgroup.set_used(600)  # 150 free

    def admitted_b():
        decision = governor.admit(100)  # in the thread serving B, as the middleware does
        governor.adopt_pledge("B")
        return decision

    door, result = in_thread(admitted_b)
    door.join(10)
    assert result["value"].admitted and governor.outstanding_mb() == 100  # 50 left free
    with pytest.raises(MemoryPressure):
        with governor.reserve(100, group="A"):
            pass
    with governor.reserve(100, group="B"):  # B's step, in any thread: on its pledge, at once
        assert governor.outstanding_mb() == 100
    result["value"].pledge.release()
    assert governor.outstanding_mb() == 0


def test_a_reservation_waits_no_longer_than_its_deadline(cgroup):
    governor = make_governor(cgroup)
    cgroup.set_used(700)
    started = time.monotonic()
    with pytest.raises(MemoryPressure):
        with governor.reserve(100, wait_s=30, deadline=started + 0.2):
            pass
    assert governor.refused_reservations == 1 and governor.waiting_reservations() == 0


def test_a_cost_over_the_hard_limit_is_refused_at_once_not_after_the_wait(cgroup):
    """No wait can make room for more than the hard limit holds (750 MB here): the door refuses
    such a request at once, without entering its line, while one that fits later still waits."""
    governor = make_governor(cgroup, admission_wait_s=30)
    door = MemoryGovernorMiddleware(hello_app, governor, route_costs_mb={"/huge": 800})
    status, headers, body = call(door, "/huge", method="POST")
    assert status.startswith("503") and b"memory_pressure" in body
    assert dict(headers)["Retry-After"]
    admission = governor.snapshot()["admission"]
    assert admission["longest_wait_s"] == 0 and admission["queue_length"] == 0, admission


def test_the_door_gives_each_request_its_deadline_and_honours_a_shorter_one(cgroup):
    governor = make_governor(cgroup, admission_wait_s=30, deadline_s=55, read_deadline_s=25)
    seen = {}

    def app(environ, start_response):
        seen[environ["REQUEST_METHOD"]] = environ["liroo.deadline"] - time.monotonic()
        return hello_app(environ, start_response)

    door = MemoryGovernorMiddleware(app, governor, route_costs_mb={"/heavy": 100})
    call(door, "/heavy", method="POST")
    call(door, "/health", method="GET")
    assert 54 < seen["POST"] <= 55 and 24 < seen["GET"] <= 25
    call(door, "/heavy", method="POST", headers={"HTTP_X_REQUEST_TIMEOUT_MS": "999999999"})
    assert 54 < seen["POST"] <= 55  # never lengthened
    # Memory full behind a shorter client deadline: refused by then, not after admission_wait_s.
    cgroup.set_used(700)
    status, _, _ = call(door, "/heavy", method="POST", headers={"HTTP_X_REQUEST_TIMEOUT_MS": "300"})
    assert status.startswith("503")
    assert governor.snapshot()["admission"]["longest_wait_s"] < 30
    status, _, body = call(
        door, "/heavy", method="POST", headers={"HTTP_X_REQUEST_TIMEOUT_MS": "x"}
    )
    assert status.startswith("400") and b"bad_request_timeout" in body
