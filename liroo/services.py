"""The app's long-lived parts, built once by ``create_app`` and reached through ``services()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from .governor import Governor, MemoryReserver
from .settings import Settings

if TYPE_CHECKING:  # names for the fields only: these modules call services() themselves
    from flask_limiter import Limiter

    from .api.runner import Runner
    from .providers import Provider
    from .security import KeyRing
    from .storage import Storage


@dataclass(frozen=True)
class Services:
    settings: Settings
    governor: Governor  # readings and counters (always present)
    reserver: MemoryReserver  # the governor, or a yes-sayer when LIROO_GOVERNOR=off
    provider: Provider
    storage: Storage
    runner: Runner  # runs generations; its job store is runner.store
    keyring: KeyRing  # API keys and admin token (empty when none are configured)
    limiter: Limiter | None  # None without LIROO_RATE_LIMIT


def services() -> Services:
    return current_app.extensions["liroo"]
