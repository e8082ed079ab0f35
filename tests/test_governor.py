"""The governor's parts in-process: thresholds, reservations (also across processes), cleanup,
middleware.

Memory figures come from fake cgroup files that the real probe reads (see
tests/cgroupfake.py), so a test can put the "container" at any level.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from liroo.governor import (
    Governor,
    GovernorConfig,
    Level,
    MemoryGovernorMiddleware,
    MemoryPressure,
    MemoryProbe,
    Thresholds,
)
from liroo.governor.policy import ReservationLedger
from liroo.governor.timings import ALL_ROUTES
from tests.cgroupfake import FakeCgroupV2
from tests.helpers.wsgi import call, hello_app
from tests.servers import ROOT, wait_for


@pytest.fixture
def cgroup(tmp_path):
    return FakeCgroupV2(tmp_path, limit_mb=1000, used_mb=100)


def make_governor(cgroup, **config):
    return Governor(GovernorConfig(**config), probe=MemoryProbe(cgroup.root))


# --- thresholds ---------------------------------------------------------------


def test_thresholds_derive_from_cgroup_limit():
    t = Thresholds.derive(4096 * 1024 * 1024)
    assert (t.limit_mb, t.cleanup_mb, t.warning_mb) == (3072, 4096 * 0.6, 2048)


def test_thresholds_without_limit_use_the_guide():
    t = Thresholds.derive(None)
    assert (t.limit_mb, t.cleanup_mb, t.warning_mb) == (1500, 1200, 1000)


def test_explicit_thresholds_win():
    t = Thresholds.derive(4096 * 1024 * 1024, limit_mb=900, warning_mb=500)
    assert (t.limit_mb, t.cleanup_mb, t.warning_mb) == (
        900,
        720,
        500,
    )  # cleanup keeps 60/75 of the hard limit
    assert (
        t.level(899) == Level.CLEANUP
        and t.level(900) == Level.CRITICAL
        and t.level(10) == Level.NORMAL
    )
    assert t.level(600) == Level.WARNING


def test_thresholds_stay_ordered():
    t = Thresholds.derive(None, limit_mb=100, cleanup_mb=500, warning_mb=800)
    assert t.warning_mb <= t.cleanup_mb <= t.limit_mb == 100


def test_governor_reads_limit_from_cgroup(cgroup):
    governor = make_governor(cgroup)
    assert governor.thresholds.limit_mb == 750
    assert governor.probe.source == "cgroup_v2"
    cgroup.set_used(760)
    assert governor.level() == Level.CRITICAL


# --- reservations --------------------------------------------------------------


def test_reserve_admits_within_limit_and_releases(cgroup):
    governor = make_governor(cgroup)  # limit 750, used 100
    with governor.reserve(300) as r1:
        assert governor.outstanding_mb() == 300
        with governor.reserve(300):
            assert governor.outstanding_mb() == 600
            with pytest.raises(MemoryPressure) as info:
                with governor.reserve(100):
                    pass
            assert info.value.retry_after_s == 5 and info.value.limit_mb == 750
        r1.grow_to(320)
        assert governor.outstanding_mb() == 320
    assert governor.outstanding_mb() == 0
    assert governor.refused_reservations == 1


def test_reserve_counts_current_usage(cgroup):
    governor = make_governor(cgroup)
    cgroup.set_used(700)
    with pytest.raises(MemoryPressure):
        with governor.reserve(60):
            pass
    cgroup.set_used(600)
    with governor.reserve(60):
        pass


def test_waiting_reservation_gets_room_when_another_is_released(cgroup):
    governor = make_governor(cgroup)
    got_it = threading.Event()
    first = governor.reserve(600)
    first.__enter__()

    def waiter():
        with governor.reserve(100, wait_s=30):
            got_it.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(
        lambda: governor.waiting_reservations() == 1,
        timeout=10,
        what="the second reservation to wait",
    )
    assert not got_it.is_set() and governor.snapshot()["waiting_reservations"] == 1
    first.__exit__(None, None, None)
    thread.join(30)
    assert got_it.is_set()


def test_waiting_reservation_fails_after_its_deadline(cgroup):
    governor = make_governor(cgroup)
    cgroup.set_used(740)
    with pytest.raises(MemoryPressure):
        with governor.reserve(50, wait_s=0.2):
            pass


def test_a_step_waiting_for_room_trims_without_collecting(cgroup):
    """A full gc stops every thread of the worker; a step short of room only trims the heap
    (its room is in buffers freed as they go out of scope), while the door still collects."""
    governor = make_governor(cgroup, cleanup_min_interval_s=0)
    cleanups = []
    governor.events.subscribe(
        lambda event: event.kind.value == "cleanup" and cleanups.append(event.figures)
    )
    cgroup.set_used(740)
    with pytest.raises(MemoryPressure):
        with governor.reserve(50, wait_s=0.2):
            pass
    room = [figures["kind"] for figures in cleanups if figures["reason"] == "room"]
    assert room and set(room) == {"trim"}


def test_ledger_is_shared_with_forked_children():
    """A reservation made in a forked worker counts against the parent's admission, and vice
    versa."""
    ledger = ReservationLedger()
    read_fd, write_fd = os.pipe()
    go_fd_r, go_fd_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: reserve 200 MB, report, wait for the parent, release
        try:
            ledger.try_add(200 * 1024 * 1024, lambda total: True)
            os.write(write_fd, b"x")
            os.read(go_fd_r, 1)
            ledger.remove(200 * 1024 * 1024)
            os.write(write_fd, b"y")
        finally:
            os._exit(0)
    assert os.read(read_fd, 1) == b"x"
    assert ledger.total_bytes() == 200 * 1024 * 1024
    assert not ledger.try_add(100, lambda total: total == 0)
    os.write(go_fd_w, b"g")
    assert os.read(read_fd, 1) == b"y"
    os.waitpid(pid, 0)
    assert ledger.total_bytes() == 0


def test_ledger_forgets_a_dead_worker():
    ledger = ReservationLedger()
    pid = os.fork()
    if pid == 0:
        ledger.try_add(50, lambda total: True)
        os._exit(0)  # dies holding its reservation
    os.waitpid(pid, 0)
    assert ledger.total_bytes() == 50
    ledger.forget(pid)
    assert ledger.total_bytes() == 0


# --- cleanup ------------------------------------------------------------------


def test_cleanup_is_rate_limited_and_counted(cgroup):
    governor = make_governor(cgroup, cleanup_min_interval_s=3600)
    events = []
    governor.subscribe(events.append)
    first = governor.cleanup(full=True, reason="test")
    assert first is not None and first.kind == "full"
    assert governor.cleanup(full=True, reason="test") is None  # within the interval
    assert governor.cleaner.runs == 1
    assert [e.kind for e in events] == ["cleanup"]
    assert "reclaimed_mb" in events[0].figures


def test_cleanup_gives_memory_back():
    governor = Governor(GovernorConfig(cleanup_min_interval_s=0))
    blob = [bytes(1000) for _ in range(200_000)]  # ~200 MB of small objects
    before = governor.probe.rss_bytes()
    del blob
    result = governor.cleanup(full=True, reason="test")
    if not governor.cleaner.can_trim:
        pytest.skip("no glibc malloc_trim here")
    assert result.rss_after < before


# --- middleware ---------------------------------------------------------------


def test_middleware_passes_requests_under_the_limit(cgroup):
    governor = make_governor(cgroup)
    app = MemoryGovernorMiddleware(hello_app, governor)
    status, _, body = call(app)
    assert status == "200 OK" and body == b"hello"
    assert governor.requests_served == 1 and governor.shed_count == 0


def test_middleware_sheds_above_the_limit_but_never_health(cgroup):
    governor = make_governor(cgroup)
    events = []
    governor.subscribe(events.append)
    app = MemoryGovernorMiddleware(hello_app, governor)
    cgroup.set_used(800)
    status, headers, body = call(app, headers={"HTTP_X_REQUEST_ID": "abc"})
    assert status.startswith("503")
    assert headers["Retry-After"] == "5" and headers["Connection"] == "close"
    payload = json.loads(body)
    assert payload["code"] == "memory_pressure" and payload["error"]
    assert (
        payload["memory_usage_mb"] == 800
        and payload["memory_limit_mb"] == 750
        and payload["retry_after_s"] == 5
    )
    assert governor.shed_count == 1
    assert [e.kind for e in events if e.kind == "shed"] == ["shed"]
    for path in ("/health", "/memory", "/metrics"):
        assert call(app, path)[0] == "200 OK"


def test_middleware_accounts_for_declared_route_cost(cgroup):
    governor = make_governor(cgroup, admission_wait_s=0)  # no wait at the door: refused at once
    app = MemoryGovernorMiddleware(hello_app, governor, route_costs_mb={"/heavy": 400})
    cgroup.set_used(400)  # 400 + 400 > 750, but a cheap route still passes
    assert call(app, "/heavy")[0].startswith("503")
    assert call(app, "/light")[0] == "200 OK"


def test_middleware_cleans_up_after_close_only_above_threshold(cgroup):
    governor = make_governor(cgroup, cleanup_min_interval_s=0)
    app = MemoryGovernorMiddleware(hello_app, governor)
    call(app)
    assert governor.cleaner.runs == 0  # 100 MB: nothing to do
    cgroup.set_used(650)  # above the cleanup line (600), under the limit
    call(app)
    assert governor.cleaner.runs == 1


def test_middleware_cleanup_is_rate_limited(cgroup):
    governor = make_governor(cgroup, cleanup_min_interval_s=3600)
    app = MemoryGovernorMiddleware(hello_app, governor)
    cgroup.set_used(650)
    for _ in range(20):
        call(app)
    assert governor.cleaner.runs == 1


FRESH_HEAP_SCRIPT = """
import ctypes, ctypes.util, json, sys, tempfile
from liroo.governor import Governor, GovernorConfig, MemoryGovernorMiddleware, MemoryProbe
from liroo.governor.probe import MB
from tests.cgroupfake import FakeCgroupV2
from tests.helpers.wsgi import call, hello_app

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

try:
    mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
except (OSError, AttributeError, TypeError):
    print(json.dumps(None)); sys.exit()
mallinfo2.restype = Mallinfo2

def mapped_by(nbytes):
    before = mallinfo2().hblkhd
    block = bytearray(nbytes)
    grown = mallinfo2().hblkhd - before
    del block
    return grown

cgroup = FakeCgroupV2(tempfile.mkdtemp(), limit_mb=1000, used_mb=100)
governor = Governor(GovernorConfig(cleanup_min_interval_s=3600), probe=MemoryProbe(cgroup.root))
app = MemoryGovernorMiddleware(hello_app, governor)
seen = []
for used in (100, 550, 650, 100):
    cgroup.set_used(used)
    call(app)
    seen.append([used, governor.mmap.kb, mapped_by(12 * MB) >= 12 * MB])
print(json.dumps(seen))
"""


def test_big_buffers_get_their_own_mmap_only_while_memory_is_tight():
    """Under the cleanup line a 12 MB buffer is served from the heap (reused, no fresh pages to
    zero); at or above it, from its own mmap (over 8 MB), handed back the moment it is freed.
    In a fresh interpreter: the allocator is the process's, and earlier tests leave free heap
    chunks that a big buffer may reuse whatever the threshold."""
    out = subprocess.run(
        [sys.executable, "-c", FRESH_HEAP_SCRIPT], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    if seen is None:
        pytest.skip("not glibc 2.33 or newer: no mallinfo2 to read the allocator with")
    # (MB used of a 1000 MB cgroup: warning 500, cleanup 600) -> threshold KB, own mmap
    assert seen == [[100, 32 * 1024, False], [550, 32 * 1024, False], [650, 8 * 1024, True],
                    [100, 32 * 1024, False]]  # fmt: skip


def test_a_workers_last_costed_request_gives_the_heap_back(cgroup):
    """The heap's free pages go back (a trim, no gc) once a worker's costed requests are all
    done and it grew 8 MB since the latest cleanup: not while one still runs, not after cheap
    requests, not for a few MB."""
    governor = make_governor(cgroup, cleanup_min_interval_s=0)
    events = []
    governor.subscribe(lambda event: event.kind == "cleanup" and events.append(event.figures))
    entered, leave = threading.Event(), threading.Event()

    def held_app(environ, start_response):
        if environ["PATH_INFO"] == "/held":
            entered.set()
            leave.wait(10)
        return hello_app(environ, start_response)

    app = MemoryGovernorMiddleware(held_app, governor, route_costs_mb={"/held": 5, "/heavy": 5})
    cgroup.set_rss(20)
    assert call(app, "/heavy")[0] == "200 OK"  # the first: nothing trimmed yet
    assert [e["reason"] for e in events] == ["idle"]
    cgroup.set_rss(40)
    first = threading.Thread(target=call, args=(app, "/held"))
    first.start()
    assert entered.wait(10)
    assert call(app, "/heavy")[0] == "200 OK"  # one costed request still runs
    assert call(app, "/light")[0] == "200 OK"
    assert len(events) == 1
    leave.set()
    first.join(10)
    assert [(e["reason"], e["kind"]) for e in events] == [("idle", "trim")] * 2
    cgroup.set_rss(45)  # 5 MB more since: kept
    assert call(app, "/heavy")[0] == "200 OK"
    assert len(events) == 2


def test_governor_package_stands_alone(tmp_path):
    """liroo/governor can be lifted out: it imports nothing from Flask or the rest of Liroo."""
    shutil.copytree(ROOT / "liroo" / "governor", tmp_path / "governor")
    script = textwrap.dedent("""
        import sys
        import governor
        from governor import Governor, MemoryGovernorMiddleware
        g = Governor()
        app = MemoryGovernorMiddleware(lambda e, s: [b""], g)
        bad = [m for m in sys.modules if m.split(".")[0] in ("flask", "werkzeug", "liroo")]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_the_expected_wait_follows_the_line_when_memory_frees_before_requests_end(cgroup):
    """Service times say a request first in line waits 30 s behind the one long request running;
    but the line moves when memory frees, often long before a request ends. Requests let in after
    waiting teach the door the line's own pace, and the sooner figure wins: a newcomer the line
    takes in time is queued, not refused at once for the running request's length."""
    governor = make_governor(cgroup, admission_wait_s=30)  # limit 750, used 100
    governor.service_began()  # one long request runs throughout
    governor.timings.record(ALL_ROUTES, 30.0)
    assert governor.expected_wait_s(0) == 30.0

    def wait_in_line_until_memory_frees(deadline_s: float | None):
        holder = governor.admit(600).pledge  # fills memory
        decisions = []

        def newcomer():
            deadline = None if deadline_s is None else time.monotonic() + deadline_s
            decisions.append(governor.admit(100, deadline=deadline))

        threads = [threading.Thread(target=newcomer) for _ in range(2)]
        for number, thread in enumerate(threads, 1):
            thread.start()
            wait_for(
                lambda n=number: len(decisions) + governor.queue_length() == n,
                10,
                what=f"newcomer {number} refused or in line",
            )
        queued = governor.queue_length()
        holder.release()  # memory frees while the long request still runs
        for thread in threads:
            thread.join(10)
        for decision in decisions:
            if decision.pledge:
                decision.pledge.release()
        return queued, decisions

    # Before anyone waited, a newcomer with 30 s to wait is refused: 30 s is not sooner.
    queued, decisions = wait_in_line_until_memory_frees(deadline_s=30)
    assert queued == 0 and {d.refusal for d in decisions} == {"late"}
    # Two requests without a deadline wait in line and are let in when the memory frees.
    queued, decisions = wait_in_line_until_memory_frees(deadline_s=None)
    assert queued == 2 and all(d.admitted and d.queued for d in decisions)
    assert sorted(d.ahead for d in decisions) == [0, 1]
    place_s = governor.timings.line_place_s()
    assert place_s is not None and place_s < 10.0
    assert governor.expected_wait_s(2) == pytest.approx(3 * place_s)
    # Now the same newcomers with 30 s to wait queue, and are let in.
    queued, decisions = wait_in_line_until_memory_frees(deadline_s=30)
    assert queued == 2 and all(d.admitted for d in decisions)
