"""Memory shared by a process and the workers it forks, with a lock that holds across both.

The reservation ledger, the door's line and the instance's Gemini budget each
keep a small table here. Made before gunicorn forks, so every worker maps the
same pages. Writes take a thread lock (this process) and a ``lockf`` record
lock on a temporary file (other processes; the kernel drops it if a holder
dies). Hand-written because the standard library's shared-memory tools either
need a manager process or leave a semaphore locked forever when a worker is
killed holding it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator


class SharedTable:
    """``nbytes`` of anonymous shared memory (``buffer``) and ``locked()`` for writing it."""

    def __init__(self, nbytes: int, name: str) -> None:
        self._lockfile = tempfile.TemporaryFile(prefix=f"liroo-{name}-")
        self._lockfile.write(b"\0")
        self._lockfile.flush()
        self.buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_SHARED)
        self._thread_lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.lockf(self._lockfile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._lockfile, fcntl.LOCK_UN)


def own_or_free_slot(pid: int, owners: Iterable[tuple[int, int]]) -> int | None:
    """Of a table's (slot, owner pid) pairs: the slot ``pid`` owns, else the first one no live
    process owns (owner 0, or dead), else None (the table is full)."""
    free = None
    for slot, owner in owners:
        if owner == pid:
            return slot
        if free is None and (owner == 0 or not alive(owner)):
            free = slot
    return free


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
