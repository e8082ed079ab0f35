"""Slow and stalled clients on a real gunicorn (2 workers x 8 threads), over raw sockets.

A client that sends part of a request and stops must not hold a thread: the
request is received by the worker's selector loop and reaches a thread only
once it has fully arrived (liroo/server.py). A request that stalls is closed
after LIROO_CLIENT_TIMEOUT_S of silence or LIROO_CLIENT_REQUEST_TIMEOUT_S in
all, with a JSON 408.
"""
from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from tests import contract
from tests.servers import GunicornServer, wait_for

JSON_HEAD = b"Content-Type: application/json\r\n"
IMAGE_BODY = b'{"prompt": "A lighthouse at dusk"}'

# What an attacker (or a broken client) sends before it stops: every stage of a request.
STALLS = {
    "one byte of the request line": b"G",
    "half a head (slowloris)": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    "a chunked body that never ends": b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + JSON_HEAD
    + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"pro\r\n',
    "a body shorter than its Content-Length": b"POST /generate_image HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    + JSON_HEAD
    + b'Content-Length: 1000\r\n\r\n{"prompt": "a',
}


def connect(port: int, timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def parse(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


# Client timeouts (silence, whole request): patient ones keep stalled requests open long enough
# for a test to probe around them; strict ones let a test see them cut.
PATIENT = {"LIROO_CLIENT_TIMEOUT_S": "60", "LIROO_CLIENT_REQUEST_TIMEOUT_S": "120"}
STRICT = {"LIROO_CLIENT_TIMEOUT_S": "1", "LIROO_CLIENT_REQUEST_TIMEOUT_S": "3"}


@pytest.fixture(scope="module")
def patient_server():
    with GunicornServer(PATIENT) as server:
        yield server


@pytest.fixture(scope="module")
def strict_server():
    with GunicornServer(STRICT) as server:
        yield server


def test_health_answers_while_100_stalled_requests_are_open(patient_server):
    """100 connections (25 of each stall) against 16 threads: /health and a generation still answer.

    Before, each stalled connection held a thread with no timeout, and /health stopped answering."""
    stalled = []
    try:
        for i in range(100):
            sock = connect(patient_server.port)
            sock.sendall(list(STALLS.values())[i % len(STALLS)])
            stalled.append(sock)
        for _ in range(20):
            response = requests.get(patient_server.url("/health"), timeout=5)
            assert response.status_code == 200
        response = requests.post(
            patient_server.url("/generate_image"), json={"prompt": "A lighthouse"}, timeout=30
        )
        assert response.status_code == 200, response.text
        for sock in stalled:  # and none of them was answered or closed meanwhile
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("stall", list(STALLS))
def test_a_stalled_request_gets_a_json_408_and_is_closed(strict_server, stall):
    with connect(strict_server.port) as sock:
        sock.sendall(STALLS[stall])
        status, body = parse(read_all(sock))
    assert status == 408
    assert contract.decode_error(body)["code"] == "request_timeout"


def test_a_request_trickling_in_is_cut_at_the_whole_request_bound(strict_server):
    """A byte every 0.3 s never trips the silence timeout (1 s); the 3 s bound on the whole request
    does."""
    with connect(strict_server.port) as sock:
        stop = threading.Event()

        def trickle():
            for byte in (
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 1000
            ):
                if stop.wait(0.3):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            status, body = parse(read_all(sock))
        finally:
            stop.set()
            sender.join()
    assert status == 408 and body["code"] == "request_timeout"


def test_a_silent_connection_is_closed_without_an_answer(strict_server):
    with connect(strict_server.port) as sock:
        assert read_all(sock) == b""


def test_a_request_in_slow_pieces_within_the_timeouts_is_served(strict_server):
    head = (
        b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + JSON_HEAD
        + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(IMAGE_BODY)
    )
    with connect(strict_server.port) as sock:
        for piece in (head[:10], head[10:], IMAGE_BODY[:5], IMAGE_BODY[5:]):
            sock.sendall(piece)
            threading.Event().wait(0.3)  # a slow client, not a synchronisation
        raw = read_all(sock)
    status, body = parse(raw)
    assert status == 200 and body["url"]


def test_keep_alive_pipelining_and_expect_continue_still_work(strict_server):
    with requests.Session() as session:  # several requests on one kept-alive connection
        for _ in range(3):
            assert session.get(strict_server.url("/health"), timeout=10).status_code == 200
    with connect(strict_server.port) as sock:  # two requests sent at once
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert read_all(sock).count(b"HTTP/1.1 200 OK") == 2
    with connect(strict_server.port) as sock:  # the body only after "100 Continue"
        sock.sendall(
            b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + JSON_HEAD
            + b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
            % len(IMAGE_BODY)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(IMAGE_BODY)
        raw = read_all(sock)
    assert raw.count(b"100 Continue") == 0
    status, body = parse(raw)
    assert status == 200 and body["url"]


def test_a_chunked_body_is_served_once_it_ends(strict_server):
    body = b'{"prompt": "A chunked lighthouse"}'
    with connect(strict_server.port) as sock:
        sock.sendall(
            b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + JSON_HEAD
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n" % (10, body[:10], len(body) - 10, body[10:])
        )
        threading.Event().wait(0.3)
        sock.sendall(b"0\r\nX-Trailer: yes\r\n\r\n")
        status, answer = parse(read_all(sock))
    assert status == 200 and answer["url"]


def test_bodies_past_the_workers_budget_wait_and_are_then_served():
    """40 bodies of 48 kB stall at 40 kB: more than the bytes a worker holds for requests still
    arriving (8 threads x 64 kB). The largest wait unread; /health still answers; once the
    clients send the rest, every one is served."""
    # Forty different pictures: forty copies of one would be one request and its retries (joins).
    bodies = [b'{"prompt": "%02d' % n + b"a" * (48_000 - 16) + b'"}' for n in range(40)]
    with GunicornServer(
        {**PATIENT, "LIROO_MAX_BODY_BYTES": str(64 * 1024), "LIROO_MAX_INPUT_CHARS": "50000"}
    ) as server:
        socks = []
        try:
            for body in bodies:
                sock = connect(server.port, timeout=60)
                sock.sendall(
                    b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + JSON_HEAD
                    + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + body[:40_000]
                )
                socks.append(sock)
            wait_for(
                lambda: "Large requests still arriving" in server.log(),
                timeout=30,
                what="a worker to reach its budget",
            )
            assert requests.get(server.url("/health"), timeout=5).status_code == 200
            for sock, body in zip(socks, bodies, strict=True):
                sock.sendall(body[40_000:])
            for sock in socks:
                status, answer = parse(read_all(sock))
                assert status == 200 and answer["url"]
        finally:
            for sock in socks:
                sock.close()


def test_clients_that_never_close_after_their_answer_do_not_stall_the_worker(patient_server):
    """50 requests with `Connection: close` whose clients neither read nor close: each closing
    connection used to hold the worker's whole loop for up to 2 s, /health included."""
    idle = []
    try:
        for _ in range(50):
            sock = connect(patient_server.port)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            idle.append(sock)
        for _ in range(10):
            assert requests.get(patient_server.url("/health"), timeout=5).status_code == 200
        for sock in idle:  # each was answered, and its end closed by the server
            assert b"HTTP/1.1 200 OK" in read_all(sock)
    finally:
        for sock in idle:
            sock.close()
