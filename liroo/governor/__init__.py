"""A memory governor for WSGI services.

It measures what the OOM killer measures (the cgroup's working set), sheds
requests with 503 + Retry-After above the hard limit instead of letting the
container be killed, reserves memory for heavy steps across all workers,
cleans up after responses when memory is high, and recycles gunicorn workers
gracefully. With deadlines on (``GovernorConfig.deadline_s``) every request
carries one (``environ[DEADLINE_KEY]``, a ``time.monotonic()`` instant) that
bounds its wait at the door. It imports nothing from Flask or from the rest of
Liroo, so any WSGI app can use it:

    governor = Governor(GovernorConfig(deadline_s=55))
    app.wsgi_app = MemoryGovernorMiddleware(app.wsgi_app, governor)
    with governor.reserve(200, wait_s=30):  # or deadline=time.monotonic() + 30
        ...heavy work...
"""

from .core import Governor, GovernorConfig, MemoryReserver, Unreserved
from .events import EventKind, GovernorEvent
from .middleware import DEADLINE_KEY, MemoryGovernorMiddleware
from .pledges import Reservation
from .policy import MemoryPressure
from .probe import MemoryProbe, find_cgroup
from .rule import Level, Thresholds
from .workers import WorkerRecycler, freeze_heap

__all__ = [
    "DEADLINE_KEY",
    "Governor",
    "GovernorConfig",
    "EventKind",
    "GovernorEvent",
    "MemoryReserver",
    "Unreserved",
    "MemoryGovernorMiddleware",
    "Level",
    "MemoryPressure",
    "Reservation",
    "Thresholds",
    "MemoryProbe",
    "find_cgroup",
    "WorkerRecycler",
    "freeze_heap",
]
