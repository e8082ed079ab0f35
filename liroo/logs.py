"""Logging: one JSON object per line for Cloud Logging, plain text locally.

One handler on the root logger serves the app, its libraries and gunicorn
(``GunicornLogger`` sends gunicorn's error and access logs to it), so every
line of the service has the same shape. JSON lines carry what Cloud Logging
reads specially: ``severity``, ``message``, ``time``, the trace of the
request (``logging.googleapis.com/trace`` from ``X-Cloud-Trace-Context``) and
``httpRequest`` on access lines; plus ``logger`` and the ``request_id``.

Hand-written rather than google-cloud-logging's StructuredLogHandler: that
package brings grpc and tens of MB into a memory-bound service for what is a
handful of fields here.

Secrets the service knows (the Gemini key, the admin token, API keys) are
masked in every line, whatever logged them. Prompts and user text belong at
DEBUG only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Iterable

from flask import g, has_request_context, request
from gunicorn.glogging import Logger as _GunicornBaseLogger

from .governor import EventKind, GovernorEvent
from .security import read_api_keys
from .settings import Settings, SettingsError

TRACE_HEADER = "X-Cloud-Trace-Context"
REDACTED = "[redacted]"
_HANDLER_NAME = "liroo"
# A secret shorter than this is too likely to occur in ordinary text to mask.
_MIN_SECRET_LEN = 4
_TRACE_CONTEXT = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?")
# Libraries that log every HTTP call (URLs, retried error bodies) at INFO: heard
# from WARNING up, unless DEBUG is asked for.
_CHATTY_LIBRARIES = ("google_genai", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3")
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def configure_logging(settings: Settings) -> logging.Handler:
    """Install the service's handler on the root logger (replacing an earlier one) and set the
    level."""
    level = settings.log_level.strip().upper()
    if level not in _SEVERITY.values():
        raise SettingsError(
            f"LIROO_LOG_LEVEL: expected one of {', '.join(_SEVERITY.values())}, got "
            f"{settings.log_level!r}"
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestContextFilter())
    redactor = Redactor(secret_values(settings))
    handler.setFormatter(
        JsonFormatter(settings.gcp_project, redactor)
        if settings.json_logs
        else TextFormatter(redactor)
    )
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY_LIBRARIES:
        quiet = logging.NOTSET if root.level <= logging.DEBUG else max(root.level, logging.WARNING)
        logging.getLogger(name).setLevel(quiet)
    return handler


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now (test runners swap it), one flushed line per
    record."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


# --- secrets ---------------------------------------------------------------------


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings know: the Gemini key, the admin token, the API keys."""
    values = [settings.genai_api_key, settings.admin_token]
    try:
        values += read_api_keys(settings)
    except SettingsError:
        pass  # create_app refuses to start with an unreadable key file; logging must work to say so
    return [v.strip() for v in values if v and len(v.strip()) >= _MIN_SECRET_LEN]


class Redactor:
    """Masks known secret values in a finished log line, in plain and JSON-escaped form."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set()
        for secret in secrets:
            forms.add(secret)
            forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text


# --- request context ---------------------------------------------------------------


class RequestContextFilter(logging.Filter):
    """Adds the request id and trace header to records logged inside a Flask request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            if getattr(record, "request_id", None) is None:
                record.request_id = g.get("request_id")
            if getattr(record, "trace_header", None) is None:
                record.trace_header = request.headers.get(TRACE_HEADER)
        return True


def parse_trace_context(header: str | None) -> tuple[str, str | None, bool] | None:
    """``TRACE_ID/SPAN_ID;o=1`` -> (trace id, span id as 16 hex digits or None, sampled), or None.

    The header gives the span id in decimal; Cloud Logging wants 16 hex digits.
    """
    if not header:
        return None
    match = _TRACE_CONTEXT.fullmatch(header.strip())
    if not match:
        return None
    trace_id, span, sampled = match.groups()
    span_id = None
    if span is not None and 0 < int(span) < 2**64:
        span_id = f"{int(span):016x}"
    return trace_id.lower(), span_id, sampled == "1"


# --- formatters --------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record, in Cloud Logging's structured-logging shape."""

    def __init__(self, project: str | None, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.project = project
        self.redact = redactor or Redactor(())

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"  # Error Reporting finds the traceback here
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "logger": record.name,
            "pid": record.process,
        }
        trace = parse_trace_context(getattr(record, "trace_header", None))
        if trace and self.project:
            trace_id, span_id, sampled = trace
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace_id}"
            if span_id:
                entry["logging.googleapis.com/spanId"] = span_id
            entry["logging.googleapis.com/trace_sampled"] = sampled
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in (getattr(record, "json_fields", None) or {}).items():
            entry.setdefault(key, value)
        return self.redact(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """A readable line for a terminal: time, level, process, logger, message, request id."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s")
        self.redact = redactor or Redactor(())

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [request_id={request_id}]"
        return self.redact(line)


# --- governor events -----------------------------------------------------------------

_governor_log = logging.getLogger("liroo.governor.events")
# What each governor action means to an operator, and how loudly to say it.
_EVENT_LEVELS = {
    EventKind.SHED: logging.WARNING,
    EventKind.REFUSED: logging.WARNING,
    EventKind.CLEANUP: logging.INFO,
    EventKind.QUEUED: logging.INFO,
}
_EVENT_TITLES = {
    EventKind.SHED: "request shed with 503: memory at the hard limit",
    EventKind.REFUSED: "memory reservation refused",
    EventKind.QUEUED: "request waited at the door for memory",
    EventKind.CLEANUP: "memory cleanup ran",
    EventKind.RECYCLE: "retiring worker",
    EventKind.RSS: "worker RSS reading",
}


def log_governor_event(event: GovernorEvent) -> None:
    """A governor listener: each action with its figures (RSS readings at DEBUG only)."""
    if event.kind == EventKind.RECYCLE:
        # A planned recycle (max_requests) is routine; one for memory is a warning.
        level = logging.INFO if event.figures.get("reason") == "max_requests" else logging.WARNING
    elif event.kind == EventKind.CLEANUP and event.figures.get("reason") == "idle":
        level = logging.DEBUG  # routine: after a worker's last costed request, up to once a second
    else:
        level = _EVENT_LEVELS.get(event.kind, logging.DEBUG)
    if not _governor_log.isEnabledFor(level):
        return
    figures = dict(event.figures)
    request_id = figures.pop("request_id", None)
    details = " ".join(f"{key}={value}" for key, value in figures.items())
    _governor_log.log(
        level,
        "governor %s: %s (%s)",
        event.kind,
        _EVENT_TITLES.get(event.kind, event.kind),
        details,
        extra={
            "json_fields": {"governor": {"event": event.kind, **figures}},
            "request_id": request_id,
        },
    )


# --- gunicorn ----------------------------------------------------------------------------


class GunicornLogger(_GunicornBaseLogger):
    """gunicorn's logger, sending its error and access logs through the service's handler.

    The access line carries the request id (from the response's X-Request-ID),
    the trace header and Cloud Logging's ``httpRequest`` fields. The path is
    logged without its query string, which could carry user text.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in [h for h in log.handlers if getattr(h, "_gunicorn", False)]:
                log.removeHandler(handler)
            log.propagate = True
        # Access lines are INFO: a quieter LIROO_LOG_LEVEL silences them too.
        self.access_log.setLevel(max(logging.INFO, self.loglevel))

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled or not self.access_log.isEnabledFor(logging.INFO):
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        try:
            status = int(status)
        except (TypeError, ValueError):
            pass
        headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
        request_id = next(
            (value for name, value in headers if name.lower() == "x-request-id"), None
        )
        latency_s = request_time.total_seconds()
        method, path = environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-")
        user_agent = environ.get("HTTP_USER_AGENT")
        http_request = {
            "requestMethod": method,
            "requestUrl": path,
            "status": status,
            "latency": f"{latency_s:.6f}s",
            "protocol": environ.get("SERVER_PROTOCOL"),
            "responseSize": str(getattr(resp, "sent", None) or 0),
            "userAgent": user_agent,
        }
        try:
            # repr-style escapes keep a crafted path or agent from starting a fake line in text
            # logs.
            self.access_log.info(
                '%s %s %s %.1fms "%s"',
                method,
                _one_line(path),
                status,
                latency_s * 1000,
                _one_line(user_agent or "-"),
                extra={
                    "json_fields": {"httpRequest": http_request},
                    "request_id": request_id,
                    "trace_header": environ.get("HTTP_X_CLOUD_TRACE_CONTEXT"),
                },
            )
        except Exception:  # an access line must never fail the request
            self.exception("access log failed")


def _one_line(text: str) -> str:
    """``text`` with control characters escaped, so it cannot break a text log line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
