"""The app built in process (no server), calling a WSGI app directly, and the smallest app to
wrap."""

import logging

from liroo import create_app
from liroo.settings import Settings


def build_app(media_dir, **settings):
    """create_app() on the embedded defaults (offline provider, local storage), media under
    ``media_dir``. The root logger is put back as it was: create_app sets it up for a worker, and
    pytest's capture must keep its own handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    app = create_app(Settings.from_env({}, media_dir=str(media_dir), **settings))
    root.handlers[:] = handlers
    root.setLevel(level)
    return app


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def call(app, path="/work", method="GET", headers=None):
    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "wsgi.input": None,
        "CONTENT_LENGTH": "",
    }
    environ.update(headers or {})
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = dict(headers)

    body = app(environ, start_response)
    data = b"".join(body)
    if hasattr(body, "close"):
        body.close()
    return captured["status"], captured["headers"], data
