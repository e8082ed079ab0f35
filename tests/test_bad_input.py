"""Bad input on every endpoint of a real gunicorn server: always a JSON 4xx with ``error`` and
``code``.

(One exception by design: a read given a malformed X-Request-ID ignores it and
answers under an id of its own, so that /health always answers.)

The routes come from the app's own ``url_map`` (so a new route is covered
the day it is added); for POST routes the valid example body of the OpenAPI
operation (liroo/api/openapi.py) is spoiled one way at a time. Requests go
over raw sockets, so that what no HTTP library would send (control
characters, ``..`` in a path, invalid UTF-8, a Content-Length the body never
reaches) reaches the server as written.

Some malformed HTTP never reaches the app: gunicorn refuses it itself (a
control character in a header or the request line, an invalid header name,
a request line or headers over its limits). Its answers are made JSON by
the worker class (liroo/server.py), and are held to the same rules here.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from dataclasses import dataclass, field
from typing import Iterator

import pytest
import requests

from liroo.api.openapi import OPERATIONS
from liroo.settings import Settings
from tests import contract
from tests.servers import GunicornServer, wait_for

MAX_BODY = 64 * 1024  # LIROO_MAX_BODY_BYTES of the server under test
MAX_CHARS = 20_000  # LIROO_MAX_INPUT_CHARS (the default)
MAX_LONG_CHARS = 50_000  # LIROO_MAX_LONG_TEXT_CHARS: /generate_tts's text
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
HOSTILE_IDS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "a" * 129,
    "a" * 5000,
    "short",
    "",
    "abc def ghi",
    "abc;rm -rf /",
    "ééééééééé",
    "<script>x</script>",
]
# Raw bytes gunicorn itself refuses before the app sees them (answered as JSON by liroo/server.py).
HOSTILE_HEADER_BYTES = [b"abc\x01defghi", b"abc\x00defghi", b"abc\x1bdefghi", b"abc\x7fdefghi"]


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Case:
    name: str
    method: str
    target: bytes  # the raw request target
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    statuses: tuple[int, ...] = (400,)
    code: str | None = None
    ignored_id: str | None = None


# --- raw HTTP ---------------------------------------------------------------------------------


def exchange(
    server: GunicornServer,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: int | None = None,
    timeout: float = 30,
) -> Answer:
    """Send one request exactly as given and read the answer (the body may stop short of its
    length)."""
    head = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
    ]
    head += [name + b": " + value for name, value in headers]
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    if content_length is not None or (body and not chunked):
        head.append(
            b"Content-Length: "
            + str(len(body) if content_length is None else content_length).encode()
        )
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.headers, response.read())


JSON = (b"Content-Type", b"application/json")


def dumps(value) -> bytes:
    return json.dumps(value).encode()


# --- the table ----------------------------------------------------------------------------------


def routes(app) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, rule, argument names) for every route the app serves."""
    return sorted(
        (method, rule.rule, tuple(rule.arguments))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - SKIPPED_METHODS
    )


def concrete(rule: str, value: str = "abcdefgh12345678") -> bytes:
    """The rule with every <converter:arg> replaced by ``value``."""
    return re.sub(r"<[^>]+>", value, rule).encode("latin-1")


def main_text_fields(model, example: dict) -> list[str]:
    """The fields a request cannot do without: the required ones, or the mode's (``/process``)."""
    required = [name for name, f in model.model_fields.items() if f.is_required()]
    instance = model.model_validate(example, context={"settings": Settings()})
    mode_field = getattr(instance, "required_field", None)
    return required + ([mode_field] if mode_field and mode_field not in required else [])


def body_cases(method: str, rule: str) -> Iterator[Case]:
    """A valid body spoiled one way at a time (POST routes)."""
    target = concrete(rule)
    op = OPERATIONS.get((method, rule))
    example = op.example if op and op.example else {"text": "Plants make food from light."}
    good = dumps(example)

    def sent(name, body, statuses=(400,), code=None, headers=(JSON,)) -> Case:
        return Case(name, method, target, list(headers), body, statuses, code)

    def with_field(name, value) -> bytes:
        return dumps({**example, name: value})

    for name, body in (
        ("malformed JSON", b'{"text": "unfinished'),
        ("empty body", b""),
        ("JSON array", dumps([example])),
        ("JSON string", dumps("just text")),
        ("invalid UTF-8", b'{"text": "\xff\xfe\xfd"}'),
        ("JSON nested 5,000 deep", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("JSON array nested 50,000 deep", b"[" * 50_000),
    ):
        yield sent(name, body, code="invalid_json")
    for name, headers, body in (
        ("text/plain", [(b"Content-Type", b"text/plain")], good),
        ("form body", [(b"Content-Type", b"application/x-www-form-urlencoded")], b"text=hello"),
        ("no content type", [], good),
    ):
        yield sent(name, body, (415,), "unsupported_media_type", headers)
    chunked = (JSON, (b"Transfer-Encoding", b"chunked"))
    too_big = MAX_BODY + 10
    yield sent(
        "body over LIROO_MAX_BODY_BYTES",
        with_field("user_token", "x" * MAX_BODY),
        (413,),
        "payload_too_large",
    )
    yield sent(
        "chunked body over LIROO_MAX_BODY_BYTES",
        b"%x\r\n%s\r\n0\r\n\r\n" % (too_big, b"x" * too_big),
        (413,),
        "payload_too_large",
        chunked,
    )
    yield sent("malformed chunk", b"zz\r\n{}\r\n0\r\n\r\n", code="unreadable_body", headers=chunked)
    yield sent(
        "compressed chunked body",
        b"2\r\n{}\r\n0\r\n\r\n",
        (501,),
        "not_implemented",
        [JSON, (b"Transfer-Encoding", b"gzip, chunked")],
    )

    model = op.request if op else None
    if model is None:
        return
    for name, value in example.items():
        if isinstance(value, str):  # a lone UTF-16 surrogate (JSON "\ud800") is not text
            surrogate = with_field(name, "\ud800 " + value)
            yield sent(f"{name} with a lone surrogate", surrogate, (422,), "invalid_text")
    for name in example:
        for wrong in (12345, [[1]], {"nested": {"deep": True}}):
            if name == "profile" and isinstance(wrong, dict):
                continue  # an object is the right type there (unknown keys are ignored)
            yield sent(f"{name}={wrong!r}", with_field(name, wrong), (422,), "invalid_field")
    for name in main_text_fields(model, example):
        rest = {k: v for k, v in example.items() if k != name}
        yield sent(f"no {name}", dumps(rest), code="missing_field")
        yield sent(f"null {name}", dumps({**rest, name: None}), (400, 422))
        for blank in ("", "   \n\t "):
            yield sent(f"blank {name}", with_field(name, blank), (422,), "empty_text")
        # nothing a reader could read: zero-width characters, NULs, emoji alone
        for invisible in (
            "\u200b\u200c\u2060",
            "\x00\x00\x00",
            "\U0001f389\U0001f680",
            "\u200b\x00\u2728",
        ):
            yield sent(
                f"{name} of {invisible!r}", with_field(name, invisible), (422,), "empty_text"
            )
        limit = MAX_LONG_CHARS if rule == "/generate_tts" else MAX_CHARS
        oversized = with_field(name, "x" * (limit + 1))
        yield sent(f"oversized {name}", oversized, (413,), "text_too_long")
    fields = model.model_fields
    for name, value, code in (
        ("level", "expert", "unknown_level"),
        ("image_style", "Cubism", "unknown_style"),
        ("voice", "robot", "unknown_voice"),
        ("output_format", "poster", "unknown_output_format"),
        ("aspect_ratio", "7:7", "invalid_field"),
    ):
        if name in fields:
            yield sent(f"{name}={value}", with_field(name, value), (422,), code)
    if "request_id" in fields:
        for hostile in HOSTILE_IDS:
            yield sent(  # as the header
                f"request_id={hostile[:20]!r}",
                with_field("request_id", hostile),
                code="invalid_request_id",
            )
    yield sent("unknown fields only", dumps({"surprise": True}), (400,), "missing_field")


def header_cases(method: str, rule: str) -> Iterator[Case]:
    """Hostile X-Request-ID headers, on every route (the body, if any, is valid)."""
    target = concrete(rule)
    op = OPERATIONS.get((method, rule))
    body = dumps(op.example) if method == "POST" and op and op.example else b""
    headers = [JSON] if body else []
    for hostile in HOSTILE_IDS:
        if not hostile:
            continue
        name, sent = (
            f"X-Request-ID {hostile[:20]!r}",
            headers + [(b"X-Request-ID", hostile.encode("utf-8"))],
        )
        if method == "GET":  # reads (/health above all) answer anyway, under an id of their own
            yield Case(name, method, target, sent, body, ignored_id=hostile)
        else:  # a generation's id names its job: a bad one is refused
            yield Case(name, method, target, sent, body, code="invalid_request_id")
    for raw in HOSTILE_HEADER_BYTES:
        yield Case(
            f"X-Request-ID {raw!r}",
            method,
            target,
            headers + [(b"X-Request-ID", raw)],
            body,
            code="bad_request",
        )
    yield Case(
        "X-Request-ID of 10 kB",
        method,
        target,
        headers + [(b"X-Request-ID", b"a" * 10_000)],
        body,
        (431,),
        "headers_too_large",
    )
    yield Case(
        "invalid header name",
        method,
        target,
        headers + [(b"Bad Header", b"x")],
        body,
        code="bad_request",
    )


def path_cases(method: str, rule: str, arguments: tuple[str, ...]) -> Iterator[Case]:
    """Hostile ids in the path (routes with a <request_id> or <key>), sent raw."""
    if not arguments:
        return
    statuses = (400, 404)
    for hostile in [
        b"..%2F..%2Fetc%2Fpasswd",
        b"../../etc/passwd",
        b"%2e%2e%2f%2e%2e%2fetc",
        b"a" * 200,
        b"abc%00defghijk",
        b"abc%01defghijk",
        b"%ff%fe%fdabcdefgh",
        b"..",
        b"x" * 3000,
        b"abc%20def%20ghi",
        b"etc%5Cpasswd%5Cabcd",
    ]:
        yield Case(
            f"path {hostile[:24]!r}",
            method,
            concrete(rule, hostile.decode()).replace(b" ", b"%20"),
            statuses=statuses,
        )
    yield Case(
        "path with a control character",
        method,
        concrete(rule, "abc\x01defghijk"),
        code="bad_request",
    )
    yield Case(
        "path of 10 kB", method, concrete(rule, "a" * 10_000), statuses=(414,), code="uri_too_long"
    )


def method_cases(method: str, rule: str, allowed: set[str]) -> Iterator[Case]:
    for other in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        if other not in allowed:
            yield Case(
                f"{other} instead of {method}",
                other,
                concrete(rule),
                statuses=(405,),
                code="method_not_allowed",
            )


def all_cases(app) -> list[tuple[str, Case]]:
    table = routes(app)
    allowed = {}
    for method, rule, _ in table:
        allowed.setdefault(rule, set()).add(method)
    cases = []
    for method, rule, arguments in table:
        where = f"{method} {rule}"
        if method == "POST":
            cases += [(where, case) for case in body_cases(method, rule)]
        cases += [(where, case) for case in header_cases(method, rule)]
        cases += [(where, case) for case in path_cases(method, rule, arguments)]
    for rule, methods in allowed.items():
        cases += [(rule, case) for case in method_cases(next(iter(sorted(methods))), rule, methods)]
    cases += [
        (
            "unknown route",
            Case("unknown route", "GET", b"/no/such/route", statuses=(404,), code="not_found"),
        )
    ]
    return cases


# --- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(offline_app):
    return offline_app


@pytest.fixture(scope="module")
def server():
    with GunicornServer({"LIROO_MAX_BODY_BYTES": str(MAX_BODY)}) as srv:
        yield srv


def check(answer: Answer, case: Case) -> str | None:
    """Why ``answer`` breaks the rules for ``case``, or None."""
    if case.ignored_id is not None:
        echoed = answer.headers.get("X-Request-ID", "")
        if answer.status >= 500:
            return f"status {answer.status}: {answer.body[:200]!r}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,128}", echoed) or echoed == case.ignored_id:
            return f"the bad id was not replaced: X-Request-ID {echoed!r}"
        return None
    if answer.status not in case.statuses:
        return f"status {answer.status}, expected {case.statuses}: {answer.body[:200]!r}"
    if answer.headers.get_content_type() != "application/json":
        return f"content type {answer.headers.get('Content-Type')}: {answer.body[:200]!r}"
    try:
        body = contract.decode_error(answer.json())
    except (ValueError, AssertionError) as exc:
        return f"not a JSON error ({exc}): {answer.body[:200]!r}"
    if case.code and body["code"] != case.code:
        return f"code {body['code']!r}, expected {case.code!r}"
    return None


def test_every_endpoint_answers_bad_input_with_a_json_4xx(app, server):
    cases = all_cases(app)
    covered = {where for where, _ in cases}
    assert {f"{m} {r}" for m, r, _ in routes(app)} <= covered  # every route has rows
    failures = []
    for where, case in cases:
        answer = exchange(server, case.method, case.target, case.headers, case.body)
        problem = check(answer, case)
        if problem:
            failures.append(f"{where} [{case.name}]: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} answers break the rules:\n" + "\n".join(
        failures
    )
    log = server.log()
    assert "Traceback (most recent call last)" not in log and "unhandled error" not in log


def test_an_oversized_body_is_refused_before_it_is_read(app, server):
    """A Content-Length far over the limit, and only the first kilobyte sent: the 413 comes without
    waiting for the rest (which never comes: waiting for it would hit the socket timeout)."""
    posts = [rule for method, rule, _ in routes(app) if method == "POST"]
    assert posts
    for path in posts:
        answer = exchange(
            server,
            "POST",
            path.encode(),
            [JSON],
            b'{"text": "' + b"x" * 1024,
            content_length=200 * 1024 * 1024,
            timeout=20,
        )
        assert answer.status == 413, path
        assert contract.decode_error(answer.json())["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "line",
    [
        b"GET /health?key=SECRETQUERY1 HTTP/1.1 x",
        b"GET /health?key=SECRETQUERY1",
        b"GET /health?key=SECRETQUERY1\x01 HTTP/1.1",
    ],
    ids=["junk-after-version", "no-version", "control-byte"],
)
def test_a_malformed_request_line_is_refused_without_logging_its_query(server, line):
    """The query string may carry a key: gunicorn's line about the refusal must not quote it."""
    before = len(server.log())  # the server lives for the module: look only at this case's lines
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400, line
        assert contract.decode_error(json.loads(response.read()))["code"] == "bad_request"
    wait_for(
        lambda: "Invalid request from" in server.log()[before:], timeout=10, what="the refusal"
    )
    assert "SECRETQUERY1" not in server.log()


def test_a_range_outside_the_file_is_a_documented_416(server):
    url = requests.post(
        server.url("/generate_image"), json={"prompt": "A lighthouse"}, timeout=60
    ).json()["url"]
    path = url.split(str(server.port), 1)[1].encode()
    answer = exchange(server, "GET", path, [(b"Range", b"bytes=99999999-")])
    assert answer.status == 416
    assert contract.decode_error(answer.json())["code"] == "range_not_satisfiable"


def test_deeply_nested_json_is_one_log_line_not_a_traceback(server):
    before = server.log()
    answer = exchange(server, "POST", b"/generate_image", [JSON], b"[" * 5_000 + b"]" * 5_000)
    assert answer.status == 400 and answer.json()["code"] == "invalid_json"
    new = server.log()[len(before) :]
    assert "nested too deeply" in new and "Traceback" not in new


BAD_TEXT = "\ud800 volcanoes"  # a lone surrogate: not Unicode text
NOT_UNICODE_BODIES = [
    pytest.param("/generate_image", {"prompt": BAD_TEXT}, id="image-prompt"),
    pytest.param(
        "/generate_image", {"prompt": "A lighthouse", "context": BAD_TEXT}, id="image-context"
    ),
    pytest.param(
        "/generate_comic",
        {"text": BAD_TEXT, "level": "beginner", "image_style": "Comic Book"},
        id="comic-text",
    ),
    pytest.param(
        "/generate_story",
        {"text": BAD_TEXT, "level": "moderate", "genre": "fantasy"},
        id="story-text",
    ),
    pytest.param("/generate_lecture", {"text": BAD_TEXT}, id="lecture-text"),
    pytest.param("/generate_tts", {"text": BAD_TEXT, "voice": "narrator"}, id="tts-text"),
    pytest.param("/process", {"input_text": BAD_TEXT, "level": "beginner"}, id="process-text"),
    pytest.param(
        "/process",
        {"input_text": "Volcanoes.", "profile": {"topicsOfInterest": ["rocks", BAD_TEXT]}},
        id="process-interests",
    ),
    pytest.param(
        "/process",
        {"input_text": BAD_TEXT, "output_format": "flashcards"},
        id="process-flashcards",
    ),
    pytest.param(
        "/process", {"input_text": BAD_TEXT, "output_format": "slideshow"}, id="process-slideshow"
    ),
    pytest.param(
        "/process",
        {"dialogue_mode": True, "user_question": BAD_TEXT, "selected_text_snippet": "Volcanoes."},
        id="dialogue-question",
    ),
    pytest.param(
        "/process",
        {
            "dialogue_mode": True,
            "user_question": "Why?",
            "conversation_history": [{"sender": "user", "text": BAD_TEXT}],
        },
        id="dialogue-history",
    ),
    pytest.param(
        "/process",
        {"explain_again_mode": True, "original_paragraph_text": BAD_TEXT},
        id="explain-again",
    ),
]


@pytest.fixture(scope="module")
def gemini_server(module_fake_gemini):
    from tests.fake_gemini import gemini_env

    with GunicornServer(gemini_env(module_fake_gemini)) as server:
        yield server


@pytest.mark.parametrize("path, body", NOT_UNICODE_BODIES)
def test_text_that_is_not_unicode_is_refused_before_any_model_call(
    module_fake_gemini, gemini_server, path, body
):
    """A lone surrogate in any text field, on every generation route and every /process mode,
    through the Gemini provider: 422 `invalid_text`, and the loopback Gemini hears nothing."""
    module_fake_gemini.reset()
    answer = exchange(gemini_server, "POST", path.encode(), [JSON], dumps(body))
    assert answer.status == 422, (path, body, answer.body)
    assert contract.decode_error(answer.json())["code"] == "invalid_text", (path, body)
    assert "Traceback" not in gemini_server.log()
    assert module_fake_gemini.requests() == []
