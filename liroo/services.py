"""The app's long-lived parts, built once by ``create_app`` and reached through ``services()``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from .governor import Governor, MemoryReserver
from .settings import Settings


@dataclass
class Services:
    settings: Settings
    governor: Governor          # readings and counters (always present)
    reserver: MemoryReserver    # the governor, or a yes-sayer when LIROO_GOVERNOR=off
    provider: Any = None        # liroo.providers.Provider
    storage: Any = None         # liroo.storage.Storage
    jobs: Any = None            # liroo.jobs.JobStore
    keyring: Any = None         # liroo.security.KeyRing
    limiter: Any = None         # flask_limiter.Limiter, or None without LIROO_RATE_LIMIT


def services() -> Services:
    return current_app.extensions["liroo"]
