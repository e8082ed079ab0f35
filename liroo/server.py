"""gunicorn's threaded worker: requests arrive, and answers leave, without holding a thread; and
gunicorn's own errors are JSON.

**Slow clients.** gunicorn's gthread worker hands a connection to a thread as
soon as it is readable, and the thread then blocks, without a deadline, until
the request has come. Here the worker's own selector loop receives each
request first, without blocking (its framing: liroo/framing.py): only once the
head and the whole body (up to ``LIROO_MAX_BODY_BYTES``) are buffered is the
connection given to a thread, which then parses them from memory. A request
that goes quiet for ``LIROO_CLIENT_TIMEOUT_S``, or has not fully arrived after
``LIROO_CLIENT_REQUEST_TIMEOUT_S``, is closed, with a JSON 408 once part of it
came. What a thread still reads itself (a request whose framing gunicorn
judges otherwise) is read under the same two deadlines. A body declared over
the limit is not read: no ``100 Continue`` for it, and the app's 413 closes the
connection (a kept-alive one would wait for the unread body). A connection
closed after its answer lingers in the loop too (outgoing.Closing).

**The bytes of requests still arriving** are bounded per worker: 16 KiB a
connection (any usual head, a small body), and for larger requests as many as
fit in threads x ``LIROO_MAX_BODY_BYTES`` (what the threads themselves could
hold), a quarter of it at most for one client (the peer address, or the one
``LIROO_TRUSTED_PROXIES`` name in X-Forwarded-For), so that one client's many
slow uploads cannot keep the others' waiting. The next large one waits unread
(the kernel's buffers and TCP flow control hold it), and that wait is the
server's: it counts for neither timeout.

**Slow readers.** An answer the client does not read is left to the loop
(liroo/outgoing.py): the thread moves on, and the connection is closed once
the client has taken nothing for ``LIROO_CLIENT_SEND_TIMEOUT_S``.

**Parked requests** (worker_contract.Parked: a retry joining its running first
attempt) wait in the loop with their buffered bytes, holding no thread, until
``environ[worker_contract.PARK_KEY]()`` has a thread handle them afresh.

**JSON errors.** gunicorn's own error pages are JSON (liroo/thread_io.py).
gunicorn.conf.py names this class as worker_class.

**Stopping.** A request still in the app when a stopping worker's grace ends
(SIGTERM, recycling) would have its connection cut. Its client is answered
first, 503 ``interrupted`` with ``Retry-After`` (worker_contract.interrupted_answer, of the
fields the app left in ``environ[INTERRUPTED_KEY]``: the generation's own error shape), as long as
the app has not begun its answer; the job itself is handed back by
liroo/gunicorn_hooks.py's ``worker_exit``. A connection that no live worker
takes while this one stops (the whole server is stopping) is answered at once,
503 with ``Retry-After``, instead of waiting unaccepted until the grace ends.
"""

from __future__ import annotations

import errno
import re
import select
import selectors
import socket
import threading
import time
from functools import partial

from gunicorn.http.errors import InvalidRequestLine, UnsupportedTransferCoding
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from . import outgoing
from .error_answer import ErrorAnswer
from .framing import CONTINUE, Arrival, ArrivalBudget, Limits, LoopArrival
from .gunicorn_hooks import app_settings
from .outgoing import peer_ip, send_quietly
from .thread_io import DeadlineParser, JsonErrorPage
from .worker_contract import INTERRUPTED_KEY, PARK_KEY, ClientTimeout, Parked, interrupted_answer

__all__ = ["JsonErrorWorker"]

# One recv() of a request still arriving; the kernel keeps the rest.
_RECV_BYTES = 64 * 1024
# Past the budget, a request still reads up to this much (any usual head, a small body such as
# /health's none): only large bodies wait.
_ALWAYS_READ_BYTES = 16 * 1024
# One client may hold this share (1/4) of the worker's budget for large requests.
_PEER_SHARE = 4
# Bytes of one answer (and threads x this per worker) the loop holds for a client not reading.
_SEND_HOLD_BYTES = 256 * 1024
# Seconds between two sweeps for requests that ran out of time.
_SWEEP_INTERVAL_S = 0.25
# While stopping: how often the listeners are looked at, and how long a connection may wait
# unaccepted (no live worker takes it) before this worker answers it.
_STOP_LOOK_S = 0.1
_UNCLAIMED_S = 0.5
_QUERY = re.compile(r"\?[^\s'\"]*")


class JsonErrorWorker(ThreadWorker):
    def init_process(self) -> None:
        settings = app_settings(self)
        self.client_timeout_s = settings.client_timeout_s
        self.request_timeout_s = settings.client_request_timeout_s
        self.send_timeout_s = settings.client_send_timeout_s
        self.trusted_proxies = settings.trusted_proxies
        budget = self.cfg.threads * settings.max_body_bytes
        # One client gets at least one whole request of the largest size.
        share = max(budget // _PEER_SHARE, settings.max_body_bytes + _ALWAYS_READ_BYTES)
        self.budget = ArrivalBudget(budget, share)
        self.send_budget = outgoing.SendBudget(
            self.cfg.threads * _SEND_HOLD_BYTES, _SEND_HOLD_BYTES
        )
        # gunicorn's limits, read once (each cfg read is a Python-level lookup): 0 means unlimited.
        self.tls = self.cfg.is_ssl
        line_limit = self.cfg.limit_request_line or 8190
        head_limit = (
            line_limit
            + (self.cfg.limit_request_fields or 32768)
            * ((self.cfg.limit_request_field_size or 8190) + 2)
            + 4
        )
        self.limits = Limits(line=line_limit, head=head_limit, max_body=settings.max_body_bytes)
        self.arrivals: dict = {}  # TConn -> framing.LoopArrival, requests still arriving
        self.next_sweep = 0.0
        self.sending: dict = {}  # TConn -> (Outgoing, the thread's future): sent as clients read
        self.unclaimed_since: float | None = None  # while stopping: listeners left readable since
        self.retry_after_s = settings.retry_after_s
        self.in_app: dict = {}  # TConn -> environ, requests in the app with no answer begun
        self.in_app_lock = threading.Lock()
        self.serving = threading.local()  # the connection of this thread's request
        self.parked = outgoing.ParkedRequests(self._resume)
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def app_with_stop_answer(environ, start_response):
            conn = self.serving.conn
            if not self.tls:
                environ["wsgi.file_wrapper"] = outgoing.LoopFileWrapper
                environ[PARK_KEY] = partial(self._wake_parked, conn)
                environ.update(getattr(conn, "environ_on_return", None) or {})
                conn.environ_on_return = None
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
        self.closing = outgoing.Closing(self.poller)
        super().run()  # returns when the stop's grace is over
        with self.in_app_lock:
            cut_short, self.in_app = self.in_app, {}
        for conn, environ in cut_short.items():
            answer = interrupted_answer(environ.get(INTERRUPTED_KEY))
            request_id = answer.fields.get("request_id")
            self.log.info(
                "Stopping with a request in the app: answered 503 interrupted (%s)",
                request_id or "-",
            )
            sock = getattr(conn.sock, "sock", conn.sock)  # the client socket under a SendSocket
            try:
                sock.send(self._retry_page(answer, request_id), socket.MSG_DONTWAIT)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _retry_page(self, answer: ErrorAnswer, request_id: str | None = None) -> bytes:
        """503 with Retry-After, as a whole page; X-Request-ID when the answer has a request's id
        (a checked one, 8-128 of [A-Za-z0-9_-], or one the app made)."""
        answer = answer.with_fields(retry_after_s=self.retry_after_s)
        answer = answer.with_headers(**{"Retry-After": str(self.retry_after_s)})
        if request_id:
            answer = answer.with_headers(**{"X-Request-ID": request_id})
        return answer.http_page()

    def wait_for_and_dispatch_events(self, timeout) -> None:
        if not self.alive:  # look at the listeners often while stopping (see murder_pending)
            timeout = min(timeout, _STOP_LOOK_S)
        super().wait_for_and_dispatch_events(timeout)

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
        arrival = LoopArrival(conn, Arrival(self.limits, leftover), time.monotonic())
        self.arrivals[conn] = arrival
        if conn.sock.gettimeout() != 0.0:  # no syscall when it is non-blocking already
            conn.sock.setblocking(False)
        if leftover and arrival.framing.complete():
            self._hand_over(arrival)
        else:
            # Read at once: a kept-alive connection is here because its next request came.
            self._receive(arrival)

    def _receive(self, arrival, _sock=None) -> None:
        """One non-blocking read of ``arrival``; then hand it over, or wait for the loop's next
        call."""
        framing = arrival.framing
        may_hold = self.budget.holds(arrival) or _ALWAYS_READ_BYTES
        if len(framing.buf) >= may_hold:
            may_hold = max(framing.size_bound(_RECV_BYTES), len(framing.buf) + 1)
            if arrival.peer is None:  # who is sending: the share of the budget is per client
                forwarded = framing.forwarded_for(self.trusted_proxies)
                arrival.peer = forwarded or peer_ip(arrival.conn.client)
            if not self.budget.ask(arrival, arrival.peer, may_hold):
                self._pause(arrival)
                return
        try:
            data = arrival.conn.sock.recv(min(_RECV_BYTES, may_hold - len(framing.buf)))
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":  # the client went away
            self._close(arrival)
            return
        if data:
            framing.add(data)
            arrival.clock.byte_came(time.monotonic())
            if framing.complete():
                self._hand_over(arrival)
                return
        if framing.wants_continue and not arrival.continue_sent:
            arrival.continue_sent = send_quietly(arrival.conn.sock, CONTINUE)
        self._watch(arrival, True)

    def _pause(self, arrival) -> None:
        """Leave ``arrival`` unread until the budget has room (ArrivalBudget.give_back)."""
        if self.budget.waiting() == 1:  # once as the line forms, not for each in it
            self.log.warning(
                "Large requests still arriving hold %d bytes: the next wait (first ip=%s)",
                self.budget.held,
                arrival.peer,
            )
        self._watch(arrival, False)
        arrival.clock.pause(time.monotonic())

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
            conn.parser = DeadlineParser(self.cfg, conn.sock, conn.client)
        if isinstance(conn.parser, DeadlineParser):
            conn.parser.unreader.sock.reset(
                self.client_timeout_s, arrival.clock.started + self.request_timeout_s
            )
        conn.parser.unreader.unread(arrival.framing.buf)  # BytesIO.write takes it as it is
        conn.request_bytes = arrival.framing.buf  # kept to handle it afresh if it is parked
        conn.continue_sent = arrival.continue_sent
        conn.body_refused = arrival.framing.body_refused
        conn.data_ready = True  # gthread's own wait for a first byte is not needed
        conn.arrived = True
        self.enqueue_req(conn)

    def _close(self, arrival, answer: bytes = b"") -> None:
        self._forget(arrival)
        conn = arrival.conn
        if answer:
            # small enough for the socket's buffer; best effort
            send_quietly(conn.sock, answer)
        self.nr_conns -= 1
        conn.close()

    def _forget(self, arrival) -> None:
        self.arrivals.pop(arrival.conn, None)
        self._watch(arrival, False)
        now = time.monotonic()
        for granted in self.budget.give_back(arrival):
            granted.clock.resume(now)
            self._watch(granted, True)

    # --- answers leave from the selector loop --------------------------------------------------

    def finish_request(self, conn, fs) -> None:
        """gthread's end of a thread's request, once the loop has sent what the client left
        unread."""
        environ_on_return = getattr(conn, "parked_with", None)
        if environ_on_return is not None:
            conn.parked_with = None
            self.parked.park(conn, environ_on_return)
            if not self.alive:
                self._let_parked_go()
            return
        conn.request_bytes = None
        out = getattr(conn, "outgoing", None)
        if out is None:
            super().finish_request(conn, fs)
            return
        conn.outgoing = None
        try:
            done = out.flush()
        except OSError:
            self._drop_answer(conn, out)
            return
        if done:
            super().finish_request(conn, fs)
            return
        self.sending[conn] = (out, fs)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._send_more, conn))

    # --- parked requests (worker_contract.Parked): in the loop, no thread --------------------

    def _wake_parked(self, conn) -> None:
        """From any thread. Not once stopping: the stop answers parked requests itself, and the
        loop's pipe closes."""
        if self.alive:
            self.method_queue.defer(self.parked.wake, conn)

    def _resume(self, conn, environ_on_return: dict) -> None:
        """A parked request woken: a thread handles it afresh, from its buffered bytes."""
        conn.environ_on_return = environ_on_return
        conn.parser = None  # a fresh parser reads the request again
        arrival = Arrival(self.limits, conn.request_bytes)
        self._hand_over(LoopArrival(conn, arrival, time.monotonic()))

    def _let_parked_go(self) -> None:
        """A stopping worker answers its parked requests 503 with Retry-After at once: the app's
        retry joins the work from another worker (its job goes on, or is handed back)."""
        page = self._retry_page(ErrorAnswer.for_status(503))
        for conn in self.parked.let_go():
            send_quietly(conn.sock, page)
            self.nr_conns -= 1
            self.closing.close(conn.sock)

    def _send_more(self, conn, _sock=None) -> None:
        out, fs = self.sending[conn]
        try:
            if not out.flush():
                return
        except OSError:
            self._drop_answer(conn, out)
            return
        del self.sending[conn]
        self.poller.unregister(conn.sock)
        super().finish_request(conn, fs)

    def _drop_answer(self, conn, out) -> None:
        if self.sending.pop(conn, None) is not None:
            self.poller.unregister(conn.sock)
        out.release()
        self.nr_conns -= 1
        conn.close()

    # --- deadlines ----------------------------------------------------------------------------

    def murder_pending(self) -> None:
        """Called on every turn of gthread's loop (also while stopping): close requests and answers
        that ran out of time."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive:
            self._answer_unclaimed(now)
            if self.parked.waiting:
                self._let_parked_go()
        if now < self.next_sweep or not (self.arrivals or self.closing.lingering or self.sending):
            return
        self.next_sweep = now + _SWEEP_INTERVAL_S
        self.closing.sweep(now)
        for conn, (out, _) in list(self.sending.items()):
            if now - out.last_progress > self.send_timeout_s:
                self.log.info(
                    "Answer to ip=%s not read in time (%d bytes waiting in the loop): closed",
                    peer_ip(conn.client),
                    out.held,
                )
                self._drop_answer(conn, out)
        for arrival in list(self.arrivals.values()):
            if not arrival.framing.buf:
                # Nothing sent yet: an idle connection, closed without an answer (a stopping
                # worker closes it sooner, as gthread does with kept-alive ones).
                limit = self.client_timeout_s
                if not self.alive:
                    limit = min(limit, STOP_KEEPALIVE_LINGER)
                if now - arrival.clock.last_byte > limit:
                    self._close(arrival)
            elif arrival.clock.expired(now, self.client_timeout_s, self.request_timeout_s):
                self.log.info(
                    "Request from ip=%s not received in time (%d bytes came): closed with 408",
                    peer_ip(arrival.conn.client),
                    len(arrival.framing.buf),
                )
                self._close(arrival, ErrorAnswer.for_status(408).http_page())

    def _answer_unclaimed(self, now: float) -> None:
        """While stopping: connections that no live worker accepts (the whole server stops) are
        answered 503 with Retry-After at once, not left unanswered until the grace ends."""
        try:
            waiting = select.select(self.sockets, [], [], 0)[0]
        except (OSError, ValueError):
            return
        if not waiting:
            self.unclaimed_since = None
            return
        if self.unclaimed_since is None:
            self.unclaimed_since = now
        if now - self.unclaimed_since < _UNCLAIMED_S:
            return
        page = self._retry_page(ErrorAnswer.for_status(503))
        for listener in waiting:
            for _ in range(64):  # a bounded batch a turn: the loop has other work
                try:
                    sock, addr = listener.accept()
                except OSError:
                    break
                self.log.info("Stopping: a new connection from ip=%s answered 503", peer_ip(addr))
                send_quietly(sock, page)
                self.closing.close(sock)

    # --- in the thread ---------------------------------------------------------------------------

    def handle_request(self, req, conn):
        self.serving.conn = conn
        if getattr(conn, "continue_sent", False):
            # The loop already said "100 Continue" to get the body; gunicorn must not say it twice.
            req._expected_100_continue = False
            conn.continue_sent = False
        if getattr(conn, "body_refused", False):
            # A body over the limit is not asked for, and the connection closes after the app's
            # 413: kept alive, it would wait for the unread body.
            req._expected_100_continue = False
            req.must_close = True
            conn.body_refused = False
        codings = [
            c.strip(" \t").lower()
            for name, value in req.headers
            if name == "TRANSFER-ENCODING"
            for c in value.split(",")
        ]
        if any(c != "chunked" for c in codings):
            raise UnsupportedTransferCoding(", ".join(codings))
        if self.tls:
            return super().handle_request(req, conn)
        client_sock = conn.sock
        out = outgoing.Outgoing(client_sock, self.send_budget)
        answer = outgoing.SendSocket(client_sock, out, req.method == "HEAD", self.send_timeout_s)
        conn.sock = outgoing.serving.answer = answer
        try:
            return super().handle_request(req, conn)
        except Parked as parked:
            conn.parked_with = parked.environ_on_return  # the loop holds it (_park)
            return True
        finally:
            conn.sock = client_sock
            outgoing.serving.answer = None
            if out.pieces:
                conn.outgoing = out  # sent by the loop (finish_request)

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ClientTimeout):
            self.log.info("Request from ip=%s not received in time: closed with 408", peer_ip(addr))
            try:
                client.sendall(ErrorAnswer.for_status(408).http_page())
            except OSError:
                pass
            return
        if isinstance(exc, InvalidRequestLine):
            # gunicorn logs the line; its query string may carry a key or user text.
            exc.req = _QUERY.sub("?[query not logged]", str(exc.req))
        super().handle_error(req, JsonErrorPage(client), addr, exc)


class _Conn(TConn):
    """gthread's connection, whose graceful close is the worker's non-blocking one."""

    def __init__(self, worker: JsonErrorWorker, sock, client, server) -> None:
        super().__init__(worker.cfg, sock, client, server)
        self.worker = worker

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.closing.close(self.sock)  # called in the loop (finish_request)
        else:
            super().close()
