"""gunicorn's threaded worker, with the app's JSON for the errors gunicorn answers itself.

Some requests never reach the app: gunicorn refuses a malformed request line
or header (a control character in a header value, an invalid header name, a
bad chunk size...) and a request line or headers over its limits, with a
small HTML page that quotes part of the request. Every other error of this
service is JSON with ``error`` and ``code`` (../shared/client-contract.md).
This worker keeps gunicorn's whole decision (status, reason, logging) and
changes only the body it sends. gunicorn.conf.py names it as worker_class.
"""
from __future__ import annotations

import json

from gunicorn.workers.gthread import ThreadWorker

from .errors import http_error_code


class JsonErrorWorker(ThreadWorker):
    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, _JsonErrorPage(client), addr, exc)


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
            status_line = data.split(b"\r\n", 1)[0].decode("latin-1")     # "HTTP/1.1 400 Bad Request"
            _, status, reason = status_line.split(" ", 2)
            code, message = http_error_code(int(status))
        except ValueError:  # not the one-piece page this was written for: send gunicorn's as it is
            self._sock.sendall(data)
            return
        body = json.dumps({"error": message, "code": code}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
        self._sock.sendall(head.encode("latin-1") + body)

    def __getattr__(self, name):
        return getattr(self._sock, name)
