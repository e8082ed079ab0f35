"""Logs: JSON lines for Cloud Logging (trace, request id, access lines, governor actions), text
locally, secrets masked. The server tests read what a real gunicorn wrote."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import requests

from liroo import create_app, logs
from liroo.governor import GovernorEvent
from liroo.settings import Settings, SettingsError
from tests.servers import wait_for

TRACE_ID = "105445aa7843bc8bf206b12000100000"
TRACE_HEADER = f"{TRACE_ID}/123456789;o=1"
SPAN_HEX = f"{123456789:016x}"


@pytest.fixture
def restore_root_logger():
    """configure_logging changes the root logger; put it back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def record(msg="hello %s", args=("world",), level=logging.INFO, **extra) -> logging.LogRecord:
    rec = logging.getLogger("liroo.test").makeRecord(
        "liroo.test", level, __file__, 1, msg, args, None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


# --- formatting ----------------------------------------------------------------------


def test_trace_header_is_parsed_with_the_span_in_hex():
    assert logs.parse_trace_context(TRACE_HEADER) == (TRACE_ID, SPAN_HEX, True)
    assert logs.parse_trace_context(f"{TRACE_ID.upper()};o=0") == (TRACE_ID, None, False)
    assert logs.parse_trace_context(TRACE_ID) == (TRACE_ID, None, False)


@pytest.mark.parametrize(
    "bad",
    [None, "", "not-a-trace", f"{TRACE_ID}/abc;o=1", TRACE_ID[:-1], f"{TRACE_ID} extra"],
    ids=["none", "empty", "not-a-trace", "span-not-a-number", "short-trace", "trailing-text"],
)
def test_a_bad_trace_header_is_no_trace(bad):
    assert logs.parse_trace_context(bad) is None


def test_json_line_has_cloud_logging_fields():
    formatter = logs.JsonFormatter("demo-proj")
    entry = json.loads(
        formatter.format(
            record(
                level=logging.WARNING,
                trace_header=TRACE_HEADER,
                request_id="req-12345678",
                json_fields={"extra": 1},
            )
        )
    )
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "hello world"
    assert entry["logger"] == "liroo.test"
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-proj/traces/{TRACE_ID}"
    assert entry["logging.googleapis.com/spanId"] == SPAN_HEX
    assert entry["logging.googleapis.com/trace_sampled"] is True
    assert entry["request_id"] == "req-12345678"
    assert entry["extra"] == 1


def test_json_line_without_a_project_or_header_has_no_trace():
    no_project = json.loads(logs.JsonFormatter(None).format(record(trace_header=TRACE_HEADER)))
    no_header = json.loads(logs.JsonFormatter("demo-proj").format(record()))
    for entry in (no_project, no_header):
        assert not any(key.startswith("logging.googleapis.com/") for key in entry)


def test_an_exception_stays_on_one_line_with_its_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record(level=logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = logs.JsonFormatter(None).format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert entry["message"].startswith("hello world\nTraceback")
    assert "ValueError: boom" in entry["message"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_known_secrets_are_masked(log_format, capsys, restore_root_logger, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("file-key-0001\n")
    settings = Settings.from_env(
        {},
        log_format=log_format,
        genai_api_key="AIzaFAKE-gemini-key-000",
        admin_token="admin-token-0001",
        api_keys="client-key-0001,client-key-0002",
        api_keys_file=str(keys_file),
    )
    logs.configure_logging(settings)
    log = logging.getLogger("liroo.test")
    log.warning(
        "gemini=%s admin=%s client=%s file=%s",
        "AIzaFAKE-gemini-key-000",
        "admin-token-0001",
        "client-key-0002",
        "file-key-0001",
    )
    log.warning(
        "in a structure", extra={"json_fields": {"config": {"key": "AIzaFAKE-gemini-key-000"}}}
    )
    out = capsys.readouterr().out
    for secret in (
        "AIzaFAKE-gemini-key-000",
        "admin-token-0001",
        "client-key-0002",
        "file-key-0001",
    ):
        assert secret not in out
    assert out.count(logs.REDACTED) >= 4
    if log_format == "json":
        assert [e["message"] for e in json_lines(out)][0] == (
            "gemini=[redacted] admin=[redacted] client=[redacted] file=[redacted]"
        )


def test_http_client_chatter_is_heard_only_at_debug(capsys, restore_root_logger):
    chatty = logging.getLogger("google_genai.models")
    logs.configure_logging(Settings.from_env({}, log_format="json"))
    chatty.info("HTTP Request: POST https://generativelanguage.googleapis.com/...")
    chatty.warning("retries exhausted")
    assert [e["message"] for e in json_lines(capsys.readouterr().out)] == ["retries exhausted"]
    logs.configure_logging(Settings.from_env({}, log_format="json", log_level="DEBUG"))
    chatty.info("now heard")
    assert [e["message"] for e in json_lines(capsys.readouterr().out)] == ["now heard"]
    # leave the libraries quiet again
    logs.configure_logging(Settings.from_env({}, log_format="json"))


def test_a_record_inside_a_request_carries_its_id_and_trace(capsys, restore_root_logger, tmp_path):
    app = create_app(
        Settings.from_env({}, log_format="json", gcp_project="demo-proj", media_dir=str(tmp_path))
    )

    @app.get("/_log_probe")
    def probe():
        logging.getLogger("liroo.test").info("inside the request")
        return {"ok": True}

    response = app.test_client().get(
        "/_log_probe",
        headers={"X-Request-ID": "probe-req-0001", "X-Cloud-Trace-Context": TRACE_HEADER},
    )
    assert response.status_code == 200
    entry = next(
        e for e in json_lines(capsys.readouterr().out) if e["message"] == "inside the request"
    )
    assert entry["request_id"] == "probe-req-0001"
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-proj/traces/{TRACE_ID}"
    assert entry["severity"] == "INFO"


def test_governor_actions_are_logged_with_their_figures(capsys, restore_root_logger):
    logs.configure_logging(Settings.from_env({}, log_format="json"))
    logs.log_governor_event(
        GovernorEvent(
            "shed",
            {
                "path": "/generate_comic",
                "used_mb": 1600.0,
                "limit_mb": 1500.0,
                "request_id": "shed-req-0001",
            },
        )
    )
    logs.log_governor_event(GovernorEvent("cleanup", {"reason": "threshold", "reclaimed_mb": 12.5}))
    logs.log_governor_event(GovernorEvent("recycle", {"reason": "rss", "rss_mb": 900.0}))
    logs.log_governor_event(GovernorEvent("recycle", {"reason": "max_requests", "requests": 1000}))
    logs.log_governor_event(GovernorEvent("rss", {"rss_mb": 80.0}))  # periodic: DEBUG only
    entries = json_lines(capsys.readouterr().out)
    assert [(e["governor"]["event"], e["severity"]) for e in entries] == [
        ("shed", "WARNING"),
        ("cleanup", "INFO"),
        ("recycle", "WARNING"),
        ("recycle", "INFO"),
    ]
    shed = entries[0]
    assert shed["request_id"] == "shed-req-0001"
    assert shed["governor"] == {
        "event": "shed",
        "path": "/generate_comic",
        "used_mb": 1600.0,
        "limit_mb": 1500.0,
    }
    assert "used_mb=1600.0" in shed["message"] and "limit_mb=1500.0" in shed["message"]
    assert entries[1]["governor"]["reclaimed_mb"] == 12.5


# --- a real gunicorn -------------------------------------------------------------------


def access_entry(server, request_id: str) -> dict:
    def find():
        for line in server.log().splitlines():
            if request_id in line and "gunicorn.access" in line:
                return json.loads(line)
        return None

    return wait_for(find, 10, what=f"the access line of {request_id}")


def test_gunicorn_logs_json_lines_with_trace_and_request_id(start_server):
    server = start_server({"LIROO_LOG_FORMAT": "json", "GOOGLE_CLOUD_PROJECT": "demo-proj"})
    response = requests.get(
        server.url("/health"),
        timeout=5,
        headers={
            "X-Request-ID": "health-req-0001",
            "X-Cloud-Trace-Context": TRACE_HEADER,
            "User-Agent": "liroo-test/1",
        },
    )
    assert response.status_code == 200

    entry = access_entry(server, "health-req-0001")
    assert entry["severity"] == "INFO"
    assert entry["logger"] == "gunicorn.access"
    assert entry["request_id"] == "health-req-0001"
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-proj/traces/{TRACE_ID}"
    assert entry["logging.googleapis.com/spanId"] == SPAN_HEX
    http = entry["httpRequest"]
    assert (http["requestMethod"], http["requestUrl"], http["status"], http["userAgent"]) == (
        "GET",
        "/health",
        200,
        "liroo-test/1",
    )
    assert http["latency"].endswith("s") and float(http["latency"][:-1]) >= 0

    entries = json_lines(server.log())  # every line, gunicorn's own included, is JSON
    assert all({"severity", "message", "time", "logger"} <= set(e) for e in entries)
    assert any(
        e["logger"] == "gunicorn.error" and e["message"].startswith("Booting worker")
        for e in entries
    )


def test_a_shed_request_is_logged_as_a_warning_with_figures(start_server):
    server = start_server(
        {"LIROO_LOG_FORMAT": "json", "MEMORY_LIMIT_MB": "1", "LIROO_WORKER_RECYCLE_MB": "100000"}
    )
    response = requests.get(
        server.url("/anything"), timeout=5, headers={"X-Request-ID": "shed-req-0002"}
    )
    assert response.status_code == 503

    def shed_entry():
        return next(
            (
                e
                for e in json_lines(server.log())
                if e.get("governor", {}).get("event") == "shed"
                and e.get("request_id") == "shed-req-0002"
            ),
            None,
        )

    entry = wait_for(shed_entry, 10, what="the shed warning")
    assert entry["severity"] == "WARNING"
    assert entry["governor"]["path"] == "/anything"
    assert entry["governor"]["limit_mb"] == 1.0
    assert entry["governor"]["used_mb"] > 1
    assert access_entry(server, "shed-req-0002")["httpRequest"]["status"] == 503


def test_cloud_run_turns_json_on(start_server):
    server = start_server({"K_SERVICE": "liroo-backend"})
    requests.get(server.url("/health"), timeout=5, headers={"X-Request-ID": "krun-req-0001"})
    assert access_entry(server, "krun-req-0001")["httpRequest"]["status"] == 200
    assert json_lines(server.log())


def test_text_logs_locally(offline_server):
    server = offline_server
    requests.get(server.url("/health"), timeout=5, headers={"X-Request-ID": "text-req-0001"})
    line = wait_for(
        lambda: next((ln for ln in server.log().splitlines() if "text-req-0001" in ln), None),
        10,
        what="the access line",
    )
    assert "gunicorn.access: GET /health 200" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_an_unknown_log_level_is_a_clear_settings_error(restore_root_logger):
    with pytest.raises(SettingsError, match="LIROO_LOG_LEVEL"):
        logs.configure_logging(Settings.from_env({}, log_level="verbose"))
