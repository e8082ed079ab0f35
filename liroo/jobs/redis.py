"""RedisJobStore (``REDIS_URL``): every Cloud Run instance sees every job; the claim is one atomic
Lua script.

It is always used through FallbackJobStore (fallback.py), so that losing Redis
degrades progress to this instance instead of failing generation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Callable

from .model import RUNNING, STALE_AFTER_S, Claim, Job, JobStore, worker_tag

# The claim rule of liroo.jobs.model.decide (its docstring holds the truth table, which
# tests/test_jobs.py::test_the_claim_rule runs against both stores), in Lua so that reading
# the job and taking it is one atomic step for every instance sharing Redis.
# KEYS[1]: the job's hash; KEYS[2]: the set of the claiming worker's jobs.
# ARGV: fingerprint, now, stale_after, new job's fields as JSON, ttl, owner ('' for none),
# replay window in seconds ('' for none).
CLAIM_LUA = """
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
"""  # noqa: E501 (Lua kept as is: the script is the claim rule, run atomically in Redis)

_FIELDS = [f for f in Job.__dataclass_fields__]


class RedisJobStore(JobStore):
    """Jobs in Redis hashes with a TTL, so that every instance answers progress, results and
    retries."""

    PREFIX = "liroo:job:"
    ENDED_PREFIX = "liroo:job-ended:"  # a pub/sub channel per job: its end wakes waiting retries
    READY_KEY = "liroo:ready-probe"  # written by /ready: Redis must accept writes, not only reads
    WORKER_PREFIX = "liroo:worker:"  # a set per worker_tag(): the keys of the jobs it claimed
    _NUMBERS = {
        "step_number": int,
        "total_steps": int,
        "result_status": int,
        "created_at": float,
        "updated_at": float,
        "heartbeat": float,
        "cancel_requested_at": float,
    }

    def __init__(
        self, url: str, ttl_s: int, running_ttl_s: float, read_timeout_s: float = 0.5
    ) -> None:
        import redis  # only needed when REDIS_URL is set

        self._redis = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
        # Reads (progress polls, /jobs, /ready's probe) wait at most read_timeout_s: a Redis
        # that is slow to answer is, for a poll, a Redis that is down (FallbackJobStore), so
        # that polls never pile up on worker threads behind it.
        self._reads = redis.Redis.from_url(
            url,
            socket_timeout=read_timeout_s,
            socket_connect_timeout=read_timeout_s,
            health_check_interval=30,
        )
        # What "Redis cannot be used" looks like: not only unreachable (connection errors, timeouts)
        # but answering wrongly too: a read-only replica, maxmemory with noeviction, a port that
        # speaks another protocol. Each is an outage for FallbackJobStore.
        self.unavailable_errors = (redis.exceptions.RedisError,)
        self.ttl_s = ttl_s
        self.running_ttl_s = int(running_ttl_s)
        self._claim = self._redis.register_script(CLAIM_LUA)
        self._ends = None  # every job's end, for parked joins (listen_for_ends)

    def _key(self, request_id: str) -> str:
        return self.PREFIX + request_id

    def ping(self) -> bool:
        return self._reads.ping()

    def accepts_writes(self) -> bool:
        """A real write, with the short timeout: a read-only replica or a full Redis answers
        PING but refuses every job."""
        return bool(self._reads.set(self.READY_KEY, repr(time.time()), ex=60))

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
        """Claim an id by the rule in liroo.jobs.model.decide, run atomically in Redis
        (CLAIM_LUA)."""
        job = Job(request_id, endpoint, fingerprint, owner=owner, worker=worker_tag())
        outcome = self._claim(
            keys=[self._key(request_id), self.WORKER_PREFIX + job.worker],
            args=[
                fingerprint,
                repr(time.time()),
                STALE_AFTER_S,
                json.dumps(self._to_hash(asdict(job))),
                self.running_ttl_s,
                owner or "",
                "" if replay_s is None else repr(float(replay_s)),
            ],
        )[0].decode()
        return Claim(outcome, job if outcome == "new" else (self.get(request_id) or job))

    def get(self, request_id):
        return self._from_hash(self._reads.hgetall(self._key(request_id)))

    def running_on(self, worker: str) -> list[str]:
        found = []
        for key in self._reads.smembers(self.WORKER_PREFIX + worker):
            request_id = key.decode()[len(self.PREFIX) :]
            job = self.get(request_id)
            if job is not None and job.status == RUNNING and job.worker == worker:
                found.append(request_id)
        return found

    def update(self, request_id: str, changes: dict, finished: bool = False) -> None:
        now = time.time()
        key = self._key(request_id)
        worker = self._redis.hget(key, "worker") if finished else None
        with self._redis.pipeline() as pipe:
            pipe.hset(key, mapping=self._to_hash({**changes, "updated_at": now, "heartbeat": now}))
            pipe.expire(key, self.ttl_s if finished else self.running_ttl_s)
            if finished:
                pipe.publish(self.ENDED_PREFIX + request_id, changes.get("status", ""))
            pipe.execute()
        if worker:  # no longer running: out of its worker's set (what running_on reads)
            self._redis.srem(self.WORKER_PREFIX + worker.decode(), key)

    def wait_for_end(
        self, request_id: str, timeout_s: float, still_running: Callable[[], bool]
    ) -> None:
        """Woken by the job's end on any instance (its update publishes on ENDED_PREFIX + id)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.ENDED_PREFIX + request_id)
            if not still_running():
                return
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                if pubsub.get_message(timeout=left) is not None:
                    return
        finally:
            pubsub.close()

    def listen_for_ends(self, on_end: Callable[[str], None], timeout_s: float) -> None:
        """Call ``on_end(request_id)`` for each job that ends, on any instance, for up to
        ``timeout_s``: one pattern subscription per process serves every parked join."""
        if self._ends is None:
            ends = self._redis.pubsub(ignore_subscribe_messages=True)
            ends.psubscribe(self.ENDED_PREFIX + "*")
            self._ends = ends
        deadline = time.monotonic() + timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = self._ends.get_message(timeout=left)
                if message is not None:
                    on_end(message["channel"].decode()[len(self.ENDED_PREFIX) :])
        except Exception:
            ends, self._ends = self._ends, None  # subscribed afresh on the next call
            try:
                ends.close()
            except Exception:
                pass
            raise
