"""A SQLite file shared by the gunicorn workers of one instance: the job store and the rate-limit
counts.

The file is made before gunicorn forks, so every worker opens the same one;
each thread of each process has its own connection (SQLite connections must
not cross a fork), and a write is one short ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator


def path_in_temp_dir(prefix: str, filename: str) -> str:
    """A file's path in a fresh folder, which goes when the process that made it exits.

    On Cloud Run /tmp is memory; forked workers inherit the exit hook but leave the folder alone.
    """
    folder = tempfile.mkdtemp(prefix=prefix)
    maker = os.getpid()
    atexit.register(lambda: os.getpid() == maker and shutil.rmtree(folder, ignore_errors=True))
    return os.path.join(folder, filename)


class SharedSQLite:
    """Connections to one SQLite file: one per thread and process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        # WAL (kept in the file, so once is enough): readers never wait for a writer.
        self.connect().execute("PRAGMA journal_mode=WAL")

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (no upgrade deadlock between workers), rolled back on
        any error."""
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
