"""Timestamps as the app reads them: ISO-8601 in UTC with milliseconds and a Z."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def utc_timestamp(ts: float | None = None) -> str:
    """``ts`` (seconds since the epoch; default now) as e.g. ``2025-01-11T17:52:50.185Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
