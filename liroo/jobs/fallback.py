"""FallbackJobStore: Redis, or this instance's local store while Redis cannot be used."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from ..outage import RETRY_S, RedisOutage
from .model import JobStore, JobStoreUnavailable
from .redis import RedisJobStore
from .sqlite import LocalJobStore

log = logging.getLogger("liroo.jobs")
T = TypeVar("T")


@dataclass
class _Held:
    """A job this process claimed and runs: where it lives, and what it takes to claim it
    elsewhere."""

    store: object
    endpoint: str
    fingerprint: str
    owner: str | None
    written: dict = field(default_factory=dict)  # its progress so far, to move with it


class FallbackJobStore(JobStore):
    """Redis, or this instance's local store while Redis cannot be used (unreachable or erring).

    Decision: losing Redis must not stop generation. While it is down, new
    jobs are claimed in the local store (SQLite shared by this instance's
    workers), so a comic is still made and its progress answers on this
    instance; other instances cannot see those jobs (the degradation). A job
    this process was running in Redis moves to the local store at its next
    update, so its progress and result stay answerable here. The outage is
    logged once (WARNING) and its end once; Redis is tried again at most every
    ``retry_s`` seconds, and new jobs go back to it as soon as it answers.

    A job found in the local store is answered from there: it was claimed or
    moved there during an outage, so it is newer than anything Redis may
    still hold under its id.
    """

    def __init__(
        self, redis_store: RedisJobStore, local_store: LocalJobStore, retry_s: float = RETRY_S
    ) -> None:
        self.redis = redis_store
        self.local = local_store
        self._unavailable = redis_store.unavailable_errors
        self._outage = RedisOutage(
            retry_s,
            log,
            "Redis cannot be used (%s: %s): jobs and progress fall back to this instance until it "
            "answers again",
            "Redis answers again: new jobs are shared through it",
        )
        self._held: dict[str, _Held] = {}  # running jobs this process claimed, until they finish

    # --- Redis's state -------------------------------------------------------------
    @property
    def redis_available(self) -> bool:
        """False while an outage is known and its retry interval has not passed."""
        return self._outage.may_try

    def _redis(self, call: Callable[[RedisJobStore], T], write: bool = True) -> T:
        """``call(redis_store)``; on an outage, mark Redis down and raise _RedisDown.

        Only a write that succeeds ends an outage: a read-only replica or a
        full Redis still answers reads, and must not flap between the two.
        """
        if not self.redis_available:
            raise _RedisDown()
        try:
            result = call(self.redis)
        except self._unavailable as exc:
            self._redis_failed(exc)
            raise _RedisDown() from None
        self._outage.answered(wrote=write)
        return result

    def _redis_failed(self, exc: Exception) -> None:
        """An outage: mark it, and move this process's running jobs to the local store now, so
        that their progress answers from here before their next update."""
        self._outage.failed(type(exc).__name__, _first_line(exc))
        for request_id, held in list(self._held.items()):
            if held.store is self.redis:
                try:
                    self._move_to_local(request_id, held)
                except Exception:  # the local store is a file: its next update tries again
                    log.warning("could not move job %s to the local store", request_id)

    def redis_status(self) -> str:
        """Ask Redis now, whatever the outage marker says (the startup probe's question): "ok",
        "unreachable", or "refuses writes" (a read-only replica, a full Redis)."""
        try:
            self.redis.ping()
        except self._unavailable:
            return "unreachable"
        try:
            self.redis.accepts_writes()
        except self._unavailable:
            return "refuses writes"
        return "ok"

    # --- the JobStore interface ------------------------------------------------------
    def claim(self, request_id, endpoint, fingerprint, owner=None, replay_s=None):
        store, claim = self.local, None
        if self.local.get(request_id) is None:
            try:
                # Not a write that ends an outage: a full Redis (noeviction) runs the claim's Lua
                # script, writes and all, and refuses only the plain writes after it.
                claim = self._redis(
                    lambda redis: redis.claim(request_id, endpoint, fingerprint, owner, replay_s),
                    write=False,
                )
                store = self.redis
            except _RedisDown:
                pass
        if claim is None:
            claim = self.local.claim(request_id, endpoint, fingerprint, owner, replay_s)
        if claim.outcome == "new":
            self._held[request_id] = _Held(store, endpoint, fingerprint, owner)
        return claim

    def get(self, request_id):
        job = self.local.get(request_id)
        if job is None:
            try:
                job = self._redis(lambda redis: redis.get(request_id), write=False)
            except _RedisDown:
                # A job of this process has just moved here; any other may be in Redis.
                job = self.local.get(request_id)
                if job is None:
                    raise JobStoreUnavailable() from None
        return job

    def wait_for_end(self, request_id, timeout_s, still_running) -> None:
        if self.redis_available and self.local.get(request_id) is None:
            try:
                self.redis.wait_for_end(request_id, timeout_s, still_running)
                return
            except self._unavailable as exc:
                self._redis_failed(exc)
        super().wait_for_end(request_id, timeout_s, still_running)

    def running_on(self, worker: str) -> list[str]:
        found = self.local.running_on(worker)
        try:
            found += self._redis(lambda redis: redis.running_on(worker), write=False)
        except _RedisDown:
            pass
        return found

    def update(self, request_id: str, changes: dict, finished: bool = False) -> None:
        """Update the job where it lives; a job of ours in Redis moves to the local store if
        Redis is down."""
        held = self._held.pop(request_id, None) if finished else self._held.get(request_id)
        if held is not None:
            store = held.store
        else:  # not claimed by this process (a hand-back after a restart...): wherever it is found
            store = self.local if self.local.get(request_id) is not None else self.redis
        if held is not None and not finished:
            held.written.update(changes)
        if store is self.redis:
            try:
                self._redis(lambda redis: redis.update(request_id, changes, finished))
                return
            except _RedisDown:
                if held is None:
                    return  # not ours, and Redis is down: nothing here to update
                store = self._move_to_local(request_id, held)
        store.update(request_id, changes, finished)

    def _move_to_local(self, request_id: str, held: _Held) -> LocalJobStore:
        if held.store is self.local:
            return self.local  # moved already, when the outage was seen
        if self.local.get(request_id) is None:
            self.local.claim(request_id, held.endpoint, held.fingerprint, held.owner)
            if held.written:
                self.local.update(request_id, held.written)
        held.store = self.local
        log.info("job %s continues in this instance's store while Redis is down", request_id)
        return self.local


class _RedisDown(Exception):
    """Redis cannot be used right now (internal to FallbackJobStore)."""


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:120]
