"""What a job is, what a claim answers, the interface every job store keeps, and the claim rule."""

from __future__ import annotations

import json
import os
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable

from werkzeug.exceptions import ServiceUnavailable

from .endings import ENDINGS

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
HEARTBEAT_S = 5.0  # how often an owner refreshes its running jobs
STALE_AFTER_S = 30.0  # a running job not refreshed for this long is abandoned

# Names this instance among others sharing Redis (process ids repeat across containers).
# Made at import, in gunicorn's master before it forks, so all its workers share it.
INSTANCE = uuid.uuid4().hex[:12]


def worker_tag(pid: int | None = None) -> str:
    """The worker running a job: this instance and the worker's process id."""
    return f"{INSTANCE}:{os.getpid() if pid is None else pid}"


@dataclass
class Job:
    request_id: str
    endpoint: str
    fingerprint: str
    status: str = RUNNING
    step: str = "Starting"
    step_number: int = 0
    total_steps: int = 1
    details: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.time)
    result_status: int | None = None
    result_body: str | None = None  # the JSON the synchronous call answered
    error_code: str | None = None
    owner: str | None = None  # hash of the API key that claimed it; None when keys are off
    worker: str | None = None  # worker_tag() of the process running it
    partial: str | None = None  # JSON of the items a running job has finished (Progress.advance)
    cancel_requested_at: float | None = None  # its caller asked to stop it (api/cancel.py)

    @property
    def finished(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)

    @property
    def stale(self) -> bool:
        return self.status == RUNNING and time.time() - self.heartbeat > STALE_AFTER_S

    @property
    def percentage(self) -> float:
        if self.status == SUCCEEDED:
            return 100.0
        if self.total_steps <= 0:
            return 0.0
        return round(min(self.step_number / self.total_steps, 1.0) * 100, 1)

    def partial_items(self) -> dict | None:
        return json.loads(self.partial) if self.partial else None

    def result(self) -> tuple[int, dict] | None:
        if self.result_body is None or self.result_status is None:
            return None
        return self.result_status, json.loads(self.result_body)


class JobStoreUnavailable(ServiceUnavailable):
    """The store that may hold a job cannot be asked now: "unknown" cannot be told, so a 503 with
    Retry-After rather than a 404 (a werkzeug 503, so that any caller answers it as one)."""

    RETRY_AFTER_S = 2  # a running job moves to the local store within a heartbeat (5 s)

    def __init__(self) -> None:
        super().__init__(retry_after=self.RETRY_AFTER_S)


@dataclass(frozen=True)
class Claim:
    outcome: str  # "new" (run it), "running" (wait), "finished" (replay), "conflict"
    job: Job


class JobStore(ABC):
    """What the runner, progress, heartbeats and the master's hand-back call on a store.

    A store claims, reads and writes; the three kinds of write (a step, a heartbeat, the end)
    are built here once and reach the store as ``update``.
    """

    @abstractmethod
    def claim(
        self,
        request_id: str,
        endpoint: str,
        fingerprint: str,
        owner: str | None = None,
        replay_s: float | None = None,
    ) -> Claim:
        """Claim an id by the rule in ``decide``, atomically for everyone sharing the store."""

    @abstractmethod
    def get(self, request_id: str) -> Job | None:
        """The job, or None when there is none; JobStoreUnavailable when that cannot be told."""

    @abstractmethod
    def running_on(self, worker: str) -> list[str]:
        """The ids of the running jobs that ``worker`` (a ``worker_tag``) claimed."""

    @abstractmethod
    def update(self, request_id: str, changes: dict, finished: bool = False) -> None:
        """Write ``changes`` to the job and touch its heartbeat; a ``finished`` job is then kept
        for LIROO_JOB_TTL_S."""

    def progress(
        self,
        request_id: str,
        step: str,
        step_number: int,
        total_steps: int,
        details: str = "",
        partial: dict | None = None,
    ) -> None:
        """A step reached, and (``partial``) what is already finished, for watchers to show."""
        changes = dict(step=step, step_number=step_number, total_steps=total_steps, details=details)
        self.update(request_id, {**changes, **partial_change(partial)})

    def cancel(self, request_id: str) -> None:
        """Ask a running job to stop: its generation reads this before each model call."""
        self.update(request_id, {"cancel_requested_at": time.time()})

    def cancel_requested(self, request_id: str) -> bool:
        job = self.get(request_id)
        return job is not None and job.cancel_requested_at is not None

    def heartbeat(self, request_ids: Iterable[str]) -> None:
        """Their owner is alive (liroo/jobs/heartbeats.py)."""
        for request_id in request_ids:
            self.update(request_id, {})

    def finish(
        self,
        request_id: str,
        status: str,
        result_status: int,
        result_body: dict,
        error_code: str | None = None,
    ) -> None:
        """The end: the answer to replay to a retry."""
        changes = dict(
            status=status,
            result_status=result_status,
            result_body=json.dumps(result_body),
            error_code=error_code,
            step="Done" if status == SUCCEEDED else "Failed",
        )
        self.update(request_id, changes, finished=True)
        ENDINGS.ended(request_id)

    def wait_for_end(
        self, request_id: str, timeout_s: float, still_running: Callable[[], bool]
    ) -> None:
        """Return when the job may have ended, or after ``timeout_s``; ``still_running`` is asked
        once the wait is set up, so an end just before it is not missed.

        Here: woken by an end in this process only (a job of another process is
        seen at the waiter's next look); RedisJobStore is woken by any instance.
        """
        with ENDINGS.waiting(request_id) as ended:
            if still_running():
                ended.wait(timeout_s)


def partial_change(partial: dict | None) -> dict:
    """The ``partial`` field to write: only when there is something finished to show."""
    return {"partial": json.dumps(partial, separators=(",", ":"))} if partial else {}


def decide(
    current: Job | None, fingerprint: str, owner: str | None = None, replay_s: float | None = None
) -> str:
    """The claim rule: what a claim of an id answers, given the job stored under it.

    Both stores keep this one rule: LocalJobStore calls this function; RedisJobStore
    runs it as one atomic Lua script (liroo/jobs/redis.py, CLAIM_LUA), which must
    give the same answers. tests/test_jobs.py::test_the_claim_rule runs the table
    below, read from this docstring, against both stores.

    stored: the job under the id (``same``: same fingerprint and owner as the
    claim; ``other body``: another fingerprint; ``other owner``: another API key).
    touched: when its heartbeat (running) or its end (finished) was last written
    (``old``: longer ago than both STALE_AFTER_S and the replay window).
    replay_s: ``none`` replays a success while it is kept (an id the caller chose);
    ``10`` only for 10 s after it finished (an id derived from the request).

    | stored      | status    | touched | replay_s | outcome  | why                                          |
    | none        | -         | -       | none     | new      | first claim: run it                          |
    | same        | running   | now     | none     | running  | its owner is alive: wait for it              |
    | same        | running   | old     | none     | new      | its owner died (stale heartbeat): take over  |
    | same        | succeeded | now     | none     | finished | a retry: replay the stored answer            |
    | same        | succeeded | old     | none     | finished | kept for LIROO_JOB_TTL_S: still replayed     |
    | same        | succeeded | now     | 10       | finished | a blind retry within the window              |
    | same        | succeeded | old     | 10       | new      | asked again later, on purpose: made afresh   |
    | same        | failed    | now     | none     | new      | a failure is not replayed: a fresh try       |
    | other body  | running   | now     | none     | conflict | the id is taken by another request           |
    | other body  | succeeded | now     | none     | conflict | never replayed to another request            |
    | other body  | failed    | old     | none     | conflict | the body decides before the status           |
    | other owner | succeeded | now     | none     | conflict | another caller's id is never replayed        |
    | other owner | running   | old     | none     | conflict | nor waited on, nor taken over                |
    """  # noqa: E501
    # (noqa: tests/test_jobs.py reads the table's rows from this docstring, one row a line.)
    if current is None:
        return "new"
    if current.fingerprint != fingerprint or current.owner != owner:
        return "conflict"  # another caller's id is never waited on nor replayed
    if current.status == SUCCEEDED:
        if replay_s is not None and time.time() - current.updated_at > replay_s:
            return "new"  # asked again later, on purpose: made afresh
        return "finished"
    if current.status == FAILED or current.stale:
        return "new"  # a failure is not replayed: a retry deserves a fresh try
    return "running"
