"""The operations guide's way of governing memory, as a WSGI entry point for comparisons.

Every request reads the RSS through psutil before it runs, and every response
is followed by a full ``gc.collect()``; no heap freeze. Serve it with
``LIROO_GOVERNOR=off gunicorn -c gunicorn.conf.py bench.guide_style:app``.
"""
import gc

import psutil

from liroo import create_app

LIMIT_MB = 1500


class GuideStyleMemoryCheck:
    def __init__(self, app):
        self.app = app
        self.process = psutil.Process()

    def __call__(self, environ, start_response):
        rss_mb = self.process.memory_info().rss / (1024 * 1024)
        if rss_mb > LIMIT_MB:
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [b'{"error": "memory"}']
        try:
            return list(self.app(environ, start_response))
        finally:
            gc.collect()


flask_app = create_app()
flask_app.wsgi_app = GuideStyleMemoryCheck(flask_app.wsgi_app)
app = flask_app
