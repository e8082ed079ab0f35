"""A request's deadline inside its work: every wait ends in time for the answer, a request still
at work at its deadline answers 503 with Retry-After and goes on, and the client's retry with the
same body joins it and gets the result.

The deadline comes from the client header X-Request-Timeout-Ms (relative milliseconds, Envoy's
convention), or LIROO_DEADLINE_S. Real gunicorn and the real SDK against the loopback Gemini;
the logic of the waits is unit-tested without sockets.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from liroo.generation.context import Context, Progress
from liroo.generation.images import Lanes
from liroo.generation.timing import RouteTimes
from liroo.governor import MemoryPressure
from liroo.settings import Settings
from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.bodies import APP_COMIC, script_with
from tests.helpers.http import post
from tests.servers import wait_for

TIMEOUT_HEADER = "X-Request-Timeout-Ms"


def post_comic(server, body, deadline_ms=None, timeout=30):
    """The comic as the app asks for it (no id), with the caller's deadline when given."""
    headers = {TIMEOUT_HEADER: str(deadline_ms)} if deadline_ms else {}
    return post(server, "/generate_comic", body, timeout=timeout, **headers)


def still_working(response) -> dict:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = contract.decode_error(response.json())
    assert body["code"] == "still_working" and body["request_id"]
    return body


def test_a_running_comic_answers_at_its_deadline_and_the_retry_gets_its_result(
    start_server, fake_gemini
):
    """The pictures are held: the request answers 503 at its deadline while its work is still
    waiting for the model (main answered only when the work ended); a retry that joins while it
    runs answers at its own deadline the same way; once the pictures come, the app's retry with
    the same body gets the comic, and the model drew each picture once."""
    fake_gemini.answer(script_with(3))
    fake_gemini.hold("image")
    server = start_server(gemini_env(fake_gemini))
    first = still_working(post_comic(server, APP_COMIC, deadline_ms=1500))
    # answered, the work goes on: it reaches the model (and is held there)
    wait_for(lambda: fake_gemini.requests("image"), 30, what="the work to reach the model")
    joined = still_working(post_comic(server, APP_COMIC, deadline_ms=1000))
    assert joined["request_id"] == first["request_id"]
    fake_gemini.release("image")
    retry = post_comic(server, APP_COMIC, timeout=60)  # the app's retry: same body, no header
    assert retry.status_code == 200, retry.text
    comic = contract.decode_comic(retry.json())
    assert comic["request_id"] == first["request_id"]
    assert all(p.get("image_url") for p in comic["comic"]["panel_layout"])
    assert len(fake_gemini.requests("image")) == 3 and len(fake_gemini.requests("text")) == 1


def test_a_memory_wait_ends_in_time_for_the_answer(start_server, fake_gemini):
    """The door lets the comic in, but its first picture (6000x6000: about 175 MB to decode)
    never finds room to decode under a 200 MB limit: the request answers 503 still_working
    with Retry-After by its deadline, not when LIROO_RESERVATION_WAIT_S runs out (main: 503
    memory_pressure then)."""
    fake_gemini.image_size = (6000, 6000)
    server = start_server(
        gemini_env(
            fake_gemini, MEMORY_LIMIT_MB=200, WEB_CONCURRENCY=1, LIROO_RESERVATION_WAIT_S=5
        )
    )
    still_working(post_comic(server, APP_COMIC, deadline_ms=2000))


# --- the logic, without sockets ------------------------------------------------------------


def context(deadline_in: float, work_in: float, reservation_wait_s: float = 60.0) -> Context:
    now = time.monotonic()
    return Context(
        settings=Settings.from_env({}, reservation_wait_s=reservation_wait_s),
        provider=None,
        storage=None,
        reserver=None,
        progress=Progress(None, "r", total_steps=4),
        request_id="r",
        public_base=None,
        deadline=now + deadline_in,
        work_deadline=now + work_in,
        route="/unit-" + str(id(object())),
    )


def test_a_wait_that_cannot_end_in_time_tells_the_request_and_goes_on():
    ctx = context(deadline_in=5, work_in=100)
    waits: list[float] = []

    def attempt(wait_s: float) -> str:
        waits.append(wait_s)
        if len(waits) == 1:
            raise MemoryPressure(1, 1, 1)
        return "room"

    assert ctx.wait_within(attempt) == "room"
    assert waits[0] == pytest.approx(5, abs=0.5)  # first: until the answer is due
    assert waits[1] == pytest.approx(60, abs=0.5)  # then: LIROO_RESERVATION_WAIT_S
    assert ctx.answer_now.is_set()


def test_a_wait_within_the_deadline_is_one_wait_and_the_work_bound_holds():
    ctx = context(deadline_in=100, work_in=100, reservation_wait_s=60)
    waits: list[float] = []
    assert ctx.wait_within(lambda wait_s: waits.append(wait_s) or "room") == "room"
    assert waits == [pytest.approx(60, abs=0.5)] and not ctx.answer_now.is_set()
    short = context(deadline_in=5, work_in=5)  # the work ends with its answer: it just fails
    with pytest.raises(MemoryPressure):
        short.wait_within(lambda wait_s: (_ for _ in ()).throw(MemoryPressure(1, 1, 1)))
    assert not short.answer_now.is_set()


def test_the_rest_is_expected_from_recent_runs_of_the_route():
    times = RouteTimes()
    assert times.expected_s("/a", 3) is None
    for seconds in (10, 20, 600):  # one slow run does not set the figure
        times.record("/a", seconds, steps=10)
    assert times.expected_s("/a", 3) == pytest.approx(6.0)
    assert times.expected_s("/b", 3) is None


def test_lanes_narrow_to_one_and_open_once_a_cost_is_known():
    lanes = Lanes(4)
    lanes.width = 1  # as for a fresh process: one alone until a picture's cost is known
    lanes.learned()
    assert lanes.width == 4
    ctx = context(deadline_in=30, work_in=30)
    entered = threading.Barrier(4)
    release = threading.Event()

    def hold_a_lane():
        with lanes.lane(ctx, time.monotonic() + 30):
            entered.wait()
            release.wait(30)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(hold_a_lane) for _ in range(3)]
        entered.wait(timeout=30)
        lanes.narrow()  # a fourth found no room beside three: two at once from now on
        assert lanes.width == 2
        lanes.learned()  # narrowed by memory: it stays narrow
        assert lanes.width == 2
        release.set()
        for future in busy:
            future.result(timeout=30)
    for _ in range(5):
        lanes.busy = 2
        lanes.narrow()
    lanes.busy = 0
    assert lanes.width == 1
    wait_for(lambda: lanes.busy == 0, 1)
