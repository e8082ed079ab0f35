"""The storage's recent health, seen by every worker of the instance, for /health.

/health must not call anything slow (no write probe, no network), so the
storages record what their real writes met: the time and errno of the last
failure, cleared by the next success. The record lives in one shared
anonymous page (``mmap``, as the governor's ledger does) made at import, in
gunicorn's master before it forks, so a failure met by one worker is seen by
the worker that answers /health.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time

# How long after a failure /health reports it when no write has succeeded since.
DEGRADED_FOR_S = 300.0

# time of the last failure (0: none since the last success), its errno
_RECORD = struct.Struct("dq")


class StorageHealth:
    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _RECORD.size, flags=mmap.MAP_SHARED)

    def failed(self, error_number: int | None = None) -> None:
        # One 16-byte write; a reader racing it at worst reports the previous failure.
        _RECORD.pack_into(self._map, 0, time.time(), error_number or 0)

    def succeeded(self) -> None:
        # a read is cheaper than dirtying the page on every write
        if _RECORD.unpack_from(self._map, 0)[0]:
            _RECORD.pack_into(self._map, 0, 0.0, 0)

    def problem(self) -> str | None:
        """A sentence about a recent storage failure, or None when storage looks fine."""
        when, number = _RECORD.unpack_from(self._map, 0)
        if not when or time.time() - when > DEGRADED_FOR_S:
            return None
        cause = os.strerror(number) if number else "the storage service failed"
        return f"Storing media failed {max(0, round(time.time() - when))} s ago ({cause})."


STORAGE_HEALTH = StorageHealth()

# OSErrors that mean the storage, not the request, is at fault: 503 storage_unavailable.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
)
