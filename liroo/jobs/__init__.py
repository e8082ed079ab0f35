"""Progress, results and idempotency of generation requests.

Every generation request is a job keyed by its request id. The first POST
claims the id; a retry with the same id and body waits for the running job or
gets the stored result without calling any model; the same id with another
body is a conflict. Progress is answerable while the job runs and for
``LIROO_JOB_TTL_S`` after it ends.

Two stores with one interface (``JobStore``) and one claim rule (the truth
table in ``model.decide``'s docstring, run against both by tests/test_jobs.py):
- ``LocalJobStore`` (sqlite.py): SQLite in a folder shared by the gunicorn
  workers of one instance (the default). SQLite rather than a dict, because the
  app polls progress on whichever worker the connection lands on.
- ``RedisJobStore`` (redis.py, ``REDIS_URL``): every Cloud Run instance sees
  every job; the claim is one atomic Lua script. It is always used through
  ``FallbackJobStore`` (fallback.py), so that losing Redis degrades progress to
  this instance instead of failing generation.

A retry of a running request waits for it (joins.py): parked in the worker's
loop (no thread) or, where it cannot be, in its thread, at most
LIROO_JOINS_PER_REQUEST per request in a worker; woken by its end, never polling.

A running job carries a heartbeat refreshed by its owner (heartbeats.py);
when the owner dies (the heartbeat goes stale), a retry takes the job over
instead of waiting for ever. A running job also records the worker running it (``worker_tag``): when
gunicorn's master sees that worker die (even by SIGKILL, which runs no hook in
the worker), it hands the worker's jobs back at once (``running_on``), so
progress tells the truth and a retry runs without waiting for staleness.

A finished result is replayed to a retry with the same id. For an id the
caller chose, that holds for ``LIROO_JOB_TTL_S``; for an id derived from the
request (the app sends none), only for ``replay_s`` (LIROO_DERIVED_REPLAY_S)
after it finished: the app's blind retries come within seconds, and a later
identical request is a student asking again, on purpose.
"""

from __future__ import annotations

from .fallback import FallbackJobStore
from .heartbeats import Heartbeats
from .joins import Joins, JoinsFull
from .model import (
    FAILED,
    HEARTBEAT_S,
    INSTANCE,
    RUNNING,
    STALE_AFTER_S,
    SUCCEEDED,
    Claim,
    Job,
    JobStore,
    JobStoreUnavailable,
    decide,
    worker_tag,
)
from .redis import RedisJobStore
from .sqlite import LocalJobStore

__all__ = [
    "FAILED",
    "HEARTBEAT_S",
    "INSTANCE",
    "RUNNING",
    "STALE_AFTER_S",
    "SUCCEEDED",
    "Claim",
    "FallbackJobStore",
    "Heartbeats",
    "Job",
    "JobStore",
    "JobStoreUnavailable",
    "Joins",
    "JoinsFull",
    "LocalJobStore",
    "RedisJobStore",
    "decide",
    "make_job_store",
    "worker_tag",
]


def make_job_store(settings) -> JobStore:
    running_ttl = settings.request_deadline_s + settings.job_ttl_s
    local = LocalJobStore.in_temp_dir(settings.job_ttl_s, running_ttl)
    if settings.redis_url:
        redis_store = RedisJobStore(
            settings.redis_url, settings.job_ttl_s, running_ttl, settings.redis_read_timeout_s
        )
        return FallbackJobStore(redis_store, local)
    return local
