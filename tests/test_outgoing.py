"""liroo/outgoing.py on a socket pair: what a thread cannot send at once is queued in order (bytes,
then a file's rest) and sent later as the peer reads; a thread waits only past the budget, and
never longer than the send timeout without progress."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from liroo.outgoing import LoopFileWrapper, Outgoing, SendBudget, SendSocket, SendTimeout, serving

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield server, client
    server.close()
    client.close()


def drain(client: socket.socket, out: Outgoing, size: int) -> bytes:
    """Read ``size`` bytes as the loop would send them: flush, read, again."""
    got = bytearray()
    client.settimeout(5)
    while len(got) < size:
        out.flush()
        got += client.recv(65536)
    return bytes(got)


def test_what_the_peer_does_not_read_is_queued_not_waited_for(pair):
    server, client = pair
    out = Outgoing(server, SendBudget(1 << 20, 1 << 20))
    answer = SendSocket(server, out, head_request=False, timeout_s=5)
    body = os.urandom(300_000)
    answer.sendall(HEAD % len(body))
    answer.sendall(body)  # returns at once although nobody reads
    assert out.pieces and out.held > 0
    assert drain(client, out, len(body) + len(HEAD % len(body))).endswith(body)
    assert out.flush() and out.held == 0


def test_past_the_budget_a_thread_waits_and_gives_up_without_progress(pair):
    server, _client = pair
    budget = SendBudget(total=10_000, per_answer=10_000)
    out = Outgoing(server, budget)
    answer = SendSocket(server, out, head_request=False, timeout_s=0.3)
    with pytest.raises(SendTimeout):
        answer.sendall(os.urandom(500_000))
    out.release()
    assert budget.left == 10_000


def test_a_files_rest_follows_the_bytes_before_it(pair):
    server, client = pair
    content = os.urandom(200_000)
    with tempfile.TemporaryFile() as f:
        f.write(content)
        f.seek(0)
        out = Outgoing(server, SendBudget(1 << 20, 1 << 20))
        answer = SendSocket(server, out, head_request=False, timeout_s=5)
        serving.answer = answer
        try:
            wrapper = LoopFileWrapper(f, 8192)
            answer.sendall(HEAD % len(content))
            for block in wrapper:  # the first block here; the rest handed to the loop
                answer.sendall(block)
        finally:
            serving.answer = None
        wrapper.close()  # the app closes its file: the queued rest has its own descriptor
        head = HEAD % len(content)
        assert drain(client, out, len(head) + len(content)) == head + content


def test_sendfile_and_a_head_request(pair):
    server, client = pair
    content = os.urandom(50_000)
    with tempfile.TemporaryFile() as f:
        f.write(content)
        out = Outgoing(server, SendBudget(1 << 20, 1 << 20))
        answer = SendSocket(server, out, head_request=False, timeout_s=5)
        answer.sendall(HEAD % 1000)
        assert answer.sendfile(f, offset=10, count=1000) == 1000
        head = HEAD % 1000
        assert drain(client, out, len(head) + 1000) == head + content[10:1010]
        # A HEAD answer has no body: a file is never handed over for it.
        head_only = SendSocket(server, Outgoing(server, SendBudget(1, 1)), True, timeout_s=5)
        head_only.sendall(HEAD % len(content))
        assert not head_only.hand_over_file(f)
