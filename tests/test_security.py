"""Security against real gunicorn: API keys, the admin token, job owners, rate limits (the
instance's shared count and Redis), the body limit, /media traversal, error bodies and secrets in
logs.

Routes are taken from the app's own url map, so endpoints added later are checked too.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import uuid
from unittest.mock import patch

import pytest
import redis
import requests

from liroo import create_app
from liroo.jobs import LocalJobStore, RedisJobStore
from liroo.ratelimits import InstanceStorage
from liroo.security import KeyRing, read_api_keys
from liroo.settings import Settings, SettingsError
from tests import contract
from tests.helpers.bodies import APP_COMIC
from tests.helpers.http import new_request_id
from tests.servers import ROOT, GunicornServer, wait_for

KEY_A = "key-a-" + uuid.uuid4().hex
KEY_B = "key-b-" + uuid.uuid4().hex  # served from LIROO_API_KEYS_FILE
ADMIN = "admin-" + uuid.uuid4().hex
GENAI = "AIzaTEST-" + uuid.uuid4().hex
WRONG = "wrong-" + uuid.uuid4().hex  # never configured: must never be logged either
REDIS_URL = "redis://127.0.0.1:6379/9"  # a db of its own; only keys this module made are deleted

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}  # every other method a route takes is generation
LEAKS = ("Traceback", 'File "', "RuntimeError", "/work/", "site-packages", "secret/path")


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def check_error(response, status: int, code: str) -> dict:
    """A JSON error with a sentence, the code, the request id of the response, and no leak."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = contract.decode_error(response.json())
    assert body["code"] == code, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return body


def raw_exchange(
    port: int, data: bytes, *chunks: bytes, timeout: float = 15
) -> http.client.HTTPResponse:
    """Write bytes as they are (headers, part of a body) and read the one response that comes back.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    for chunk in chunks:
        sock.sendall(chunk)
    response = http.client.HTTPResponse(sock)
    response.begin()  # waits at most `timeout` for the server's answer
    response.body = response.read()
    sock.close()
    return response


def keys_file(tmp_dir) -> str:
    path = os.path.join(tmp_dir, "api-keys.txt")
    with open(path, "w") as fh:
        fh.write(f"\n{KEY_B}\n\n")
    return path


@pytest.fixture(scope="module")
def routes(offline_app):
    """The app's routes as (path, methods), from a create_app() like production's."""
    return [
        (rule.rule, set(rule.methods), list(rule.arguments))
        for rule in offline_app.url_map.iter_rules()
    ]


@pytest.fixture(scope="module")
def generation_routes(routes):
    """Every route that takes a state-changing method: generation, by the rule the guard applies."""
    found = []
    for path, methods, arguments in routes:
        for method in sorted(methods - SAFE_METHODS):
            url = path
            for name in arguments:
                url = url.replace(f"<{name}>", "x" * 12).replace(f"<path:{name}>", "x" * 12)
            found.append((method, url))
    assert {("POST", "/generate_comic"), ("POST", "/generate_image")} <= set(found)
    return found


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Keys (one from the environment, one from a file), the admin token and a generous rate limit.
    """
    folder = tmp_path_factory.mktemp("keys")
    env = {
        "LIROO_API_KEYS": KEY_A,
        "LIROO_API_KEYS_FILE": keys_file(str(folder)),
        "LIROO_ADMIN_TOKEN": ADMIN,
        "LIROO_RATE_LIMIT": "500 per minute",
    }
    with GunicornServer(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def open_server():
    with GunicornServer() as server:
        yield server


# --- keys: constant-time comparison and configuration
# --------------------------------------------------------


RING_KEYS = ["first-key-0001", "second-key-0002", "third-key-0003"]


@pytest.mark.parametrize(
    "presented, accepted",
    [("first-key-0001", True), ("third-key-0003", True), ("not-a-key", False)],
)
def test_every_configured_key_is_compared_with_compare_digest(presented, accepted):
    ring = KeyRing(RING_KEYS, admin_token="admin-token-0004")
    digests = {hashlib.sha256(k.encode()).digest() for k in RING_KEYS + ["admin-token-0004"]}
    # Observation only: the real compare_digest runs (wraps=), the spy records its calls.
    with patch("liroo.security.hmac.compare_digest", wraps=hmac.compare_digest) as spy:
        caller = ring.identify(presented, presented=True)
    assert caller.authenticated is accepted and caller.admin is False
    assert spy.call_count == len(RING_KEYS) + 1, "every key and the token, even after a match"
    assert {call.args[1] for call in spy.call_args_list} == digests
    assert all(
        call.args[0] == hashlib.sha256(presented.encode()).digest()
        for call in spy.call_args_list
    )


def test_the_admin_token_is_admin_and_no_key_is_the_same_as_an_empty_one():
    ring = KeyRing(RING_KEYS, admin_token="admin-token-0004")
    assert ring.identify("admin-token-0004", presented=True).admin is True
    assert ring.identify(None, presented=False) == ring.identify("", presented=False)


def test_keys_come_from_the_environment_and_the_file(tmp_path):
    path = keys_file(str(tmp_path))
    assert read_api_keys(Settings(api_keys=f" {KEY_A} ,, ", api_keys_file=path)) == [KEY_A, KEY_B]
    with pytest.raises(SettingsError, match="LIROO_API_KEYS_FILE"):
        read_api_keys(Settings(api_keys_file=str(tmp_path / "missing.txt")))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(SettingsError, match="holds no key"):
        read_api_keys(Settings(api_keys_file=str(tmp_path / "empty.txt")))


def refused_start(env: dict) -> str:
    """Run gunicorn with ``env`` until it exits; it must exit with an error. Returns its output."""
    server = GunicornServer(env=env)
    try:
        done = subprocess.run(
            server.command, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.__exit__(None, None, None)
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_server_with_an_unreadable_key_file_or_a_bad_limit_refuses_to_start(tmp_path):
    missing = str(tmp_path / "missing.txt")
    assert f"LIROO_API_KEYS_FILE: cannot read {missing}" in refused_start(
        {"LIROO_API_KEYS_FILE": missing}
    )
    assert "LIROO_RATE_LIMIT: expected e.g. '30 per minute'" in refused_start(
        {"LIROO_RATE_LIMIT": "lots"}
    )


# --- with keys, token and limits: nothing reaches generation or internals without them
# -----------------------


def test_every_generation_route_needs_a_key(secured, generation_routes):
    admin = bearer(ADMIN)
    for method, path in generation_routes:
        attempts = [
            ({}, False),
            ({"X-API-Key": WRONG}, True),
            (bearer(WRONG), True),
            ({"Authorization": "Basic " + "a2V5LWE6cGFzcw=="}, True),  # another scheme is not a key
            ({"Authorization": f"Token {KEY_A}"}, True),
            ({"Authorization": "Bearer "}, True),
        ]
        for headers, presented in attempts:
            request_id = new_request_id("noauth")
            response = requests.request(
                method,
                secured.url(path),
                json={"text": "Plants make food."},
                headers={**headers, "X-Request-ID": request_id},
                timeout=30,
            )
            check_error(response, 401, "unauthorized")
            challenge = response.headers["WWW-Authenticate"]
            assert (
                challenge.startswith("Bearer")
                and ('error="invalid_token"' in challenge) is presented
            )
            # Nothing was claimed, so nothing ran.
            progress = requests.get(
                secured.url(f"/progress/{request_id}"), headers=admin, timeout=10
            )
            check_error(progress, 404, "unknown_request")
        for headers in (bearer(KEY_A), {"X-API-Key": KEY_B}, {"authorization": f"bearer {KEY_A}"}):
            response = requests.request(
                method, secured.url(path), json={}, headers=headers, timeout=60
            )
            assert response.status_code != 401, (method, path, response.text)


@pytest.mark.parametrize(
    "headers", [bearer(KEY_A), {"X-API-Key": KEY_B}], ids=["bearer", "x-api-key"]
)
def test_a_valid_key_generates(secured, headers):
    response = requests.post(
        secured.url("/generate_image"),
        json={"prompt": "a lighthouse at dusk"},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    contract.decode_image(response.json())


@pytest.mark.parametrize("path", ["/memory", "/metrics"])
def test_internals_need_the_admin_token(secured, path):
    missing = requests.get(secured.url(path), timeout=10)
    check_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for headers in (
        bearer(KEY_A),
        {"X-API-Key": KEY_B},
        bearer(WRONG),
        {"X-API-Key": ADMIN + "x"},
    ):
        check_error(
            requests.get(secured.url(path), headers=headers, timeout=10), 403, "forbidden"
        )
    for headers in (bearer(ADMIN), {"X-API-Key": ADMIN}):
        response = requests.get(secured.url(path), headers=headers, timeout=10)
        assert response.status_code == 200, response.text


def test_health_needs_no_token(secured):
    health = requests.get(secured.url("/health"), timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy"


def test_jobs_are_read_only_by_their_caller_or_the_admin(secured):
    request_id = new_request_id("owned")
    body = {"prompt": "a red kite over hills"}
    first = requests.post(
        secured.url("/generate_image"),
        json=body,
        headers={**bearer(KEY_A), "X-Request-ID": request_id},
        timeout=60,
    )
    assert first.status_code == 200, first.text
    for path in (f"/progress/{request_id}", f"/jobs/{request_id}"):
        for headers in (bearer(KEY_A), {"X-API-Key": KEY_A}, bearer(ADMIN)):
            response = requests.get(secured.url(path), headers=headers, timeout=10)
            assert response.status_code == 200 and response.json()["request_id"] == request_id
        check_error(requests.get(secured.url(path), timeout=10), 401, "unauthorized")
        check_error(
            requests.get(secured.url(path), headers=bearer(KEY_B), timeout=10), 403, "forbidden"
        )
        check_error(
            requests.get(secured.url(path), headers=bearer(WRONG), timeout=10), 403, "forbidden"
        )
    # Another caller's retry with the same id is neither waited on nor replayed.
    other = requests.post(
        secured.url("/generate_image"),
        json=body,
        headers={**bearer(KEY_B), "X-Request-ID": request_id},
        timeout=60,
    )
    check_error(other, 422, "idempotency_conflict")
    again = requests.post(
        secured.url("/generate_image"),
        json=body,
        headers={**bearer(KEY_A), "X-Request-ID": request_id},
        timeout=60,
    )
    assert again.status_code == 200 and again.headers.get("X-Idempotent-Replay") == "true"


@pytest.mark.parametrize("store_kind", ["local", "redis"])
def test_both_job_stores_record_the_owner(store_kind, tmp_path):
    store = (
        LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)
        if store_kind == "local"
        else RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)
    )
    owned, unowned = new_request_id("own"), new_request_id("free")
    try:
        assert store.claim(owned, "/generate_image", "fp", owner="caller-a").outcome == "new"
        assert store.get(owned).owner == "caller-a"
        assert store.claim(owned, "/generate_image", "fp", owner="caller-b").outcome == "conflict"
        assert store.claim(owned, "/generate_image", "fp").outcome == "conflict"
        assert store.claim(owned, "/generate_image", "fp", owner="caller-a").outcome == "running"
        assert store.claim(unowned, "/generate_image", "fp").outcome == "new"
        assert store.get(unowned).owner is None
        assert store.claim(unowned, "/generate_image", "fp", owner="caller-a").outcome == "conflict"
    finally:
        if store_kind == "redis":
            redis.Redis.from_url(REDIS_URL).delete(
                *(RedisJobStore.PREFIX + r for r in (owned, unowned))
            )


# --- without configuration: the app's requests work unchanged
# -----------------------------------------------


def test_without_configuration_the_apps_requests_work_unchanged(open_server):
    request_id = new_request_id("app")
    response = requests.post(
        open_server.url("/generate_comic"),
        json=APP_COMIC,
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert "WWW-Authenticate" not in response.headers
    body = contract.decode_comic(response.json())
    assert body["success"] is True and body["request_id"] == request_id
    # Without keys, the request id is the capability: anyone holding it may poll.
    progress = requests.get(open_server.url(f"/progress/{request_id}"), timeout=10)
    assert contract.decode_progress(progress.json())["status"] == "succeeded"
    assert requests.get(open_server.url(f"/jobs/{request_id}"), timeout=10).status_code == 200
    picture = requests.get(body["comic"]["panel_layout"][0]["image_url"], timeout=10)
    health = requests.get(open_server.url("/health"), timeout=10)
    memory = requests.get(open_server.url("/memory"), timeout=10)
    metrics = requests.get(open_server.url("/metrics"), timeout=10)
    missing = requests.get(open_server.url("/no/such/thing"), timeout=10)
    for answer in (response, progress, picture, health, memory, metrics, missing):
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.url
    assert (
        picture.status_code
        == health.status_code
        == memory.status_code
        == metrics.status_code
        == 200
    )
    check_error(missing, 404, "not_found")


# --- rate limits
# ----------------------------------------------------------------------------------------------


def test_the_rate_limit_is_one_budget_per_key_with_retry_after(start_server, tmp_path):
    server = start_server(
        {
            "LIROO_API_KEYS": f"{KEY_A},{KEY_B}",
            "LIROO_RATE_LIMIT": "3 per minute",
            "WEB_CONCURRENCY": "1",
        }
    )
    image = {"prompt": "a lighthouse at dusk"}
    assert requests.post(
        server.url("/generate_image"), json=image, headers=bearer(KEY_A), timeout=60
    ).ok
    # Every generation route draws on the same budget, refused bodies included.
    refused = requests.post(
        server.url("/generate_comic"), json={}, headers=bearer(KEY_A), timeout=60
    )
    assert refused.status_code == 400
    assert requests.post(
        server.url("/generate_image"), json=image, headers={"X-API-Key": KEY_A}, timeout=60
    ).ok
    limited = requests.post(
        server.url("/generate_image"), json=image, headers=bearer(KEY_A), timeout=60
    )
    body = check_error(limited, 429, "rate_limited")
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 61 and body["retry_after_s"] == retry_after
    check_error(
        requests.post(
            server.url("/generate_comic"), json=APP_COMIC, headers=bearer(KEY_A), timeout=60
        ),
        429,
        "rate_limited",
    )
    # Another key has its own budget; callers without a key are refused before spending any.
    assert requests.post(
        server.url("/generate_image"), json=image, headers=bearer(KEY_B), timeout=60
    ).ok
    check_error(
        requests.post(server.url("/generate_image"), json=image, timeout=60), 401, "unauthorized"
    )
    # Only generation is limited.
    for _ in range(5):
        assert requests.get(server.url("/health"), timeout=10).status_code == 200
        unknown = server.url("/progress/" + new_request_id("sec"))
        assert requests.get(unknown, timeout=10).status_code == 404


@pytest.mark.parametrize("trusted", [0, 1])
def test_forwarded_headers_are_believed_only_from_the_configured_proxies(start_server, trusted):
    """X-Forwarded-For (the rate limit's client address) and X-Forwarded-Proto (the scheme of the
    URLs made) count only through LIROO_TRUSTED_PROXIES hops (Cloud Run: 1); a SCRIPT_NAME header
    counts from nobody (it used to re-root the app, or answer 500 on every route)."""
    server = start_server(
        {
            "LIROO_RATE_LIMIT": "2 per minute",
            "LIROO_TRUSTED_PROXIES": str(trusted),
            "WEB_CONCURRENCY": "1",
        }
    )

    def post(forwarded_for: str) -> requests.Response:
        return requests.post(
            server.url("/generate_image"),
            json={"prompt": "a small boat"},
            headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
            timeout=60,
        )

    for script_name, path in (("/nope", "/health"), ("/app", "/app/health")):
        headers = {"SCRIPT_NAME": script_name, "X-Forwarded-Prefix": script_name}
        response = requests.get(server.url(path), headers=headers, timeout=10)
        if path == "/health":
            assert response.status_code == 200, response.text
        else:
            check_error(response, 404, "not_found")
    first = post("203.0.113.1")
    assert first.ok, first.text
    scheme = "https" if trusted else "http"
    assert first.json()["url"].startswith(f"{scheme}://127.0.0.1:{server.port}/media/")
    assert post("203.0.113.1").ok
    check_error(post("203.0.113.1"), 429, "rate_limited")
    if trusted:
        assert post("203.0.113.2").ok  # another client, as our proxy reports it
        # a forged first hop changes nothing
        check_error(post("198.51.100.9, 203.0.113.1"), 429, "rate_limited")
    else:
        # the header is ignored: same peer, same budget
        check_error(post("203.0.113.2"), 429, "rate_limited")


def test_the_workers_of_one_instance_share_one_count(start_server):
    """Two workers, "3 per minute", 8 requests at once: exactly 3 get through (per-worker memory let
    5 through).

    The kernel decides which worker accepts each connection; the JSON access log says which one
    did (its pid, by request id). A burst that one worker took alone proves nothing, so bursts
    are sent, each under a fresh API key (a fresh count), until one is shared by both workers.
    """
    keys = [f"burst-key-{n}-{uuid.uuid4().hex}" for n in range(8)]
    server = start_server(
        {
            "LIROO_RATE_LIMIT": "3 per minute",
            "WEB_CONCURRENCY": "2",
            "LIROO_LOG_FORMAT": "json",
            "LIROO_API_KEYS": ",".join(keys),
        }
    )

    # a fresh connection each, so both workers may take a share of the burst
    def post(key, request_id):
        return requests.post(
            server.url("/generate_image"),
            json={"prompt": "a small boat"},
            timeout=60,
            headers={"Connection": "close", "X-Request-ID": request_id, **bearer(key)},
        )

    def served_by(request_ids) -> set[int]:
        pids = set()
        for line in server.log().splitlines():
            if line.startswith("{") and '"httpRequest"' in line:
                entry = json.loads(line)
                if entry.get("request_id") in request_ids:
                    pids.add(entry["pid"])
        return pids

    for key in keys:
        ids = [new_request_id("burst") for _ in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda request_id, key=key: post(key, request_id), ids))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 3 + [429] * 5, statuses
        for refused in (r for r in responses if r.status_code == 429):
            check_error(refused, 429, "rate_limited")
            assert int(refused.headers["Retry-After"]) >= 1
        pids = wait_for(
            lambda ids=ids: len(served_by(set(ids))) >= 1 and served_by(set(ids)),
            10,
            what="access lines",
        )
        if len(pids) == 2:
            return  # both workers answered this burst, and still only 3 got through
    pytest.fail("no burst was shared by both workers; the kernel gave every one to a single worker")


def test_the_instance_count_is_one_file_every_forked_worker_shares():
    """Made in gunicorn's master before the fork, as the preloaded app makes it: a child's hits
    count for all."""
    from limits import parse_many
    from limits.strategies import MovingWindowRateLimiter

    storage = InstanceStorage(InstanceStorage.uri_in_temp_dir())
    limiter = MovingWindowRateLimiter(storage)
    item = parse_many("2 per minute")[0]
    assert limiter.hit(item, "someone")
    pid = os.fork()
    if pid == 0:  # the "other worker": takes the last hit
        os._exit(0 if limiter.hit(item, "someone") else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not limiter.hit(item, "someone"), "the other process's hit counts here"
    assert limiter.get_window_stats(item, "someone").remaining == 0
    assert limiter.hit(item, "someone else")


def test_the_rate_limit_is_shared_through_redis(start_server):
    key = "key-redis-" + uuid.uuid4().hex  # a bucket no other run shares
    env = {
        "LIROO_API_KEYS": key,
        "LIROO_RATE_LIMIT": "4 per minute",
        "REDIS_URL": REDIS_URL,
        "WEB_CONCURRENCY": "2",
    }
    first, second = start_server(env), start_server(env)
    client = redis.Redis.from_url(REDIS_URL)
    ids = []
    try:
        statuses = []
        for server in (first, second, first, second, first, second):
            ids.append(new_request_id("redis"))
            response = requests.post(
                server.url("/generate_image"),
                json={"prompt": "a quiet harbour"},
                headers={**bearer(key), "X-Request-ID": ids[-1], "Connection": "close"},
                timeout=60,
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                check_error(response, 429, "rate_limited")
                assert int(response.headers["Retry-After"]) >= 1
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert list(client.scan_iter(match=f"*{key_id(key)}*")), "the counts live in Redis"
    finally:
        mine = list(client.scan_iter(match=f"*{key_id(key)}*")) + [
            RedisJobStore.PREFIX + i for i in ids
        ]
        client.delete(*mine)


# --- body limit
# -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_body_server():
    with GunicornServer(env={"LIROO_MAX_BODY_BYTES": "4096", "LIROO_API_KEYS": KEY_A}) as server:
        yield server


def _post_head(path: str, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        *headers,
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def test_a_body_over_the_limit_is_refused_before_it_is_read(small_body_server):
    port = small_body_server.port
    # 50 MB announced, 64 bytes sent: the answer comes without the rest.
    response = raw_exchange(
        port,
        _post_head("/generate_image", f"Authorization: Bearer {KEY_A}", "Content-Length: 50000000"),
        b'{"prompt": "' + b"a" * 52,
    )
    assert response.status == 413
    body = contract.decode_error(json.loads(response.body))
    assert body["code"] == "payload_too_large" and body["request_id"] == response.getheader(
        "X-Request-ID"
    )
    # Without a key the request is refused even earlier, before the limit is looked at.
    response = raw_exchange(port, _post_head("/generate_image", "Content-Length: 50000000"), b"{")
    assert response.status == 401 and json.loads(response.body)["code"] == "unauthorized"


def test_a_chunked_body_over_the_limit_is_refused_too(small_body_server):
    head = _post_head(
        "/generate_image", f"Authorization: Bearer {KEY_A}", "Transfer-Encoding: chunked"
    )
    chunk = b" " * 3000
    # 6000 bytes in two chunks and no final chunk: the server answers without waiting for the end.
    response = raw_exchange(
        small_body_server.port,
        head,
        b"%x\r\n%s\r\n" % (len(chunk), chunk),
        b"%x\r\n%s\r\n" % (len(chunk), chunk),
    )
    assert response.status == 413
    assert contract.decode_error(json.loads(response.body))["code"] == "payload_too_large"
    # A chunked body within the limit is read as usual.
    small = json.dumps({"prompt": "a small boat"}).encode()
    ok = requests.post(
        small_body_server.url("/generate_image"),
        data=iter([small[:10], small[10:]]),
        headers={**bearer(KEY_A), "Content-Type": "application/json"},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text
    assert ok.request.headers.get("Transfer-Encoding") == "chunked"


# --- /media: only what the storage wrote
# --------------------------------------------------------------------

TRAVERSALS = [
    "/media/../secret.jpg",
    "/media/images/../../secret.jpg",
    "/media/..%2Fsecret.jpg",
    "/media/..%2fsecret.jpg",
    "/media/%2e%2e/secret.jpg",
    "/media/%2E%2E%2Fsecret.jpg",
    "/media/.%2e/secret.jpg",
    "/media/images%2F..%2F..%2Fsecret.jpg",
    "/media/..%5Csecret.jpg",
    "/media/..%5csecret.jpg",
    "/media/images/..\\..\\secret.jpg",
    "/media/..%252Fsecret.jpg",
    "/media/%252e%252e%252fsecret.jpg",
    "/media/%c0%ae%c0%ae/secret.jpg",
    "/media//etc/passwd",
    "/media/%2Fetc%2Fpasswd",
    "/media/%2fetc/passwd",
    "/media/C:%5Csecret.jpg",
    "/media/images/ok.jpg%00.png",
    "/media/images/ok.jpg%00",
    "/media/%00",
    "/media/images/evil.jpg",
    "/media/up/secret.jpg",
    "/media/images/./ok.jpg",
    "/media/.hidden.jpg",
    "/media/~/secret.jpg",
    "//media/../secret.jpg",
]


@pytest.fixture(scope="module")
def planted_media(open_server):
    """The media folder with a real picture, a hidden file, and links out to a secret beside it."""
    media = open_server.media_dir
    os.makedirs(os.path.join(media, "images"), exist_ok=True)
    with open(os.path.join(media, "images", "ok.jpg"), "wb") as fh:
        fh.write(b"\xff\xd8real picture")
    with open(os.path.join(media, ".hidden.jpg"), "wb") as fh:
        fh.write(b"TOP-SECRET hidden")
    secret = os.path.join(os.path.dirname(media), "secret.jpg")  # beside the media folder
    with open(secret, "wb") as fh:
        fh.write(b"TOP-SECRET outside")
    os.symlink(secret, os.path.join(media, "images", "evil.jpg"))  # a planted file link
    os.symlink(os.path.dirname(media), os.path.join(media, "up"))  # a planted folder link
    return open_server


def get_raw(server, path: str):
    # http.client sends the path byte for byte; requests/urllib3 would normalise dot segments.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_media_serves_files_inside_its_folder(planted_media):
    response, body = get_raw(planted_media, "/media/images/ok.jpg")
    assert response.status == 200 and body == b"\xff\xd8real picture"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("Content-Type") == "image/jpeg"


@pytest.mark.parametrize("path", TRAVERSALS)
def test_media_serves_only_files_inside_its_folder(planted_media, path):
    response, body = get_raw(planted_media, path)
    assert response.status == 404, (path, response.status, body)
    assert b"TOP-SECRET" not in body and b"real picture" not in body, path
    error = contract.decode_error(json.loads(body))
    assert error["code"] == "not_found" and error["request_id"], path
    assert response.getheader("X-Content-Type-Options") == "nosniff"


# --- errors and logs
# --------------------------------------------------------------------------------------------


def app_with_a_failing_route():
    """The production app plus routes that fail with details (a path, the Gemini key) in the
    exception: gunicorn loads it as ``tests.test_security:app_with_a_failing_route()``."""
    from flask import Blueprint

    app = create_app()
    failing = Blueprint("failing", __name__)

    def fail():
        raise RuntimeError(
            f"cannot open /work/secret/path.txt with key {os.environ.get('GENAI_API_KEY')}"
        )

    failing.get("/test/boom")(fail)
    failing.post("/test/boom", endpoint="boom_post")(fail)
    app.register_blueprint(failing)
    return app


FAILING_APP = [
    sys.executable,
    "-m",
    "gunicorn",
    "-c",
    "gunicorn.conf.py",
    "tests.test_security:app_with_a_failing_route()",
]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_errors_leak_nothing_and_secrets_never_reach_the_logs(start_server, tmp_path, log_format):
    env = {
        "LIROO_API_KEYS": KEY_A,
        "LIROO_API_KEYS_FILE": keys_file(str(tmp_path)),
        "LIROO_ADMIN_TOKEN": ADMIN,
        "GENAI_API_KEY": GENAI,
        "LIROO_PROVIDER": "offline",
        "LIROO_LOG_LEVEL": "DEBUG",
        "LIROO_LOG_FORMAT": log_format,
        "LIROO_RATE_LIMIT": "100 per minute",
    }
    server = start_server(env, command=FAILING_APP)
    url = server.url

    crashed = requests.get(url("/test/boom"), timeout=10)
    body = check_error(crashed, 500, "internal_error")
    assert set(body) == {"error", "code", "request_id"}
    for leak in LEAKS + (GENAI,):
        assert leak not in crashed.text
    crashed_post = requests.post(
        url("/test/boom"), json={"text": GENAI}, headers=bearer(KEY_A), timeout=10
    )
    check_error(crashed_post, 500, "internal_error")

    # Secrets in every place a client can put them, right and wrong.
    sent = [
        requests.post(
            url("/generate_image"),
            json={"prompt": f"a fox {GENAI}"},
            headers=bearer(KEY_A),
            timeout=60,
        ),
        requests.post(
            url("/generate_image"),
            json={"prompt": "a fox"},
            headers={"X-API-Key": KEY_B},
            timeout=60,
        ),
        requests.post(
            url("/generate_image"), json={"prompt": "a fox"}, headers=bearer(WRONG), timeout=60
        ),
        requests.post(url(f"/generate_image?key={KEY_A}&token={ADMIN}"), json={}, timeout=60),
        requests.get(url("/metrics"), headers=bearer(ADMIN), timeout=10),
        requests.get(url("/memory"), headers={"X-API-Key": WRONG}, timeout=10),
        requests.get(
            url(f"/progress/{new_request_id('sec')}"),
            headers={"X-API-Key": ADMIN, "X-Goog-Api-Key": GENAI},
            timeout=10,
        ),
        requests.get(url(f"/no/such/{KEY_B}"), timeout=10),
    ]
    assert [r.status_code for r in sent] == [200, 200, 401, 401, 200, 403, 404, 404]
    # Each worker writes its own access lines: one may land after a later request's line.
    ids = [request.headers["X-Request-ID"] for request in sent]
    wait_for(lambda: all(i in server.log() for i in ids), timeout=20, what="every access line")
    log = server.log()
    # The failure is in the log for the operator, with its request id and its traceback, the key
    # masked.
    assert "Traceback" in log and "cannot open /work/secret/path.txt" in log and "[redacted]" in log
    assert crashed.headers["X-Request-ID"] in log
    for secret in (KEY_A, KEY_B, ADMIN, GENAI, WRONG):
        assert secret not in log, f"a secret reached the log ({log_format})"
    assert "Authorization" not in log and "Bearer" not in log


def test_every_error_is_json_with_a_request_id(secured, routes):
    """Wrong methods, bad bodies, bad ids and unknown paths on every route: JSON, a code, an id, no
    leak."""
    responses = []
    for path, methods, arguments in routes:
        url = path
        for name in arguments:
            url = url.replace(f"<{name}>", "bad id!").replace(f"<path:{name}>", "..%2Fx")
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            headers = bearer(ADMIN) if method in SAFE_METHODS else {}
            responses.append(
                requests.request(method, secured.url(url), headers=headers, timeout=30)
            )
        if methods - SAFE_METHODS:
            for headers, data in (
                (bearer(KEY_A), b"{not json"),
                (bearer(KEY_A), b"[1]"),
                ({**bearer(KEY_A), "Content-Type": "text/plain"}, b"hello"),
                ({**bearer(KEY_A), "X-Request-ID": "../../etc"}, b"{}"),
            ):
                responses.append(
                    requests.post(
                        secured.url(url),
                        data=data,
                        headers={"Content-Type": "application/json", **headers},
                        timeout=30,
                    )
                )
    responses.append(requests.get(secured.url("/%ff%fe"), timeout=10))
    errors = [r for r in responses if r.status_code >= 400]
    assert len(errors) > len(routes), "the sweep must produce errors"
    assert {r.status_code for r in errors} >= {400, 401, 404, 405, 415}
    for response in errors:
        check_error(response, response.status_code, response.json()["code"])
        for leak in LEAKS:
            assert leak not in response.text, (response.url, response.text)
