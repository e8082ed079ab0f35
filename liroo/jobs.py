"""Progress, results and idempotency of generation requests.

Every generation request is a job keyed by its request id. The first POST
claims the id; a retry with the same id and body waits for the running job or
gets the stored result without calling any model; the same id with another
body is a conflict. Progress is answerable while the job runs and for
``LIROO_JOB_TTL_S`` after it ends.

Two stores with one interface:
- ``LocalJobStore``: SQLite in a folder shared by the gunicorn workers of one
  instance (the default). SQLite rather than a dict, because the app polls
  progress on whichever worker the connection lands on.
- ``RedisJobStore`` (``REDIS_URL``): every Cloud Run instance sees every job;
  the claim is one atomic Lua script. It is always used through
  ``FallbackJobStore``, so that losing Redis degrades progress to this
  instance instead of failing generation.

A running job carries a heartbeat refreshed by its owner; when the owner dies
(the heartbeat goes stale), a retry takes the job over instead of waiting for
ever. A running job also records the worker running it (``worker_tag``): when
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

import atexit
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, TypeVar

log = logging.getLogger("liroo.jobs")
T = TypeVar("T")

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
HEARTBEAT_S = 5.0        # how often an owner refreshes its running jobs
STALE_AFTER_S = 30.0     # a running job not refreshed for this long is abandoned
WAIT_POLL_S = 0.2        # how often a waiting retry looks at the job again

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
    result_body: str | None = None     # the JSON the synchronous call answered
    error_code: str | None = None
    owner: str | None = None           # hash of the API key that claimed it; None when keys are off
    worker: str | None = None          # worker_tag() of the process running it
    partial: str | None = None         # JSON of the items a running job has finished (Progress.advance)

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


@dataclass(frozen=True)
class Claim:
    outcome: str      # "new" (run it), "running" (wait), "finished" (replay), "conflict"
    job: Job


class JobStore(Protocol):
    def claim(self, request_id: str, endpoint: str, fingerprint: str, owner: str | None = None,
              replay_s: float | None = None) -> Claim: ...
    def running_on(self, worker: str) -> list[str]: ...
    def get(self, request_id: str) -> Job | None: ...
    def progress(self, request_id: str, step: str, step_number: int, total_steps: int, details: str = "",
                 partial: dict | None = None) -> None: ...
    def finish(self, request_id: str, status: str, result_status: int, result_body: dict,
               error_code: str | None = None) -> None: ...


_FIELDS = [f for f in Job.__dataclass_fields__]


def _partial_change(partial: dict | None) -> dict:
    """The ``partial`` field to write: only when there is something finished to show."""
    return {"partial": json.dumps(partial, separators=(",", ":"))} if partial else {}


def _decide(current: Job | None, fingerprint: str, owner: str | None = None,
            replay_s: float | None = None) -> str:
    """The claim rule shared by both stores (the Redis one is _CLAIM_LUA).

    ``replay_s``: replay a success only this long after it finished (None: while it is kept).
    """
    if current is None:
        return "new"
    if current.fingerprint != fingerprint or current.owner != owner:
        return "conflict"   # another caller's id is never waited on nor replayed
    if current.status == SUCCEEDED:
        if replay_s is not None and time.time() - current.updated_at > replay_s:
            return "new"    # asked again later, on purpose: made afresh
        return "finished"
    if current.status == FAILED or current.stale:
        return "new"  # a failure is not replayed: a retry deserves a fresh try
    return "running"


class LocalJobStore:
    """Jobs in SQLite, shared by the processes of one instance."""

    def __init__(self, path: str, ttl_s: int, running_ttl_s: float) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.running_ttl_s = running_ttl_s
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (request_id TEXT PRIMARY KEY, data TEXT NOT NULL, "
                "expires_at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at)")

    @classmethod
    def in_temp_dir(cls, ttl_s: int, running_ttl_s: float) -> "LocalJobStore":
        """A store in a fresh folder; made before gunicorn forks, so all workers share it.

        The folder goes when the process that made it exits (on Cloud Run /tmp
        is memory); forked workers inherit the exit hook but leave it alone.
        """
        folder = tempfile.mkdtemp(prefix="liroo-jobs-")
        maker = os.getpid()
        atexit.register(lambda: os.getpid() == maker and shutil.rmtree(folder, ignore_errors=True))
        return cls(os.path.join(folder, "jobs.sqlite3"), ttl_s, running_ttl_s)

    def _connect(self) -> sqlite3.Connection:
        # One connection per thread and process: SQLite connections must not cross a fork.
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _load(self, db: sqlite3.Connection, request_id: str) -> Job | None:
        row = db.execute("SELECT data FROM jobs WHERE request_id = ? AND expires_at > ?",
                         (request_id, time.time())).fetchone()
        return Job(**json.loads(row[0])) if row else None

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        ttl = self.ttl_s if job.finished else self.running_ttl_s
        db.execute("INSERT OR REPLACE INTO jobs (request_id, data, expires_at) VALUES (?, ?, ?)",
                   (job.request_id, json.dumps(asdict(job)), time.time() + ttl))

    def claim(self, request_id: str, endpoint: str, fingerprint: str, owner: str | None = None,
              replay_s: float | None = None) -> Claim:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM jobs WHERE expires_at <= ?", (time.time(),))
            current = self._load(db, request_id)
            outcome = _decide(current, fingerprint, owner, replay_s)
            if outcome == "new":
                current = Job(request_id, endpoint, fingerprint, owner=owner, worker=worker_tag())
                self._save(db, current)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Claim(outcome, current)

    def get(self, request_id: str) -> Job | None:
        return self._load(self._connect(), request_id)

    def running_on(self, worker: str) -> list[str]:
        rows = self._connect().execute(
            "SELECT request_id FROM jobs WHERE expires_at > ? AND json_extract(data, '$.status') = ? "
            "AND json_extract(data, '$.worker') = ?", (time.time(), RUNNING, worker)).fetchall()
        return [row[0] for row in rows]

    def _update(self, request_id: str, **changes) -> None:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            job = self._load(db, request_id)
            if job is not None:
                for name, value in changes.items():
                    setattr(job, name, value)
                job.updated_at = job.heartbeat = time.time()
                self._save(db, job)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def progress(self, request_id, step, step_number, total_steps, details="", partial=None):
        self._update(request_id, step=step, step_number=step_number, total_steps=total_steps, details=details,
                     **_partial_change(partial))

    def heartbeat(self, request_ids) -> None:
        for request_id in request_ids:
            self._update(request_id)

    def finish(self, request_id, status, result_status, result_body, error_code=None):
        self._update(request_id, status=status, result_status=result_status,
                     result_body=json.dumps(result_body), error_code=error_code,
                     step="Done" if status == SUCCEEDED else "Failed")


# KEYS[1]: the job's hash; KEYS[2]: the set of the claiming worker's jobs.
# ARGV: fingerprint, now, stale_after, new job's fields as JSON, ttl, owner ('' for none),
# replay window in seconds ('' for none).
_CLAIM_LUA = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local take = false
if not fp then
  take = true
elseif fp ~= ARGV[1] or (redis.call('HGET', KEYS[1], 'owner') or '') ~= ARGV[6] then
  return {'conflict'}
else
  local status = redis.call('HGET', KEYS[1], 'status')
  local beat = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
  if status == 'succeeded' then
    local finished = tonumber(redis.call('HGET', KEYS[1], 'updated_at') or '0')
    if ARGV[7] == '' or finished >= tonumber(ARGV[2]) - tonumber(ARGV[7]) then return {'finished'} end
    take = true
  elseif status == 'failed' or (status == 'running' and beat < tonumber(ARGV[2]) - tonumber(ARGV[3])) then
    take = true
  else
    return {'running'}
  end
end
redis.call('DEL', KEYS[1])
local fields = cjson.decode(ARGV[4])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
return {'new'}
"""


class RedisJobStore:
    """Jobs in Redis hashes with a TTL, so that every instance answers progress, results and retries."""

    PREFIX = "liroo:job:"
    WORKER_PREFIX = "liroo:worker:"   # a set per worker_tag(): the keys of the jobs it claimed
    _NUMBERS = {"step_number": int, "total_steps": int, "result_status": int,
                "created_at": float, "updated_at": float, "heartbeat": float}

    def __init__(self, url: str, ttl_s: int, running_ttl_s: float) -> None:
        import redis  # only needed when REDIS_URL is set

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
        # What "Redis cannot be used" looks like: not only unreachable (connection errors, timeouts)
        # but answering wrongly too: a read-only replica, maxmemory with noeviction, a port that
        # speaks another protocol. Each is an outage for FallbackJobStore.
        self.unavailable_errors = (redis.exceptions.RedisError,)
        self.ttl_s = ttl_s
        self.running_ttl_s = int(running_ttl_s)
        self._claim = self._redis.register_script(_CLAIM_LUA)

    def _key(self, request_id: str) -> str:
        return self.PREFIX + request_id

    def ping(self) -> bool:
        return self._redis.ping()

    @staticmethod
    def _to_hash(values: dict) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in values.items()}

    @classmethod
    def _from_hash(cls, raw: dict) -> Job | None:
        values = {k.decode(): v.decode() for k, v in raw.items()}
        if "fingerprint" not in values:
            return None
        job = {}
        for name in _FIELDS:
            value = values.get(name, "")
            if name in cls._NUMBERS:
                job[name] = cls._NUMBERS[name](value) if value != "" else None
            else:
                job[name] = value if value != "" or name in ("step", "details") else None
        return Job(**job)

    def claim(self, request_id, endpoint, fingerprint, owner=None, replay_s=None):
        job = Job(request_id, endpoint, fingerprint, owner=owner, worker=worker_tag())
        outcome = self._claim(keys=[self._key(request_id), self.WORKER_PREFIX + job.worker],
                              args=[fingerprint, repr(time.time()), STALE_AFTER_S,
                                    json.dumps(self._to_hash(asdict(job))), self.running_ttl_s,
                                    owner or "", "" if replay_s is None else repr(float(replay_s))])[0].decode()
        return Claim(outcome, job if outcome == "new" else (self.get(request_id) or job))

    def get(self, request_id):
        return self._from_hash(self._redis.hgetall(self._key(request_id)))

    def running_on(self, worker: str) -> list[str]:
        found = []
        for key in self._redis.smembers(self.WORKER_PREFIX + worker):
            request_id = key.decode()[len(self.PREFIX):]
            job = self.get(request_id)
            if job is not None and job.status == RUNNING and job.worker == worker:
                found.append(request_id)
        return found

    def _update(self, request_id: str, ttl: int, **changes) -> None:
        now = time.time()
        key = self._key(request_id)
        with self._redis.pipeline() as pipe:
            pipe.hset(key, mapping=self._to_hash({**changes, "updated_at": now, "heartbeat": now}))
            pipe.expire(key, ttl)
            pipe.execute()

    def progress(self, request_id, step, step_number, total_steps, details="", partial=None):
        self._update(request_id, self.running_ttl_s, step=step, step_number=step_number,
                     total_steps=total_steps, details=details, **_partial_change(partial))

    def heartbeat(self, request_ids) -> None:
        for request_id in request_ids:
            self._update(request_id, self.running_ttl_s)

    def finish(self, request_id, status, result_status, result_body, error_code=None):
        worker = self._redis.hget(self._key(request_id), "worker")
        self._update(request_id, self.ttl_s, status=status, result_status=result_status,
                     result_body=json.dumps(result_body), error_code=error_code,
                     step="Done" if status == SUCCEEDED else "Failed")
        if worker:
            self._redis.srem(self.WORKER_PREFIX + worker.decode(), self._key(request_id))


REDIS_RETRY_S = 3.0   # while Redis is down, it is tried again at most this often


@dataclass
class _Held:
    """A job this process claimed and runs: where it lives, and what it takes to claim it elsewhere."""
    store: object
    endpoint: str
    fingerprint: str
    owner: str | None


class FallbackJobStore:
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

    def __init__(self, redis_store: RedisJobStore, local_store: LocalJobStore, retry_s: float = REDIS_RETRY_S) -> None:
        self.redis = redis_store
        self.local = local_store
        self.retry_s = retry_s
        self._unavailable = redis_store.unavailable_errors
        self._lock = threading.Lock()
        self._down_until = 0.0          # time.monotonic() before which Redis is not tried
        self._outage = False
        self._held: dict[str, _Held] = {}   # running jobs this process claimed, until they finish

    # --- Redis's state -------------------------------------------------------------
    @property
    def redis_available(self) -> bool:
        """False while an outage is known and its retry interval has not passed."""
        return time.monotonic() >= self._down_until

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
            with self._lock:
                self._down_until = time.monotonic() + self.retry_s
                first, self._outage = not self._outage, True
            if first:
                log.warning("Redis cannot be used (%s: %s): jobs and progress fall back to this instance "
                            "until it answers again", type(exc).__name__, _first_line(exc))
            raise _RedisDown() from None
        if self._outage and write:
            with self._lock:
                back, self._outage = self._outage, False
            if back:
                log.warning("Redis answers again: new jobs are shared through it")
        return result

    def redis_reachable(self) -> bool:
        """Ask Redis now (a PING), whatever the outage marker says: the startup probe's question."""
        try:
            return bool(self.redis.ping())
        except self._unavailable:
            return False

    # --- the JobStore interface ------------------------------------------------------
    def claim(self, request_id, endpoint, fingerprint, owner=None, replay_s=None):
        store, claim = self.local, None
        if self.local.get(request_id) is None:
            try:
                claim = self._redis(lambda redis: redis.claim(request_id, endpoint, fingerprint, owner, replay_s))
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
                pass
        return job

    def running_on(self, worker: str) -> list[str]:
        found = self.local.running_on(worker)
        try:
            found += self._redis(lambda redis: redis.running_on(worker), write=False)
        except _RedisDown:
            pass
        return found

    def _write(self, request_id: str, apply: Callable[[JobStore], None]) -> None:
        """Apply an update where the job lives; a job of ours in Redis moves to the local store if Redis is down."""
        held = self._held.get(request_id)
        if held is not None:
            store = held.store
        else:   # not claimed by this process (a hand-back after a restart...): wherever it is found
            store = self.local if self.local.get(request_id) is not None else self.redis
        if store is self.redis:
            try:
                self._redis(apply)
                return
            except _RedisDown:
                if held is None:
                    return   # not ours, and Redis is down: nothing here to update
                store = self._move_to_local(request_id, held)
        apply(store)

    def _move_to_local(self, request_id: str, held: _Held) -> LocalJobStore:
        if self.local.get(request_id) is None:
            self.local.claim(request_id, held.endpoint, held.fingerprint, held.owner)
        held.store = self.local
        log.info("job %s continues in this instance's store while Redis is down", request_id)
        return self.local

    def progress(self, request_id, step, step_number, total_steps, details="", partial=None):
        self._write(request_id, lambda store: store.progress(request_id, step, step_number, total_steps, details,
                                                             partial))

    def heartbeat(self, request_ids) -> None:
        for request_id in request_ids:
            self._write(request_id, lambda store: store.heartbeat([request_id]))

    def finish(self, request_id, status, result_status, result_body, error_code=None):
        try:
            self._write(request_id, lambda store: store.finish(request_id, status, result_status, result_body,
                                                               error_code))
        finally:
            self._held.pop(request_id, None)


class _RedisDown(Exception):
    """Redis cannot be used right now (internal to FallbackJobStore)."""


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:120]


class Heartbeats:
    """Keeps this process's running jobs fresh, so that retries elsewhere keep waiting for them."""

    def __init__(self, store) -> None:
        self.store = store
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = None

    def add(self, request_id: str) -> None:
        with self._lock:
            self._running.add(request_id)
            if self._thread is None or self._pid != os.getpid():  # one thread per worker, started after fork
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._beat, name="liroo-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, request_id: str) -> None:
        with self._lock:
            self._running.discard(request_id)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _beat(self) -> None:
        tick = threading.Event()
        while True:
            tick.wait(HEARTBEAT_S)
            with self._lock:
                running = list(self._running)
            try:
                self.store.heartbeat(running)
            except Exception:  # the store is down: the next beat tries again
                log.warning("could not refresh %d running jobs", len(running), exc_info=True)


def make_job_store(settings) -> "JobStore":
    running_ttl = settings.request_deadline_s + settings.job_ttl_s
    local = LocalJobStore.in_temp_dir(settings.job_ttl_s, running_ttl)
    if settings.redis_url:
        return FallbackJobStore(RedisJobStore(settings.redis_url, settings.job_ttl_s, running_ttl), local)
    return local
