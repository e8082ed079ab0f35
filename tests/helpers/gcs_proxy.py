"""A loopback HTTP proxy in front of gcp-storage-emulator that records every request and can
answer with an error, so transient failures and their retries are real HTTP exchanges. It also
enforces ``ifGenerationMatch=0`` (create-only), which real GCS honours and the emulator ignores."""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
from urllib.parse import quote, urlsplit


class FaultProxy:
    """A loopback HTTP proxy in front of the emulator that records requests and injects failures."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.requests: list[tuple[str, str, int]] = []  # (method, path with query, status answered)
        self._faults: list[dict] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def fail(self, method: str, pattern: str, *, status=503, times=1, after_forwarding=False):
        """Answer the next ``times`` requests whose path matches ``pattern`` with ``status``; with
        ``after_forwarding`` the request reaches the emulator first and only its response is
        lost."""
        self._faults.append(
            {
                "method": method,
                "pattern": re.compile(pattern),
                "status": status,
                "left": times,
                "after": after_forwarding,
            }
        )

    def calls(self, method: str, path_pattern: str) -> list[tuple[str, int]]:
        pattern = re.compile(path_pattern)
        return [
            (path, status)
            for m, path, status in self.requests
            if m == method and pattern.search(path)
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method: str, path: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["left"] and fault["method"] == method and fault["pattern"].search(path):
                    fault["left"] -= 1
                    return fault
        return None

    def _handle(self, handler) -> None:
        method, path = handler.command, handler.path
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        fault = self._take_fault(method, path)
        if fault and not fault["after"]:
            return self._reply(
                handler, method, path, fault["status"], *self._gcs_error(fault["status"])
            )
        if method == "POST" and "ifGenerationMatch=0" in path and self._object_exists(path, body):
            return self._reply(handler, method, path, 412, *self._gcs_error(412))
        status, headers, data = self._forward(method, path, handler.headers, body)
        if fault:
            return self._reply(
                handler, method, path, fault["status"], *self._gcs_error(fault["status"])
            )
        self._reply(handler, method, path, status, headers, data)

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(self.upstream, timeout=10)
        try:
            forwarded = {
                k: v for k, v in headers.items() if k.lower() not in ("host", "connection")
            }
            conn.request(method, path, body=body, headers=forwarded)
            response = conn.getresponse()
            data = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower()
                not in ("connection", "transfer-encoding", "content-length", "server", "date")
            ]
            return response.status, kept, data
        finally:
            conn.close()

    def _object_exists(self, path: str, body: bytes) -> bool:
        # What GCS does for ifGenerationMatch=0 and the emulator does not: refuse to overwrite.
        bucket = re.search(r"/b/([^/?]+)/o", path).group(1)
        name = re.search(rb'"name":\s*"([^"]+)"', body).group(1).decode()
        status, _, _ = self._forward(
            "GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}", {}, b""
        )
        return status == 200

    @staticmethod
    def _gcs_error(status: int):
        reason = http.HTTPStatus(status).phrase
        body = json.dumps(
            {
                "error": {
                    "code": status,
                    "message": reason,
                    "errors": [{"message": reason, "reason": reason.lower()}],
                }
            }
        ).encode()
        return [("Content-Type", "application/json; charset=UTF-8")], body

    def _reply(self, handler, method, path, status, headers, data) -> None:
        self.requests.append((method, path, status))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
