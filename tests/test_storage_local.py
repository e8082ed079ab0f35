"""Local storage and the /media route: unit checks, then a real gunicorn serving the files."""
from __future__ import annotations

import http.client
import json
import os
import re

import pytest
import requests
from prometheus_client import REGISTRY

from liroo import create_app
from liroo.settings import Settings
from liroo.storage import (
    IMMUTABLE_CACHE,
    STORAGE_HEALTH,
    LocalStorage,
    StorageError,
    cached_url,
    image_cache_key,
    image_cache_object,
    make_storage,
    media_key,
)
from tests.servers import GunicornServer

JPEG = b"\xff\xd8\xff\xe0" + b"not really a jpeg, but bytes are bytes" + b"\xff\xd9"


# --- the storage ---------------------------------------------------------------------


def test_put_exists_url(tmp_path):
    storage = LocalStorage(str(tmp_path / "media"))
    key = media_key("images", "jpg")
    assert not storage.exists(key)
    url = storage.put(key, JPEG, "image/jpeg", IMMUTABLE_CACHE, public_base="http://10.0.0.7:8080/")
    assert url == f"http://10.0.0.7:8080/media/{key}"
    assert storage.exists(key)
    assert (tmp_path / "media" / key).read_bytes() == JPEG
    assert storage.url(key, "https://example.test") == f"https://example.test/media/{key}"


def test_base_url_wins_over_the_request_host(tmp_path):
    storage = LocalStorage(str(tmp_path), base_url="https://api.liroo.app/")
    key = media_key("images", "png")
    assert (
        storage.put(key, b"png", "image/png", public_base="http://internal:8080/")
        == f"https://api.liroo.app/media/{key}"
    )


def test_without_a_base_the_url_is_the_media_path(tmp_path):
    # answers make it absolute per request (liroo.media.render_urls)
    storage = LocalStorage(str(tmp_path))
    key = media_key("images", "jpg")
    assert storage.url(key) == f"/media/{key}"


@pytest.mark.parametrize(
    "key",
    [
        "../escape.jpg",
        "/etc/passwd",
        "images/../../x.jpg",
        "images\\x.jpg",
        "images//x.jpg",
        ".hidden.jpg",
        "images/.tmp-abc",
        "a\0b.jpg",
        "",
    ],
)
def test_bad_keys_are_refused(tmp_path, key):
    storage = LocalStorage(str(tmp_path / "media"))
    with pytest.raises(StorageError):
        storage.put(key, b"x", "image/jpeg")
    assert not storage.exists(key)
    assert storage.resolve(key) is None
    assert not (tmp_path / "escape.jpg").exists()


def test_write_replaces_atomically(tmp_path):
    storage = LocalStorage(str(tmp_path))
    key = "images/cache/" + "ab" * 32 + ".jpg"
    storage.put(key, b"first version", "image/jpeg", public_base="http://h/")
    path = tmp_path / key
    with open(path, "rb") as reader:  # a reader in the middle of serving the old file
        storage.put(key, b"second version", "image/jpeg", public_base="http://h/")
        # a new file was renamed over it, not rewritten in place
        assert reader.read() == b"first version"
    assert path.read_bytes() == b"second version"
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    assert (path.stat().st_mode & 0o777) == 0o644


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    storage = LocalStorage(str(tmp_path))
    key = media_key("images", "jpg")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    # a real full disk: tests/test_faults_disk.py
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left on device"):
        storage.put(key, JPEG, "image/jpeg", public_base="http://h/")
    assert not storage.exists(key)
    folder = (tmp_path / key).parent
    assert list(folder.iterdir()) == []
    assert STORAGE_HEALTH.problem() is not None  # /health would say so
    monkeypatch.undo()
    storage.put(key, JPEG, "image/jpeg", public_base="http://h/")
    assert STORAGE_HEALTH.problem() is None  # and a write that works clears it


def test_media_keys_group_by_kind_and_date_and_never_collide():
    keys = {media_key("images", "jpg") for _ in range(2000)}
    assert len(keys) == 2000
    for key in keys:
        assert re.fullmatch(r"images/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}\.jpg", key)
    digest = "0f" * 32
    assert media_key("images", "webp", digest=digest) == f"images/cache/{digest}.webp"
    with pytest.raises(ValueError):
        media_key("images", "jpg", digest="../../etc")
    with pytest.raises(ValueError):
        media_key("../images", "jpg")


def test_make_storage_is_local_by_default(tmp_path):
    storage = make_storage(Settings(media_dir=str(tmp_path)))
    assert isinstance(storage, LocalStorage)
    assert storage.root == os.path.realpath(tmp_path)


# --- the image cache key ----------------------------------------------------------------


def test_image_cache_key_is_stable_and_normalized():
    key = image_cache_key(
        "A fox in the snow", "Studio Ghibli", "beginner", "1:1", "gemini-2.5-flash-image"
    )
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == image_cache_key(
        "  A fox \n in the   snow ", "studio ghibli", "Beginner", "1:1", "Gemini-2.5-Flash-Image"
    )
    # Unicode forms: "é" precomposed and as e + combining accent are the same prompt.
    assert image_cache_key("caf\u00e9", None, None, None, "m") == image_cache_key(
        "cafe\u0301", None, None, None, "m"
    )


@pytest.mark.parametrize("field", range(5))
def test_image_cache_key_changes_with_every_input(field):
    inputs = ["A fox in the snow", "Studio Ghibli", "beginner", "1:1", "gemini-2.5-flash-image"]
    changed = list(inputs)
    changed[field] = changed[field] + "x"
    assert image_cache_key(*inputs) != image_cache_key(*changed)


def test_image_cache_key_fields_cannot_run_into_each_other():
    assert image_cache_key("fox", "ab", "c", None, "m") != image_cache_key(
        "fox", "a", "bc", None, "m"
    )
    assert image_cache_key("fox a", "b", None, None, "m") != image_cache_key(
        "fox", "a b", None, None, "m"
    )


def test_cached_url_finds_the_stored_picture_and_counts(tmp_path):
    def count(result):
        return REGISTRY.get_sample_value("liroo_image_cache_total", {"result": result}) or 0.0

    storage = LocalStorage(str(tmp_path), base_url="https://api.liroo.app")
    key = image_cache_object(
        image_cache_key("A fox", "Studio Ghibli", "beginner", "1:1", "m"), "jpg"
    )
    hits, misses = count("hit"), count("miss")
    assert cached_url(storage, key) is None
    assert (count("hit"), count("miss")) == (hits, misses + 1)
    storage.put(key, JPEG, "image/jpeg")
    assert cached_url(storage, key) == f"https://api.liroo.app/media/{key}"
    assert (count("hit"), count("miss")) == (hits + 1, misses + 1)


def test_media_route_exists_only_where_answers_name_media_by_it():
    def has_media_route(**settings) -> bool:
        app = create_app(Settings(governor_enabled=False, **settings))
        return any(rule.rule.startswith("/media") for rule in app.url_map.iter_rules())

    gcs = {"storage": "gcs", "gcs_bucket_name": "liroo-test"}
    assert not has_media_route(**gcs, gcs_url_mode="public")  # plain bucket URLs: no route
    assert has_media_route(**gcs)  # redirect mode (the default): stable links that redirect
    assert has_media_route()  # local storage serves its files


# --- /media on a real gunicorn ------------------------------------------------------------


def raw_get(server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET exactly ``path``: http.client sends it as written (requests would normalize ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "ext, content_type, data",
    [
        ("jpg", "image/jpeg", JPEG),
        ("webp", "image/webp", b"RIFF....WEBPVP8 "),
        ("png", "image/png", b"\x89PNG\r\n\x1a\n..."),
    ],
    ids=["jpeg", "webp", "png"],
)
def test_media_is_served_with_type_cache_headers_and_etag(planted_server, ext, content_type, data):
    server, _ = planted_server
    storage = LocalStorage(server.media_dir)
    key = media_key("images", ext)
    url = storage.put(key, data, content_type, public_base=server.base_url)
    assert url == server.url(f"/media/{key}")
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == content_type
    cache = response.headers["Cache-Control"]
    assert "public" in cache and "max-age=31536000" in cache and "immutable" in cache
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    etag = response.headers["ETag"]

    again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    other = requests.get(url, headers={"If-None-Match": '"something-else"'}, timeout=10)
    assert other.status_code == 200 and other.content == data


def test_missing_media_is_a_json_404(planted_server):
    server, _ = planted_server
    response = requests.get(server.url("/media/images/2025/01/01/nothing.jpg"), timeout=10)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found" and body["error"]


@pytest.fixture(scope="module")
def planted_server(tmp_path_factory):
    """One server whose media folder holds a picture and links out to secrets beside it."""
    with GunicornServer() as server:
        # Something worth stealing, right beside the media folder and further out.
        outside = os.path.join(os.path.dirname(server.media_dir), "secret.txt")
        with open(outside, "w") as f:
            f.write("top secret")
        passwd = tmp_path_factory.mktemp("etc") / "passwd"
        passwd.write_text("root:x:0:0")
        storage = LocalStorage(server.media_dir)
        os.makedirs(server.media_dir, exist_ok=True)
        good = media_key("images", "jpg")
        storage.put(good, JPEG, "image/jpeg", public_base=server.base_url)
        folder = os.path.dirname(good)
        media = server.media_dir
        # A symlink to a file outside, one to a folder outside, and one inside pointing inside.
        os.symlink(outside, os.path.join(media, folder, "link-out.jpg"))
        os.symlink(os.path.dirname(outside), os.path.join(media, "images", "dir-out"))
        os.symlink(os.path.join(media, good), os.path.join(media, folder, "link-in.jpg"))
        yield server, {"good": good, "folder": folder, "passwd": str(passwd)}


# Filled in with the planted server's names: {folder} (a dated media folder), {good} (a real
# picture's key), {passwd} (an absolute path outside), {passwd_rel} and {passwd_enc} (the same
# without its leading slash, and with every slash as %2F).
ESCAPE_ATTEMPTS = [
    "/media/../secret.txt",
    "/media/images/../../secret.txt",
    "/media/{folder}/../../../../../secret.txt",
    "/media/..%2Fsecret.txt",
    "/media/..%2fsecret.txt",
    "/media/images%2F..%2F..%2Fsecret.txt",
    "/media/..%5Csecret.txt",
    "/media/images%5c..%5c..%5csecret.txt",
    "/media/%2e%2e/secret.txt",
    "/media/%2E%2E%2Fsecret.txt",
    "/media//{passwd_rel}",
    "/media/{passwd}",
    "/media/%2F{passwd_enc}",
    "/media/{folder}/link-out.jpg",
    "/media/images/dir-out/secret.txt",
    "/media/{folder}/link-in.jpg",
    "/media/{good}%00.txt",
    "/media/{good}%00",
    "/media/images/.",
    "/media/.",
    "/media/..",
]


@pytest.mark.parametrize("attempt", ESCAPE_ATTEMPTS)
def test_nothing_outside_the_media_folder_can_be_reached(planted_server, attempt):
    server, names = planted_server
    passwd_rel = names["passwd"].lstrip("/")
    path = attempt.format(**names, passwd_rel=passwd_rel, passwd_enc=passwd_rel.replace("/", "%2F"))
    status, headers, body = raw_get(server, path)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"].startswith("application/json"), path
    payload = json.loads(body)
    assert payload["code"] == "not_found" and payload["error"], path
    assert b"top secret" not in body and b"root:" not in body


def test_the_planted_media_folder_still_serves_its_own_file(planted_server):
    server, names = planted_server
    good = names["good"]
    # The real file is still served: the refusals are not a blanket 404.
    status, _, body = raw_get(server, f"/media/{good}")
    assert status == 200 and body == JPEG
