"""What the app and the gunicorn worker (liroo/server.py) say to each other, in one neutral place.

The app (liroo/api) and the worker import this module and never each other:

- ``PARK_KEY``: ``environ[PARK_KEY]()`` hands a parked request's connection back to a thread
  (any thread may call it, once, without blocking). Absent: no parking here.
- ``Parked``: raised by the app instead of answering; the worker keeps the request in its loop.
- ``ClientTimeout``: raised by the worker's socket while the app reads a body too slow to arrive.
- ``INTERRUPTED_KEY``: where the app leaves the fields (request_id, the route's) of the answer
  for a request a stopping worker cuts short; the worker renders ``interrupted_answer`` itself,
  stamped when it is sent. Data, not code: nothing of the app runs after the grace.
"""

from __future__ import annotations

from gunicorn.http.errors import ParseException

from .error_answer import ErrorAnswer, generation_answer

PARK_KEY = "liroo.park"
INTERRUPTED_KEY = "liroo.interrupted_fields"
# The answer for work a stopping worker gives back (the runner records it, the worker sends it).
INTERRUPTED = ("interrupted", "The server restarted while working on this; please retry.")


class Parked(BaseException):
    """Raised by the app instead of answering: its request waits in the worker's loop, holding no
    thread, until ``environ[PARK_KEY]()`` is called; then the same request is handled afresh, its
    environ updated with ``environ_on_return``.

    A BaseException, so that it leaves the app past every error handler (nothing is answered
    yet), as api.claims.NotStored does.
    """

    def __init__(self, environ_on_return: dict) -> None:
        super().__init__("parked")
        self.environ_on_return = environ_on_return


class ClientTimeout(ParseException):
    """The client stopped sending its request, or took too long over it: answered with 408."""

    def __str__(self) -> str:
        return "request not received in time"


def interrupted_answer(fields: dict | None = None) -> ErrorAnswer:
    """503 ``interrupted``: a generation's answer when the app left its fields (``request_id``
    and the route's), else the bare error."""
    if fields is None:
        return ErrorAnswer(503, *INTERRUPTED)
    fields = dict(fields)
    request_id = fields.pop("request_id")
    return generation_answer(503, *INTERRUPTED, request_id, **fields)
