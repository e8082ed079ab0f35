"""What the governor tells its listeners: one event per action, its kind an enum."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("liroo.governor")


class EventKind(enum.StrEnum):
    """A str enum, so that logs and JSON fields show the plain name ("shed")."""

    SHED = "shed"  # a request refused with 503
    QUEUED = "queued"  # a wait in the door's line ended (admitted, timed out, or the line was full)
    CLEANUP = "cleanup"  # a cleanup ran
    REFUSED = "refused"  # a reservation for a heavy step was refused
    RECYCLE = "recycle"  # this worker is retiring
    RSS = "rss"  # a periodic reading of this worker's RSS


@dataclass(frozen=True)
class GovernorEvent:
    kind: EventKind
    figures: dict = field(default_factory=dict)


Listener = Callable[[GovernorEvent], None]


class Events:
    """The governor's listeners; every part of the governor reports through one of these."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, kind: EventKind, /, **figures) -> None:
        event = GovernorEvent(kind, figures)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break admission
                log.exception("governor listener failed")
