"""LocalJobStore: jobs in SQLite, in a folder shared by the gunicorn workers of one instance.

SQLite rather than a dict, because the app polls progress on whichever worker
the connection lands on.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict

from ..shared_sqlite import SharedSQLite, path_in_temp_dir
from .model import RUNNING, Claim, Job, JobStore, decide, worker_tag


class LocalJobStore(JobStore):
    """Jobs in SQLite, shared by the processes of one instance."""

    def __init__(self, path: str, ttl_s: int, running_ttl_s: float) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.running_ttl_s = running_ttl_s
        self._db = SharedSQLite(path)
        with self._db.connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (request_id TEXT PRIMARY KEY, data TEXT NOT NULL, "
                "expires_at REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at)")

    @classmethod
    def in_temp_dir(cls, ttl_s: int, running_ttl_s: float) -> "LocalJobStore":
        """A store in a fresh folder; made before gunicorn forks, so all workers share it."""
        return cls(path_in_temp_dir("liroo-jobs-", "jobs.sqlite3"), ttl_s, running_ttl_s)

    def _load(self, db: sqlite3.Connection, request_id: str) -> Job | None:
        row = db.execute(
            "SELECT data FROM jobs WHERE request_id = ? AND expires_at > ?",
            (request_id, time.time()),
        ).fetchone()
        return Job(**json.loads(row[0])) if row else None

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        ttl = self.ttl_s if job.finished else self.running_ttl_s
        db.execute(
            "INSERT OR REPLACE INTO jobs (request_id, data, expires_at) VALUES (?, ?, ?)",
            (job.request_id, json.dumps(asdict(job)), time.time() + ttl),
        )

    def claim(self, request_id, endpoint, fingerprint, owner=None, replay_s=None) -> Claim:
        """Claim an id by the rule in liroo.jobs.model.decide, in one SQLite write transaction."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM jobs WHERE expires_at <= ?", (time.time(),))
            current = self._load(db, request_id)
            outcome = decide(current, fingerprint, owner, replay_s)
            if outcome == "new":
                current = Job(request_id, endpoint, fingerprint, owner=owner, worker=worker_tag())
                self._save(db, current)
        return Claim(outcome, current)

    def get(self, request_id: str) -> Job | None:
        return self._load(self._db.connect(), request_id)

    def running_on(self, worker: str) -> list[str]:
        rows = (
            self._db.connect()
            .execute(
                "SELECT request_id FROM jobs WHERE expires_at > ? AND json_extract(data, "
                "'$.status') = ? AND json_extract(data, '$.worker') = ?",
                (time.time(), RUNNING, worker),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    def update(self, request_id: str, changes: dict, finished: bool = False) -> None:
        # ``finished`` needs no help here: _save keeps a job by its own status.
        with self._db.transaction() as db:
            job = self._load(db, request_id)
            if job is not None:
                for name, value in changes.items():
                    setattr(job, name, value)
                job.updated_at = job.heartbeat = time.time()
                self._save(db, job)
