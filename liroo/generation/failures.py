"""Failures of one picture or one clip among many: their codes, and which one speaks for a request.

A picture or clip that fails does not stop the others; the request fails
only when too few succeed, and then with the most telling of their errors.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..errors import code_for
from ..governor import MemoryPressure
from ..providers.base import BadOutput
from ..storage import StorageError

log = logging.getLogger("liroo.generation")


def failure_code(error: Exception | None, default: str) -> str | None:
    """The stable code of an item's failure (errors.py's table; ``default`` for an unexpected
    one)."""
    if error is None:
        return None
    return code_for(error) or default


def note_failure(label: str, request_id: str, error: Exception) -> None:
    """Log one item's failure: expected ones as a line, anything else with its traceback."""
    code = code_for(error)
    if code:
        log.warning("%s failed for request %s: %s", label, request_id, code)
    else:
        log.error("%s failed for request %s", label, request_id, exc_info=error)


def dominant_error(errors: list[Exception]) -> Exception:
    """The error to report when too few items were made: retryable ones first, else the most
    common."""
    if not errors:
        return BadOutput("nothing was made")
    for kind in (MemoryPressure, StorageError):
        for error in errors:
            if isinstance(error, kind):
                return error
    most_common_type, _ = Counter(type(e) for e in errors).most_common(1)[0]
    return next(e for e in errors if type(e) is most_common_type)
