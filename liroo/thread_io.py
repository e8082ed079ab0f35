"""What a worker thread reads and writes through gunicorn: the request's socket bounded by the
client deadlines, and gunicorn's own error pages made JSON (liroo/server.py uses them).

**JSON errors.** Some requests never reach the app: gunicorn refuses a
malformed request line or header, a request line or headers over its limits,
with a small HTML page that quotes part of the request. Every other error of
this service is JSON with ``error`` and ``code`` (../shared/client-contract.md).
This worker keeps gunicorn's whole decision (status, reason, logging) and
changes only the body it sends; the query string of a malformed request line
is not logged (it may carry a key). A transfer coding other than ``chunked``
is refused with 501 (gunicorn would pass a compressed body on as it came).
"""

from __future__ import annotations

import socket
import time

from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader

from .error_answer import ErrorAnswer
from .worker_contract import ClientTimeout


class DeadlineSocket:
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


class DeadlineParser(RequestParser):
    def __init__(self, cfg, sock, client) -> None:
        super().__init__(cfg, sock, client)
        self.unreader = SocketUnreader(DeadlineSocket(sock))


class JsonErrorPage:
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
            # The standard reason (http_page's): gunicorn's 501 for a transfer coding says "Bad
            # Request". An unknown status is a ValueError too.
            page = ErrorAnswer.for_status(int(status)).http_page()
        except ValueError:  # not the one-piece page this was written for: send gunicorn's as it is
            self._sock.sendall(data)
            return
        self._sock.sendall(page)

    def __getattr__(self, name):
        return getattr(self._sock, name)
