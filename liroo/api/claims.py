"""Idempotency: a generation's id, and its claim (run it, replay it, or join its first attempt).

A retry with the same body (or the same X-Request-ID) finds the first attempt: its stored
result is replayed, a running one is joined (parked in the worker's loop or waited for), and
one that failed or whose worker died is claimed again. The replay layer's look
(liroo/api/replay.py) claims nothing: it replays or joins, else raises NotStored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Callable

from flask import request
from pydantic import BaseModel

from ..error_answer import ApiError
from ..generation.context import DeadlineExceeded
from ..jobs import RUNNING, SUCCEEDED, Claim, JobStoreUnavailable, JoinsFull, decide
from ..requestid import REPLAY_LOOKED, generation_request_id
from ..security import caller_id
from ..services import services
from ..worker_contract import Parked

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("liroo.api")

# The deadline of a parked join (time.monotonic()), kept when the request is handled afresh.
JOIN_DEADLINE = "liroo.join_deadline"


def fingerprint(endpoint: str, payload: BaseModel) -> str:
    body = payload.model_dump(mode="json", exclude={"request_id", "user_token"})
    canonical = json.dumps([endpoint, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_id_of(payload: BaseModel, fp: str) -> tuple[str, bool]:
    """The generation's id (see requestid.generation_request_id) and whether it was derived; a
    derived one is keyed by the body, the device's token and the caller (its key, else its
    address after LIROO_TRUSTED_PROXIES)."""

    def seed() -> str:
        token = getattr(payload, "user_token", None) or ""
        # One caller's retry never finds another's job: with keys off the caller is its address.
        who = caller_id() or "addr:" + (request.remote_addr or "")
        return f"{fp}:{token}:{who}"

    return generation_request_id(getattr(payload, "request_id", None), seed)


class NotStored(BaseException):
    """A replay layer's look (liroo/api/replay.py) found nothing to replay or join: the request
    goes on through the memory door.

    A BaseException so that it leaves Flask as it is, past every error handler
    and after-request hook (the request is answered once, by the pass that
    follows), as KeyboardInterrupt would.
    """


def claim_id(
    runner: Runner,
    request_id: str,
    endpoint: str,
    fp: str,
    owner: str | None,
    deadline: float,
    replay_s: float | None = None,
    probe: bool = False,
    park: Callable[[], None] | None = None,
) -> Claim:
    """A claim that is ours to run ("new") or a finished result to replay.

    A retry of a request still at work joins it until ``deadline``: parked in
    the worker's loop when ``park`` is given (worker_contract.Parked: no thread waits;
    the request is handled afresh when the job ends, its owner dies or the
    deadline comes), else waiting in this thread (runner.joins: woken by its
    end, capped per request; a 503 past the cap); if that
    attempt fails or its owner dies meanwhile, the retry claims the id again,
    with every rule of a first claim (a different body or caller is still a
    conflict). A ``probe`` claims nothing: it replays or joins, else raises
    NotStored.
    """
    store = runner.store
    while True:
        claim = _look(store, request_id, fp, owner, replay_s) if probe else None
        if claim is None:
            claim = store.claim(request_id, endpoint, fp, owner, replay_s)
        if claim.outcome == "conflict":
            raise ApiError(
                422,
                "idempotency_conflict",
                "This request id was already used for a different request; use a new id.",
            )
        if claim.outcome in ("new", "finished"):
            return claim
        if park is not None and deadline > time.monotonic():
            runner.joins.parking.park(request_id, deadline, park)
            log.info("a retry of %s joins it, parked in the worker's loop", request_id)
            # handled afresh by the same deadline, its rate-limit budget spent already
            raise Parked({JOIN_DEADLINE: deadline, REPLAY_LOOKED: True})
        try:
            job = runner.joins.wait(request_id, deadline)
        except JoinsFull:
            retry = services().governor.retry_after_s()  # the measured drain rate
            raise ApiError(
                503,
                "busy",
                "This request is still running and others are waiting for it; please retry "
                f"in {retry} seconds.",
                headers={"Retry-After": str(retry)},
                retry_after_s=retry,
            ) from None
        except JobStoreUnavailable:
            continue  # claimed again: in this instance's store while Redis is down
        if job is not None and job.status == SUCCEEDED:
            return Claim("finished", job)
        if job is not None and job.status == RUNNING and not job.stale:
            raise DeadlineExceeded()


def _look(store, request_id: str, fp: str, owner: str | None, replay_s: float | None) -> Claim:
    """A probe's claim without claiming (the rule of jobs.model.decide on the stored job):
    "finished" or "running", else NotStored."""
    try:
        job = store.get(request_id)
    except JobStoreUnavailable:
        raise NotStored() from None
    outcome = decide(job, fp, owner, replay_s)
    if outcome not in ("finished", "running"):
        raise NotStored()
    return Claim(outcome, job)
