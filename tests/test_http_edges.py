"""The worker's own HTTP layer at its edges, on a real gunicorn (2 workers x 8 threads) over raw
sockets: clients that never read their answer, a flood of large uploads trickling in, bodies that
will be refused, HTTP/1.0 with Expect (liroo/server.py, liroo/framing.py, liroo/outgoing.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import requests

from tests import contract
from tests.servers import GunicornServer, wait_for

MEDIA_KEY = "edges/large.bin"
MEDIA_BYTES = 11_700_000
SEND_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server():
    with GunicornServer({"LIROO_CLIENT_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S)}) as running:
        path = os.path.join(running.media_dir, MEDIA_KEY)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(MEDIA_BYTES))
        running.media = path
        yield running


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int = 0, timeout: float = 30):
    sock = socket.socket()
    if rcvbuf:  # a small window: the server's sends block after little
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            piece = sock.recv(1 << 20)
        except ConnectionResetError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece


def split(raw: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def health_latencies(server, times: int) -> list[float]:
    took = []
    for _ in range(times):
        start = time.monotonic()
        assert requests.get(server.url("/health"), timeout=5).status_code == 200
        took.append(time.monotonic() - start)
    return took


def media_request(extra: bytes = b"") -> bytes:
    return b"GET /media/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (MEDIA_KEY.encode(), extra)


def test_clients_that_never_read_their_answer_hold_no_thread(server):
    """42 clients ask for an 11.7 MB file and never read (16 threads): /health still answers, and
    each of them is closed once it has taken nothing for LIROO_CLIENT_SEND_TIMEOUT_S.

    Before, each held a thread, blocked in send() with no deadline, and /health timed out."""
    never_read = []
    try:
        for _ in range(42):
            sock = connect(server.port, rcvbuf=4096)
            sock.sendall(media_request())
            never_read.append(sock)
        took = health_latencies(server, 20)
        print(f"/health during 42 never-reading clients (ms): {[round(t * 1000) for t in took]}")
        wait_for(
            lambda: server.log().count("not read in time") >= 42,
            timeout=60,
            what="every never-reading client to be closed",
        )
        # What such a client gets if it reads at last: the start of the answer, then the end.
        assert len(read_all(never_read[0])) < MEDIA_BYTES
    finally:
        for sock in never_read:
            sock.close()


@pytest.mark.parametrize("byte_range", [None, (1_000_003, 9_999_999)], ids=["whole", "range"])
def test_a_client_that_reads_late_gets_the_whole_file(server, byte_range):
    """The rest of a file the client was not reading yet is sent by the worker's loop: the bytes
    arrive whole and in order, for a range too."""
    with open(server.media, "rb") as f:
        expected = f.read()
    extra = b""
    if byte_range:
        extra = b"Range: bytes=%d-%d\r\n" % byte_range
        expected = expected[byte_range[0] : byte_range[1] + 1]
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(media_request(extra + b"Connection: close\r\n"))
        threading.Event().wait(1)  # a client slow to start reading, not a synchronisation
        status, _, body = split(read_all(sock))
    assert status == (206 if byte_range else 200)
    assert body == expected


def test_a_kept_alive_connection_serves_its_next_request_after_a_late_read(server):
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(
            media_request() + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        threading.Event().wait(1)  # a client slow to start reading, not a synchronisation
        raw = read_all(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 2 and len(raw) > MEDIA_BYTES


def trickle_flood(port: int, stop: threading.Event, socks: list) -> None:
    """60 uploads from another address, each announcing 1,048,000 bytes, sending 20 KB, then a
    byte every 2 s (never quiet for the 5 s silence timeout)."""
    head = (
        b"POST /generate_comic HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1048000\r\n\r\n"
    )
    for _ in range(60):
        sock = connect(port, source="127.0.0.2")
        sock.sendall(head + b'{"text": "' + b"a" * 20_000)
        socks.append(sock)
    while not stop.wait(2):
        for sock in socks:
            try:
                sock.send(b"a")
            except OSError:
                pass


def test_an_honest_upload_is_served_while_another_client_trickles_60_large_ones(server):
    """Before, the flood took the workers' whole budget for large requests, the honest 18 KB body
    waited unread behind it, and was answered 408 for the server's own wait."""
    stop = threading.Event()
    socks: list = []
    flood = threading.Thread(target=trickle_flood, args=(server.port, stop, socks))
    flood.start()
    try:
        wait_for(lambda: len(socks) == 60, timeout=30, what="the flood to connect")
        wait_for(
            lambda: "Large requests still arriving" in server.log(),
            timeout=30,
            what="the flood to reach a worker's budget",
        )
        text = " ".join(["Plants make food from light."] * 620)  # about 18 KB
        statuses = []
        for _ in range(3):
            response = requests.post(
                server.url("/generate_comic"),
                json={"text": text, "level": "beginner", "image_style": "Comic Book"},
                timeout=60,
            )
            statuses.append(response.status_code)
        # Chunked (no length to reserve by): it holds what came so far, not the whole limit.
        body = json.dumps({"text": text, "level": "beginner", "image_style": "Comic Book"})
        response = requests.post(
            server.url("/generate_comic"),
            data=(body[i : i + 4096].encode() for i in range(0, len(body), 4096)),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        statuses.append(response.status_code)
        print(f"honest 18 KB POST /generate_comic during the trickle flood: {statuses}")
        assert statuses == [200, 200, 200, 200], response.text
        took = health_latencies(server, 5)
        print(f"/health during the trickle flood: max {max(took) * 1000:.0f} ms")
    finally:
        stop.set()
        flood.join()
        for sock in socks:
            sock.close()


def test_a_body_that_will_be_refused_is_not_asked_for_and_its_connection_closes(server):
    """Expect: 100-continue with a Content-Length over the limit: no 100 Continue, the 413 at once
    with Connection: close, and the connection closed (before, 100 Continue, then a 413 kept alive
    while a thread waited 5 s for the unread body)."""
    head = (
        b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2000000\r\n"
    )
    for expect, first_bytes in ((b"Expect: 100-continue\r\n", b""), (b"", b'{"prompt": "a')):
        with connect(server.port, timeout=4) as sock:
            sock.sendall(head + expect + b"\r\n" + first_bytes)
            raw = read_all(sock)  # ends: the server closed the connection
        assert b"100 Continue" not in raw
        status, head_seen, body = split(raw)
        assert status == 413 and b"connection: close" in head_seen
        assert contract.decode_error(json.loads(body))["code"] == "payload_too_large"


def test_no_1xx_to_http_1_0(server):
    body = b'{"prompt": "A lighthouse"}'
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /generate_image HTTP/1.0\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        threading.Event().wait(0.3)  # a client that sends its body late anyway, not a sync
        sock.sendall(body)
        raw = read_all(sock)
    assert b" 100 " not in raw.split(b"\r\n", 1)[0]
    assert raw.startswith(b"HTTP/1.0 200"), raw[:200]  # answered in the client's version


def send_each(socks: list, data: bytes) -> None:
    for sock in socks:
        try:
            sock.sendall(data)
        except OSError:  # closed by the server (before the fix: timed out while kept waiting)
            pass


def test_a_fully_sent_body_is_not_timed_out_while_the_server_keeps_it_waiting():
    """One client's uploads fill its share of the budget and trickle (a byte every 2 s) for about
    7 s; its next body, fully sent, waits unread behind them. That wait is the server's: the body
    is served once the others are done, not answered 408 after 5 s of the server's own pause."""
    server = GunicornServer(
        {"WEB_CONCURRENCY": "1", "LIROO_MAX_BODY_BYTES": "65536", "LIROO_MAX_INPUT_CHARS": "50000"}
    ).start()
    head = (
        b"POST /generate_image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n"
    )
    trickling = []
    try:
        for _ in range(9):  # 9 x 60 kB: more than the worker's 8 x 64 KiB
            sock = connect(server.port)
            sock.sendall(head % 60_000 + b"x" * 20_000)
            trickling.append(sock)
        wait_for(
            lambda: "Large requests still arriving" in server.log(),
            timeout=30,
            what="the worker's budget to fill",
        )
        body = b'{"prompt": "' + b"a" * (48_000 - 14) + b'"}'
        with connect(server.port) as honest:
            honest.sendall(head % len(body) + body)
            for _ in range(4):  # about 7 s of trickling: more than the 5 s silence timeout
                threading.Event().wait(1.8)  # the trickle's pace, not a synchronisation
                send_each(trickling, b"x")
            send_each(trickling, b"x" * (60_000 - 20_004))
            status, _, answer = split(read_all(honest))
        assert status == 200, answer
    finally:
        for sock in trickling:
            sock.close()
        server.__exit__(None, None, None)
