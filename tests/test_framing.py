"""liroo/framing.py with byte strings, no sockets: where a request arriving in pieces ends, what its
head says about its body, and how the bytes of large requests still arriving are shared.

Requests are given as whole byte strings (as gunicorn's tests/requests/ files give them) and fed
both at once and one byte at a time: the framing found must be the same.
"""

from __future__ import annotations

import pytest

from liroo.framing import Arrival, ArrivalBudget, ArrivalClock, Limits

LIMITS = Limits(line=8190, head=16 * 1024, max_body=1000)
HEAD = b"POST /generate_comic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

# name -> (request, complete, body_length, chunked, wants_continue, body_refused)
REQUESTS = {
    "no body": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", True, None, False, False, False),
    "body of its length": (HEAD + b"Content-Length: 2\r\n\r\n{}", True, 2, False, False, False),
    "body short of its length": (
        HEAD + b"Content-Length: 5\r\n\r\n{}",
        False,
        5,
        False,
        False,
        False,
    ),
    "head not ended": (HEAD + b"Content-Length: 2\r\n", False, None, False, False, False),
    "case and blanks of the field": (
        HEAD + b"content-LENGTH: \t2 \r\n\r\n{}",
        True,
        2,
        False,
        False,
        False,
    ),
    "chunked, ended": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x=1\r\n{}\r\n0\r\n\r\n",
        True,
        None,
        True,
        False,
        False,
    ),
    "chunked, with a trailer": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n",
        True,
        None,
        True,
        False,
        False,
    ),
    "chunked, last chunk missing": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
        False,
        None,
        True,
        False,
        False,
    ),
    "chunked, malformed size: gunicorn judges now": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        True,
        None,
        True,
        False,
        False,
    ),
    "another coding: refused from the head": (
        HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        True,
        None,
        False,
        False,
        False,
    ),
    "two lengths: refused from the head": (
        HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n",
        True,
        None,
        False,
        False,
        False,
    ),
    "length and chunked: refused from the head": (
        HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        True,
        None,
        False,
        False,
        False,
    ),
    "a line ended by LF alone: gunicorn judges now": (
        b"GET /health HTTP/1.1\nHost: x\r\n",
        True,
        None,
        False,
        False,
        False,
    ),
    "Expect on HTTP/1.1 with a body": (
        HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        False,
        5,
        False,
        True,
        False,
    ),
    "Expect on HTTP/1.0: no 1xx (RFC 9110 section 10.1.1)": (
        b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        False,
        5,
        False,
        False,
        False,
    ),
    "Expect with a body over the limit: refused unread, not asked for": (
        HEAD + b"Expect: 100-continue\r\nContent-Length: 1001\r\n\r\n",
        True,
        0,
        False,
        False,
        True,
    ),
    "a length over the limit: complete from the head": (
        HEAD + b"Content-Length: 200000000\r\n\r\n{",
        True,
        0,
        False,
        False,
        True,
    ),
    "a length at the limit": (
        HEAD + b"Content-Length: 1000\r\n\r\n",
        False,
        1000,
        False,
        False,
        False,
    ),
}


def fed(request: bytes, one_byte_at_a_time: bool) -> tuple[Arrival, bool]:
    arrival = Arrival(LIMITS)
    pieces = [request[i : i + 1] for i in range(len(request))] if one_byte_at_a_time else [request]
    complete = False
    for piece in pieces:
        arrival.add(piece)
        complete = arrival.complete()
        if complete:
            break
    return arrival, complete


@pytest.mark.parametrize("one_byte_at_a_time", [False, True], ids=["whole", "byte by byte"])
@pytest.mark.parametrize("name", list(REQUESTS))
def test_framing_of_each_request(name, one_byte_at_a_time):
    request, complete, body_length, chunked, wants_continue, refused = REQUESTS[name]
    arrival, done = fed(request, one_byte_at_a_time)
    assert done == complete
    assert arrival.body_length == body_length
    assert (arrival.chunks is not None) == chunked
    assert arrival.wants_continue == wants_continue
    assert arrival.body_refused == refused


def test_a_request_line_or_head_over_gunicorns_limits_is_judged_without_waiting():
    line, _ = fed(b"GET /" + b"a" * 9000, False)
    assert line.complete()
    head, _ = fed(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 3000, False)
    assert head.complete()


def test_a_chunked_body_past_the_limit_is_judged_without_waiting_for_its_end():
    arrival = Arrival(LIMITS, HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    assert not arrival.complete()
    arrival.add(b"%x\r\n" % 2000 + b"x" * 1001)
    assert arrival.complete()


def test_the_bytes_a_request_will_hold():
    head = HEAD + b"Content-Length: 900\r\n\r\n"
    sized = Arrival(LIMITS, head)
    sized.complete()
    assert sized.size_bound(64) == len(head) + 900  # all of it, known from the head
    chunked = Arrival(LIMITS, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"x" * 10)
    chunked.complete()
    # What came and one more read, not the whole body limit.
    assert chunked.size_bound(64) == len(chunked.buf) + 64
    chunked.add(b"x" * 2000)
    assert chunked.size_bound(64) == chunked.head_end + 1000 + 64  # never more than it may grow to


def test_time_the_server_kept_a_request_waiting_counts_for_no_timeout():
    clock = ArrivalClock(now=100.0)
    assert clock.expired(106.0, quiet_s=5, total_s=30)
    clock.pause(101.0)
    assert not clock.expired(160.0, quiet_s=5, total_s=30)  # all sent; the server's wait
    clock.resume(160.0)
    assert not clock.expired(163.0, quiet_s=5, total_s=30)
    assert clock.expired(165.5, quiet_s=5, total_s=30)  # silent 5 s since it was read again
    clock.byte_came(165.0)
    assert clock.expired(189.5, quiet_s=100, total_s=30)  # 30 s of its own, the wait left out


def test_one_peer_cannot_take_the_whole_budget():
    budget = ArrivalBudget(total=10_000, peer_share=2_500)
    assert budget.ask("a1", "attacker", 1_200) and budget.ask("a2", "attacker", 1_200)
    assert not budget.ask("a3", "attacker", 1_200)  # over its share: waits
    assert budget.is_waiting("a3")
    assert budget.ask("h1", "honest", 1_200)  # another peer still finds room
    assert budget.give_back("a1") == ["a3"]  # the attacker's own bytes came back
    assert budget.held == 3_600


def test_waiting_requests_are_granted_in_line_without_overcommitting():
    budget = ArrivalBudget(total=3_000, peer_share=3_000)
    assert budget.ask("a", "p", 2_000)
    assert not budget.ask("b", "q", 2_000)
    assert not budget.ask("c", "r", 1_500)
    assert budget.ask("d", "s", 900)  # fits beside "a"
    assert budget.give_back("unknown") == []
    assert budget.give_back("a") == ["b"]  # "c" is next, but "b" took the room first
    assert budget.held == 2_900 and budget.is_waiting("c")
    assert budget.give_back("d") == []
    assert budget.give_back("b") == ["c"]
    assert budget.held == 1_500


def test_growing_requests_never_wait_on_each_other():
    """Chunked bodies ask for more as they come: when every holder waits to grow, the first in line
    is granted over the budget, so the budget always comes back."""
    budget = ArrivalBudget(total=1_000, peer_share=1_000)
    assert budget.ask("a", "p", 600) and budget.ask("b", "q", 400)
    assert not budget.ask("a", "p", 700)  # "b" still reads: "a" waits
    assert budget.ask("b", "q", 500)  # the only other holder waits: "b" grows over the budget
    assert budget.held == 1_100
    assert budget.give_back("b") == ["a"]
    assert budget.holds("a") == 700 and budget.held == 700
    assert budget.ask("a", "p", 1_100)  # alone: always granted
    assert budget.held == 1_100


def test_the_client_behind_trusted_proxies():
    arrival = Arrival(
        LIMITS,
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 1.2.3.4\r\nx-forwarded-for: 10.0.0.1\r\n\r\n",
    )
    assert arrival.forwarded_for(1) is None  # the head is not looked at yet
    arrival.complete()
    assert arrival.forwarded_for(0) is None  # no proxy trusted: the peer address counts
    assert arrival.forwarded_for(1) == "10.0.0.1"
    assert arrival.forwarded_for(2) == "1.2.3.4"
    assert arrival.forwarded_for(4) is None  # fewer entries than proxies: not believed
