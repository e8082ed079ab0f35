"""gunicorn's threaded worker: requests arrive before a thread is given them, and gunicorn's own
errors are JSON.

**Slow clients.** gunicorn's gthread worker hands a connection to a thread as
soon as it is readable, and the thread then blocks, without a deadline, until
the request line, the headers and (when the app reads it) the body have come.
A few dozen clients that send one byte and stop hold every thread, and
``/health`` with them. Here the worker's own selector loop receives each
request first, without blocking: only once the head and the whole body (up to
``LIROO_MAX_BODY_BYTES``) are buffered is the connection given to a thread,
which then parses them from memory. A request that goes quiet for
``LIROO_CLIENT_TIMEOUT_S``, or has not fully arrived after
``LIROO_CLIENT_REQUEST_TIMEOUT_S``, is closed, with a JSON 408 once part of it
came. What a thread still reads itself (a body over the limit, which the app
refuses by its length, or a request whose framing gunicorn judges otherwise)
is read under the same two deadlines. A connection closed after its answer
lingers (RFC 9112 section 9.6: a FIN, then unread bytes drained) in the loop
too, not in gunicorn's blocking ``close_graceful``, which held the whole loop
up to 2 s for each client that did not close its end. The bytes held by requests still
arriving are bounded per worker: 16 KiB a connection (any usual head, a small
body), and for larger requests as many as fit in threads x
``LIROO_MAX_BODY_BYTES`` (what the threads themselves could hold); the next
large one waits unread, held by the kernel's buffers and TCP flow control.

**JSON errors.** Some requests never reach the app: gunicorn refuses a
malformed request line or header, a request line or headers over its limits,
with a small HTML page that quotes part of the request. Every other error of
this service is JSON with ``error`` and ``code`` (../shared/client-contract.md).
This worker keeps gunicorn's whole decision (status, reason, logging) and
changes only the body it sends; the query string of a malformed request line
is not logged (it may carry a key). A transfer coding other than ``chunked``
is refused with 501 (gunicorn would pass a compressed body on as it came).
gunicorn.conf.py names this class as worker_class.

**Stopping.** A request still in the app when a stopping worker's grace ends
(SIGTERM, recycling) would have its connection cut. Its client is answered
first, 503 ``interrupted`` with ``Retry-After`` (the body made by what the app left in
``environ[INTERRUPTED_ANSWER]``, the generation's own error shape), as long as
the app has not begun its answer; the job itself is handed back by
liroo/gunicorn_hooks.py's ``worker_exit``.
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import threading
import time
from functools import partial
from http import HTTPStatus

from gunicorn import util
from gunicorn.http.errors import InvalidRequestLine, ParseException, UnsupportedTransferCoding
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from .errors import INTERRUPTED, error_body, http_error_code
from .gunicorn_hooks import app_settings

# One recv() of a request still arriving; the kernel keeps the rest.
_RECV_BYTES = 64 * 1024
# Past the budget, a request still reads up to this much (any usual head, a small body such as
# /health's none): only large bodies wait.
_ALWAYS_READ_BYTES = 16 * 1024
# As gunicorn's close_graceful: how long, and how much, a closing connection is drained.
_LINGER_S = 2.0
_LINGER_BYTES = 64 * 1024
# Seconds between two sweeps for requests that ran out of time.
_SWEEP_INTERVAL_S = 0.25
# The head fields that decide how the body is framed (RFC 9112 section 6).
_FRAMING_FIELD = re.compile(
    rb"\r\n(content-length|transfer-encoding|expect):[ \t]*([^\r\n]*)", re.IGNORECASE
)
_QUERY = re.compile(r"\?[^\s'\"]*")
# The environ key where the app leaves the answer for a request cut short by a stop.
INTERRUPTED_ANSWER = "liroo.interrupted_answer"


_BARE_LF = re.compile(rb"(?<!\r)\n")


class ClientTimeout(ParseException):
    """The client stopped sending its request, or took too long over it: answered with 408."""

    def __str__(self) -> str:
        return "request not received in time"


def json_error_page(status: int, reason: str, body: dict | None = None, headers: str = "") -> bytes:
    """A whole HTTP/1.1 error response with the service's JSON error body; the connection closes
    after it."""
    if body is None:
        body = error_body(*http_error_code(status))
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Content-Type-Options: nosniff\r\n{headers}\r\n"
    )
    return head.encode("latin-1") + data


class JsonErrorWorker(ThreadWorker):
    def init_process(self) -> None:
        settings = app_settings(self)
        self.client_timeout_s = settings.client_timeout_s
        self.request_timeout_s = settings.client_request_timeout_s
        self.max_body_bytes = settings.max_body_bytes
        self.arrival_budget = self.cfg.threads * settings.max_body_bytes
        # gunicorn's limits, read once (each cfg read is a Python-level lookup): 0 means unlimited.
        self.tls = self.cfg.is_ssl
        self.line_limit = self.cfg.limit_request_line or 8190
        self.head_limit = (
            self.line_limit
            + (self.cfg.limit_request_fields or 32768)
            * ((self.cfg.limit_request_field_size or 8190) + 2)
            + 4
        )
        self.arrivals: dict = {}  # TConn -> _Arrival, requests still arriving
        self.granted = 0  # bytes the larger ones may hold (see _grant)
        self.paused: list = []  # arrivals not read until the budget allows
        self.next_sweep = 0.0
        self.lingering: dict = {}  # socket -> [deadline, bytes drained], closing after an answer
        self.retry_after_s = settings.retry_after_s
        self.in_app: dict = {}  # TConn -> environ, requests in the app with no answer begun
        self.in_app_lock = threading.Lock()
        self.serving = threading.local()  # the connection of this thread's request
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def app_with_stop_answer(environ, start_response):
            conn = self.serving.conn
            with self.in_app_lock:
                self.in_app[conn] = environ
            try:
                return app(environ, start_response)
            finally:
                with self.in_app_lock:
                    # Gone already: the stop answered it (its socket is shut; gunicorn's
                    # write then fails quietly with EPIPE).
                    self.in_app.pop(conn, None)

        self.wsgi = app_with_stop_answer

    def run(self) -> None:
        super().run()  # returns when the stop's grace is over
        with self.in_app_lock:
            cut_short, self.in_app = self.in_app, {}
        for conn, environ in cut_short.items():
            make_body = environ.get(INTERRUPTED_ANSWER)
            body = make_body() if make_body else error_body(*INTERRUPTED)
            body = {**body, "retry_after_s": self.retry_after_s}
            self.log.info(
                "Stopping with a request in the app: answered 503 interrupted (%s)",
                body.get("request_id", "-"),
            )
            headers = f"Retry-After: {self.retry_after_s}\r\n"
            if body.get("request_id"):  # a checked id (8-128 of [A-Za-z0-9_-]) or one the app made
                headers += f"X-Request-ID: {body['request_id']}\r\n"
            try:
                conn.sock.send(
                    json_error_page(503, "Service Unavailable", body, headers), socket.MSG_DONTWAIT
                )
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- requests arrive in the selector loop ------------------------------------------------

    def accept(self, listener) -> None:
        """gthread's accept, making connections that close without blocking the loop."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self, client_sock, client_addr, listener.getsockname()))

    def enqueue_req(self, conn) -> None:
        """Every way into the thread pool (a new connection, a kept-alive one, pipelined bytes)
        passes here."""
        if getattr(conn, "arrived", False) or self.tls:
            conn.arrived = False
            super().enqueue_req(conn)
            return
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        arrival = _Arrival(conn, leftover, self)
        self.arrivals[conn] = arrival
        if conn.sock.gettimeout() != 0.0:  # no syscall when it is non-blocking already
            conn.sock.setblocking(False)
        if leftover and arrival.complete():
            self._hand_over(arrival)
        else:
            # Read at once: a kept-alive connection is here because its next request came.
            self._receive(arrival)

    def _receive(self, arrival, _sock=None) -> None:
        """One non-blocking read of ``arrival``; then hand it over, or wait for the loop's next
        call."""
        size = _RECV_BYTES
        if not arrival.grant:
            size = _ALWAYS_READ_BYTES - len(arrival.buf)
            if size <= 0:
                if not self._grant(arrival):
                    if not self.paused:
                        self.log.warning(
                            "Large requests still arriving hold %d bytes: the next wait",
                            self.granted,
                        )
                    self._watch(arrival, False)
                    self.paused.append(arrival)
                    return
                size = _RECV_BYTES
        try:
            data = arrival.conn.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":  # the client went away
            self._close(arrival)
            return
        if data:
            arrival.add(data)
            if arrival.complete():
                self._hand_over(arrival)
                return
        self._watch(arrival, True)

    def _grant(self, arrival) -> bool:
        """Let ``arrival`` read past _ALWAYS_READ_BYTES if the worker's budget has room for all of
        it.

        Granted requests read to their end, so the budget always comes back (as
        an answer, or a 408): none waits on another that waits too.
        """
        if arrival.head_end is not None and arrival.chunks is None:
            size = arrival.head_end + (arrival.body_length or 0)
        else:
            size = (arrival.head_end or len(arrival.buf)) + self.max_body_bytes
        if self.granted and self.granted + size > self.arrival_budget:
            return False
        arrival.grant = size
        self.granted += size
        return True

    def _watch(self, arrival, on: bool) -> None:
        if on and not arrival.watched:
            self.poller.register(
                arrival.conn.sock, selectors.EVENT_READ, partial(self._receive, arrival)
            )
        elif arrival.watched and not on:
            self.poller.unregister(arrival.conn.sock)
        arrival.watched = on

    def _hand_over(self, arrival) -> None:
        conn = arrival.conn
        self._forget(arrival)
        if conn.parser is None:
            conn.parser = _DeadlineParser(self.cfg, conn.sock, conn.client)
        if isinstance(conn.parser, _DeadlineParser):
            conn.parser.unreader.sock.reset(
                self.client_timeout_s, arrival.started + self.request_timeout_s
            )
        conn.parser.unreader.unread(arrival.buf)  # BytesIO.write takes the bytearray as it is
        if arrival.continue_sent:
            conn.continue_sent = True
        conn.data_ready = True  # gthread's own wait for a first byte is not needed
        conn.arrived = True
        self.enqueue_req(conn)

    def _close(self, arrival, answer: bytes = b"") -> None:
        self._forget(arrival)
        conn = arrival.conn
        if answer:
            try:
                conn.sock.send(answer)  # small enough for the socket's buffer; best effort
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def _forget(self, arrival) -> None:
        self.arrivals.pop(arrival.conn, None)
        self.granted -= arrival.grant
        arrival.grant = 0
        if arrival in self.paused:
            self.paused.remove(arrival)
        self._watch(arrival, False)
        while self.paused and self._grant(self.paused[0]):
            self._watch(self.paused.pop(0), True)

    def linger(self, sock) -> None:
        """Close ``sock`` after an answer: FIN now, then drain what the client still sends, in the
        loop."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering[sock] = [time.monotonic() + _LINGER_S, 0]

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
            self._end_linger(sock)

    def _end_linger(self, sock) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        util.close(sock)

    def murder_pending(self) -> None:
        """Called on every turn of gthread's loop (also while stopping): close requests that ran out
        of time."""
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_sweep or not (self.arrivals or self.lingering):
            return
        self.next_sweep = now + _SWEEP_INTERVAL_S
        for sock, (deadline, _) in list(self.lingering.items()):
            if now > deadline:
                self._end_linger(sock)
        for arrival in list(self.arrivals.values()):
            quiet_s = now - arrival.last_byte
            if not arrival.buf:
                # Nothing sent yet: an idle connection, closed without an answer (a stopping
                # worker closes it sooner, as gthread does with kept-alive ones).
                limit = (
                    min(self.client_timeout_s, STOP_KEEPALIVE_LINGER)
                    if not self.alive
                    else self.client_timeout_s
                )
                if quiet_s > limit:
                    self._close(arrival)
            elif quiet_s > self.client_timeout_s or now > arrival.started + self.request_timeout_s:
                self.log.info(
                    "Request from ip=%s not received in time (%d bytes came): closed with 408",
                    _ip(arrival.conn.client),
                    len(arrival.buf),
                )
                self._close(arrival, json_error_page(408, "Request Timeout"))

    # --- in the thread ---------------------------------------------------------------------------

    def handle_request(self, req, conn):
        self.serving.conn = conn
        if getattr(conn, "continue_sent", False):
            # The loop already said "100 Continue" to get the body; gunicorn must not say it twice.
            req._expected_100_continue = False
            conn.continue_sent = False
        codings = [
            c.strip(" \t").lower()
            for name, value in req.headers
            if name == "TRANSFER-ENCODING"
            for c in value.split(",")
        ]
        if any(c != "chunked" for c in codings):
            raise UnsupportedTransferCoding(", ".join(codings))
        return super().handle_request(req, conn)

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ClientTimeout):
            self.log.info("Request from ip=%s not received in time: closed with 408", _ip(addr))
            try:
                client.sendall(json_error_page(408, "Request Timeout"))
            except OSError:
                pass
            return
        if isinstance(exc, InvalidRequestLine):
            # gunicorn logs the line; its query string may carry a key or user text.
            exc.req = _QUERY.sub("?[query not logged]", str(exc.req))
        super().handle_error(req, _JsonErrorPage(client), addr, exc)


class _Conn(TConn):
    """gthread's connection, whose graceful close is the worker's non-blocking one."""

    def __init__(self, worker: JsonErrorWorker, sock, client, server) -> None:
        super().__init__(worker.cfg, sock, client, server)
        self.worker = worker

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self.sock)  # called in the loop (finish_request)
        else:
            super().close()


class _Arrival:
    """One request on its way in: its bytes so far and how far its framing is known to be
    complete."""

    def __init__(self, conn, buf: bytes, worker: JsonErrorWorker) -> None:
        self.conn = conn
        self.worker = worker
        self.buf = bytearray(buf)
        self.started = self.last_byte = time.monotonic()
        self.continue_sent = False
        self.watched = False  # registered with the worker's selector
        self.grant = 0  # bytes it may hold past _ALWAYS_READ_BYTES (see JsonErrorWorker._grant)
        self.head_end: int | None = None  # offset of the body
        self.body_length: int | None = None
        self.chunks: _ChunkScan | None = None
        self.scanned = 0
        self.bare_lf = False  # a line ended by LF alone (gunicorn refuses it)

    def add(self, data: bytes) -> None:
        self.buf += data
        self.last_byte = time.monotonic()

    def complete(self) -> bool:
        """True when a thread can take the request without waiting for the client (or must answer it
        now)."""
        if self.head_end is None and not self._head():
            return False
        if self.chunks is not None:
            return (
                self.chunks.complete(self.buf)
                or len(self.buf) - self.head_end > self.worker.max_body_bytes
            )
        return len(self.buf) - self.head_end >= (self.body_length or 0)

    def _head(self) -> bool:
        """Find the end of the head and the body's framing; True when known (or when gunicorn must
        judge now)."""
        end = self.buf.find(b"\r\n\r\n", max(0, self.scanned - 3))
        # Only the bytes that arrived since the last look: a head trickled in byte by byte
        # must not be rescanned whole on every read (this runs on the worker's loop thread).
        if not self.bare_lf:
            self.bare_lf = _BARE_LF.search(self.buf, max(0, self.scanned - 1)) is not None
        self.scanned = len(self.buf)
        if end < 0:
            first_line_over = (
                self.buf.find(b"\r\n") < 0 and len(self.buf) > self.worker.line_limit + 2
            )
            head_over = len(self.buf) > self.worker.head_limit
            # Each is refused by gunicorn from what is here: let it answer now.
            if first_line_over or head_over or self.bare_lf:
                self.head_end = len(self.buf)
                return True
            return False
        self.head_end = end + 4
        lengths, codings, expect = [], [], False
        for name, value in _FRAMING_FIELD.findall(self.buf, 0, end + 2):
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",")]
            else:
                expect = value.strip(b" \t").lower() == b"100-continue"
        if codings:
            if codings == [b"chunked"] and not lengths:
                self.chunks = _ChunkScan(self.head_end)
        elif len(lengths) == 1 and lengths[0].isdigit():
            self.body_length = int(lengths[0])
            if self.body_length > self.worker.max_body_bytes:
                self.body_length = 0  # the app refuses it by its length, without reading it
                expect = False
        # Anything else (another coding, several lengths...) is gunicorn's or the app's to
        # refuse from the head alone: no body is waited for.
        if expect and (self.chunks is not None or self.body_length):
            self._send_continue()
        return True

    def _send_continue(self) -> None:
        try:
            self.conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.continue_sent = True
        except OSError:
            pass


class _ChunkScan:
    """Where a chunked body ends, found as its bytes come (RFC 9112 section 7.1).

    Hand-written: gunicorn's ChunkedReader pulls from a blocking source and
    cannot be resumed when bytes run out. A malformed size line ends the scan:
    gunicorn then refuses the body from the bytes at hand.
    """

    def __init__(self, start: int) -> None:
        self.pos = start
        self.remaining = 0  # bytes of chunk data (and its CRLF) still to skip
        self.in_trailer = False

    def complete(self, buf: bytearray) -> bool:
        while True:
            if self.remaining:
                step = min(self.remaining, len(buf) - self.pos)
                self.pos += step
                self.remaining -= step
                if self.remaining:
                    return False
            if self.in_trailer:
                if buf[self.pos : self.pos + 2] == b"\r\n" or buf.find(b"\r\n\r\n", self.pos) >= 0:
                    return True
                return False
            eol = buf.find(b"\r\n", self.pos)
            if eol < 0:
                return len(buf) - self.pos > 8192  # a size line that long is refused anyway
            size = buf[self.pos : eol].split(b";", 1)[0].strip(b" \t")
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                return True
            self.pos = eol + 2
            if int(size, 16) == 0:
                self.in_trailer = True
            else:
                self.remaining = int(size, 16) + 2


class _DeadlineSocket:
    """The socket as a thread's parser reads it: each recv() bounded by the two client deadlines."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.quiet_s = None
        self.deadline = None

    def reset(self, quiet_s: float, deadline: float) -> None:
        self.quiet_s, self.deadline = quiet_s, deadline

    def recv(self, size: int) -> bytes:
        if self.deadline is None:
            return self._sock.recv(size)
        wait = min(self.quiet_s, self.deadline - time.monotonic())
        previous = self._sock.gettimeout()  # gunicorn's own drain may have set a shorter one
        if previous is not None:
            wait = min(wait, previous)
        if wait <= 0:
            raise ClientTimeout()
        self._sock.settimeout(wait)
        try:
            return self._sock.recv(size)
        except socket.timeout:
            if previous is not None and previous <= wait:
                raise  # the caller's own timeout: its to handle
            raise ClientTimeout() from None
        finally:
            self._sock.settimeout(previous)

    # Named, not left to __getattr__: gunicorn's body drain calls them twice a request.
    def gettimeout(self):
        return self._sock.gettimeout()

    def settimeout(self, value) -> None:
        self._sock.settimeout(value)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _DeadlineParser(RequestParser):
    def __init__(self, cfg, sock, client) -> None:
        super().__init__(cfg, sock, client)
        self.unreader = SocketUnreader(_DeadlineSocket(sock))


class _JsonErrorPage:
    """Stands in for the client socket while gunicorn writes its error page.

    gunicorn 27's ``Worker.handle_error`` writes the whole page with one
    ``util.write_error`` -> ``sendall`` of ``HTTP/1.1 <status> <reason>`` and an
    HTML body; that status is kept and the body replaced. Everything else
    (``gettimeout``, ``setblocking``, the access log's look at the socket) goes
    to the real socket.
    """

    def __init__(self, sock) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        try:
            status_line = data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 400 Bad Request"
            _, status, _ = status_line.split(" ", 2)
            # The standard reason: gunicorn's 501 for a transfer coding says "Bad Request".
            page = json_error_page(int(status), HTTPStatus(int(status)).phrase)
        except ValueError:  # not the one-piece page this was written for: send gunicorn's as it is
            self._sock.sendall(data)
            return
        self._sock.sendall(page)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _ip(addr) -> str:
    return addr[0] if isinstance(addr, tuple) and addr else "-"
