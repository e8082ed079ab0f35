"""Where ``LIROO_RATE_LIMIT`` keeps its counts: one count per service, or per instance, never per
worker.

Flask-Limiter counts through a ``limits`` storage. With ``REDIS_URL`` it is
limits' own Redis storage (its moving window is one atomic Lua script), so
every instance shares one count. Without Redis, limits offers only
per-process memory (or servers this service does not run: memcached,
MongoDB), which with two gunicorn workers let twice the limit through; so the
count lives in a small SQLite file made before the fork, which every worker
of the instance opens: ``InstanceStorage`` below, registered with limits under
the ``liroo-instance://`` scheme. SQLite rather than shared memory because a
moving window is a variable list of hit times per caller; it is the same
kind of file as the instance's job store (liroo/shared_sqlite.py), and a hit is
one short ``BEGIN IMMEDIATE`` transaction.

With Redis, ``FallbackStorage`` (``liroo-fallback://``) wraps both: while
Redis cannot be reached the instance's count is used (logged once per
outage, Redis tried again at most every few seconds), rather than
Flask-Limiter's own fallback, which is per-process memory.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import urllib.parse
from typing import Any, Callable, TypeVar

from limits.storage import MovingWindowSupport, Storage, storage_from_string

from .outage import RETRY_S, RedisOutage
from .shared_sqlite import SharedSQLite, path_in_temp_dir

log = logging.getLogger("liroo.ratelimits")
T = TypeVar("T")


class InstanceStorage(Storage, MovingWindowSupport):
    """limits' storage in SQLite: ``liroo-instance:///path/to/file`` (the folder must exist)."""

    STORAGE_SCHEME = ["liroo-instance"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.path = urllib.parse.urlparse(uri).path
        self._db = SharedSQLite(self.path)
        db = self._db.connect()
        db.execute(
            "CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, at REAL NOT NULL, expires REAL "
            "NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS hits_key ON hits (key, at)")
        db.execute("CREATE INDEX IF NOT EXISTS hits_expiry ON hits (expires)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, "
            "expires REAL NOT NULL)"
        )

    @classmethod
    def uri_in_temp_dir(cls) -> str:
        """A fresh file's URI; made before gunicorn forks, so all workers share it (removed when the
        maker exits)."""
        return "liroo-instance://" + path_in_temp_dir("liroo-ratelimit-", "counts.sqlite3")

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _transaction(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        with self._db.transaction() as db:
            return work(db, time.time())

    # --- the moving window (what LIROO_RATE_LIMIT uses) -------------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False

        def acquire(db: sqlite3.Connection, now: float) -> bool:
            db.execute("DELETE FROM hits WHERE expires <= ?", (now,))
            (count,) = db.execute(
                "SELECT COUNT(*) FROM hits WHERE key = ? AND at > ?", (key, now - expiry)
            ).fetchone()
            if count + amount > limit:
                return False
            db.executemany(
                "INSERT INTO hits (key, at, expires) VALUES (?, ?, ?)",
                [(key, now, now + expiry)] * amount,
            )
            return True

        return self._transaction(acquire)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        oldest, count = (
            self._db.connect()
            .execute(
                "SELECT MIN(at), COUNT(*) FROM hits WHERE key = ? AND at > ?", (key, now - expiry)
            )
            .fetchone()
        )
        return (oldest if count else now), count

    # --- fixed windows (limits' other strategies; part of its storage interface)
    # -----------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        def incr(db: sqlite3.Connection, now: float) -> int:
            db.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            db.execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                "UPDATE SET value = value + excluded.value",
                (key, amount, now + expiry),
            )
            return db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()[0]

        return self._transaction(incr)

    def get(self, key: str) -> int:
        row = (
            self._db.connect()
            .execute("SELECT value FROM counters WHERE key = ? AND expires > ?", (key, time.time()))
            .fetchone()
        )
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = (
            self._db.connect()
            .execute("SELECT expires FROM counters WHERE key = ?", (key,))
            .fetchone()
        )
        return row[0] if row else time.time()

    def check(self) -> bool:
        try:
            self._db.connect().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        def reset(db: sqlite3.Connection, now: float) -> int:
            removed = db.execute("DELETE FROM counters").rowcount
            return removed + db.execute("DELETE FROM hits").rowcount

        return self._transaction(reset)

    def clear(self, key: str) -> None:
        def clear(db: sqlite3.Connection, now: float) -> None:
            db.execute("DELETE FROM counters WHERE key = ?", (key,))
            db.execute("DELETE FROM hits WHERE key = ?", (key,))

        self._transaction(clear)


# FallbackStorage's calls that only read: an answer to one does not end an outage.
_READS = frozenset({"get_moving_window", "get", "get_expiry"})


class FallbackStorage(Storage, MovingWindowSupport):
    """Redis for the service's count, the instance's while Redis cannot be reached.

    ``liroo-fallback://`` with options ``redis_url``, ``instance_uri`` and
    the Redis client's own (timeouts).
    """

    STORAGE_SCHEME = ["liroo-fallback"]

    def __init__(
        self,
        uri: str,
        wrap_exceptions: bool = False,
        *,
        redis_url: str,
        instance_uri: str,
        retry_s: float = RETRY_S,
        **redis_options: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.redis = storage_from_string(redis_url, **redis_options)
        self.instance = InstanceStorage(instance_uri)
        self._unavailable = self.redis.base_exceptions
        self._outage = RedisOutage(
            retry_s,
            log,
            "Redis cannot be reached (%s): the rate limit counts on this instance alone until it "
            "answers again",
            "Redis answers again: the rate limit is counted for the whole service",
        )

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._outage.may_try:
            try:
                result = getattr(self.redis, name)(*args, **kwargs)
            except self._unavailable as exc:
                self._outage.failed(type(exc).__name__)
            else:
                self._outage.answered(wrote=name not in _READS)
                return result
        return getattr(self.instance, name)(*args, **kwargs)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self._call("acquire_entry", key, limit, expiry, amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self._call("get_moving_window", key, limit, expiry)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._call("incr", key, expiry, amount)

    def get(self, key: str) -> int:
        return self._call("get", key)

    def get_expiry(self, key: str) -> float:
        return self._call("get_expiry", key)

    def check(self) -> bool:
        return True  # one of the two always answers

    def reset(self) -> int | None:
        return self._call("reset")

    def clear(self, key: str) -> None:
        self._call("clear", key)


def storage_settings(redis_url: str | None) -> tuple[str, dict[str, Any]]:
    """(Flask-Limiter's storage_uri, its storage_options): the service's count with Redis, else the
    instance's."""
    instance_uri = InstanceStorage.uri_in_temp_dir()
    if not redis_url:
        return instance_uri, {}
    return "liroo-fallback://", {
        "redis_url": redis_url,
        "instance_uri": instance_uri,
        "socket_timeout": 3,
        "socket_connect_timeout": 2,
    }
