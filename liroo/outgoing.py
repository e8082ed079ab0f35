"""Answers a client is not reading yet: held by the worker's loop, not by a waiting thread.

A thread writing an answer to a client that does not read it blocks once the
kernel's send buffer is full, with no deadline: 42 clients that ask for a
large file and never read held every thread, and ``/health`` with them. Here a
thread writes what the kernel takes at once; the rest is queued (byte strings
up to a per-worker budget) and the thread moves on. A file the app sends
(``wsgi.file_wrapper``) is queued after its first block, whoever reads it, as a
duplicated descriptor and an offset, and sent with sendfile: no thread copies
it block by block. The worker's loop sends the queue as the
client reads, and closes the connection when the client has taken nothing for
``LIROO_CLIENT_SEND_TIMEOUT_S``. Only when the budget is full does a thread
wait itself, under the same timeout.

Sockets but no gunicorn: liroo/server.py wires it in.
"""

from __future__ import annotations

import errno
import os
import re
import select
import selectors
import socket
import threading
import time
from collections import deque
from typing import Callable

# The answer of the request a thread is serving (a SendSocket), for LoopFileWrapper.
serving = threading.local()

_LINGER_S = 2.0
_LINGER_BYTES = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)


class SendTimeout(OSError):
    """The client took nothing of its answer for the send timeout (an EPIPE: the connection is
    dropped quietly)."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "the client did not read its answer in time")


class SendBudget:
    """The bytes of answers that one worker's loop holds for clients not reading yet."""

    def __init__(self, total: int, per_answer: int) -> None:
        self.left = total
        self.per_answer = per_answer
        self._lock = threading.Lock()

    def take(self, size: int, held: int) -> bool:
        if held + size > self.per_answer:
            return False
        with self._lock:
            if size > self.left:
                return False
            self.left -= size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.left += size


class Outgoing:
    """An answer's bytes the client has not taken yet, in order: byte strings and file tails."""

    def __init__(self, sock: socket.socket, budget: SendBudget) -> None:
        self.sock = sock
        self.budget = budget
        self.pieces: deque = deque()  # memoryview, or [fd, offset, bytes left] of a file
        self.held = 0  # bytes of pieces in memory, taken from the budget
        self.last_progress = time.monotonic()

    def hold_bytes(self, view: memoryview) -> bool:
        if not self.budget.take(len(view), self.held):
            return False
        self.pieces.append(view)
        self.held += len(view)
        return True

    def hold_file(self, fd: int, offset: int, count: int) -> None:
        self.pieces.append([os.dup(fd), offset, count])

    def flush(self) -> bool:
        """Send what the kernel takes now, without waiting; True once nothing is left."""
        while self.pieces:
            piece = self.pieces[0]
            try:
                if isinstance(piece, memoryview):
                    sent = self.sock.send(piece, socket.MSG_DONTWAIT)
                else:
                    sent = _sendfile_now(self.sock, *piece)
            except (BlockingIOError, InterruptedError):
                return False
            if sent:
                self.last_progress = time.monotonic()
            if isinstance(piece, memoryview):
                self.held -= sent
                self.budget.give_back(sent)
                if sent < len(piece):
                    self.pieces[0] = piece[sent:]
                    return False
                self.pieces.popleft()
            else:
                piece[1] += sent
                piece[2] -= sent
                if piece[2] > 0 and sent:
                    continue
                self.pieces.popleft()
                os.close(piece[0])
                if piece[2] > 0:  # the file ended before the bytes the answer promised
                    raise OSError(errno.EPIPE, "file shorter than its answer")
        return True

    def wait_sent(self, timeout_s: float) -> None:
        """Block (in a thread) until everything is sent; SendTimeout after ``timeout_s`` with no
        progress."""
        while not self.flush():
            if time.monotonic() - self.last_progress > timeout_s:
                raise SendTimeout()
            _wait_writable(self.sock, timeout_s)

    def release(self) -> None:
        """Drop what is left (the connection is closing)."""
        for piece in self.pieces:
            if not isinstance(piece, memoryview):
                os.close(piece[0])
        self.pieces.clear()
        self.budget.give_back(self.held)
        self.held = 0


class SendSocket:
    """The client socket as a thread writes an answer: what the kernel cannot take at once is left
    in ``out`` for the loop."""

    def __init__(self, sock: socket.socket, out: Outgoing, head_request: bool, timeout_s: float):
        self.sock = sock
        self.out = out
        self.head_request = head_request
        self.timeout_s = timeout_s
        self.body_left: int | None = None  # body bytes still to come, once the head is sent
        self.head_sent = False

    def sendall(self, data) -> None:
        self._note(data)
        out = self.out
        view = memoryview(data).cast("B")
        if out.pieces:
            out.flush()
        if not out.pieces:
            try:
                while view:
                    view = view[self.sock.send(view, socket.MSG_DONTWAIT) :]
                    out.last_progress = time.monotonic()
            except (BlockingIOError, InterruptedError):
                pass
        if view and not out.hold_bytes(view):
            # The loop cannot hold more: wait for this client, as long as it reads.
            out.wait_sent(self.timeout_s)
            _send_all_waiting(self.sock, view, out, self.timeout_s)

    def send(self, data, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        self._note_body(count)
        self.out.hold_file(file.fileno(), offset, count)  # after any bytes still queued
        self.out.flush()
        return count

    def hand_over_file(self, filelike) -> bool:
        """Leave the rest of the answer, read from ``filelike`` onwards, to the loop (sendfile, no
        thread waiting on the client). False: go on reading it here (the head is not sent yet, or
        the answer's length is not known)."""
        if not self.body_left:
            return False
        try:
            fd = filelike.fileno()
            offset = filelike.tell()
            if os.fstat(fd).st_size - offset < self.body_left:
                return False
        except (AttributeError, OSError, ValueError):
            return False
        self.out.hold_file(fd, offset, self.body_left)
        self.body_left = 0
        return True

    def _note(self, data) -> None:
        """Learn the answer's length from its head (gunicorn sends the head in one piece)."""
        if self.head_sent:
            self._note_body(len(data))
            return
        head = bytes(data[:12])
        if not head.startswith(b"HTTP/") or head[9:10] == b"1":
            return  # not a head, or an interim 1xx
        self.head_sent = True
        length = _CONTENT_LENGTH.search(data)
        status = int(head[9:12])
        if (
            length
            and not _CHUNKED.search(data)
            and not self.head_request
            and status not in (204, 304)
        ):
            self.body_left = int(length.group(1))

    def _note_body(self, size: int) -> None:
        if self.body_left is not None:
            self.body_left = max(self.body_left - size, 0)

    def __getattr__(self, name):
        return getattr(self.sock, name)


class ParkedRequests:
    """The connections of parked requests (worker_contract.Parked) in one worker's loop, each
    handed back to ``resume`` (conn, environ_on_return) once woken. Loop only: a wake that comes
    before the parking thread is done is kept, and the park then resumes at once."""

    def __init__(self, resume: Callable) -> None:
        self.resume = resume
        self.waiting: dict = {}  # conn -> environ_on_return
        self._woken: set = set()  # woken before they were parked

    def park(self, conn, environ_on_return: dict) -> None:
        if conn in self._woken:
            self._woken.discard(conn)
            self.resume(conn, environ_on_return)
        else:
            self.waiting[conn] = environ_on_return

    def wake(self, conn) -> None:
        environ_on_return = self.waiting.pop(conn, None)
        if environ_on_return is None:
            self._woken.add(conn)
        else:
            self.resume(conn, environ_on_return)

    def let_go(self) -> list:
        """Every parked connection, no longer parked (a stopping worker answers them)."""
        conns = list(self.waiting)
        self.waiting.clear()
        return conns


class Closing:
    """Connections closing after their answer (RFC 9112 section 9.6): a FIN now, then what the
    client still sends is drained (up to 64 KiB or 2 s, as gunicorn's ``close_graceful``) by the
    worker's loop, not by gunicorn's blocking close, which held the whole loop up to 2 s for each
    client that did not close its end."""

    def __init__(self, poller: selectors.BaseSelector) -> None:
        self.poller = poller
        self.lingering: dict = {}  # socket -> [deadline, bytes drained]

    def close(self, sock) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.lingering[sock] = [time.monotonic() + _LINGER_S, 0]

    def sweep(self, now: float) -> None:
        for sock, (deadline, _) in list(self.lingering.items()):
            if now > deadline:
                self._end(sock)

    def _drain(self, sock) -> None:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state = self.lingering[sock]
        state[1] += len(data)
        if not data or state[1] >= _LINGER_BYTES:
            self._end(sock)

    def _end(self, sock) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()


class LoopFileWrapper:
    """``wsgi.file_wrapper`` for the app's files (werkzeug's send_file): the first block is read
    here (gunicorn sends the head with it), the rest of the file is sent by the worker's loop."""

    def __init__(self, filelike, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        answer = getattr(serving, "answer", None)
        if answer is not None and answer.hand_over_file(self.filelike):
            raise StopIteration
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _sendfile_now(sock: socket.socket, fd: int, offset: int, count: int) -> int:
    """os.sendfile without blocking, on a socket that may be in blocking mode."""
    timeout = sock.gettimeout()
    if timeout != 0.0:
        sock.setblocking(False)
    try:
        return os.sendfile(sock.fileno(), fd, offset, count)
    finally:
        if timeout != 0.0:
            sock.settimeout(timeout)


def _send_all_waiting(sock, view: memoryview, out: Outgoing, timeout_s: float) -> None:
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT) :]
            out.last_progress = time.monotonic()
        except (BlockingIOError, InterruptedError):
            if time.monotonic() - out.last_progress > timeout_s:
                raise SendTimeout() from None
            _wait_writable(sock, timeout_s)


def _wait_writable(sock, timeout_s: float) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    poller.poll(timeout_s * 1000)


def send_quietly(sock, data: bytes) -> bool:
    """One non-blocking send of a small answer, best effort."""
    try:
        sock.send(data, socket.MSG_DONTWAIT)
        return True
    except OSError:
        return False


def peer_ip(addr) -> str:
    return addr[0] if isinstance(addr, tuple) and addr else "-"
