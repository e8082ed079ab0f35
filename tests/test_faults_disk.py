"""A full disk under local storage: 503 storage_unavailable with Retry-After, and /health says so.

Real parts: gunicorn on loopback (offline provider) with LIROO_MEDIA_DIR on a real
2 MB tmpfs that this test mounts and fills (needs root and a kernel that allows the
mount; skipped with the reason otherwise).
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import uuid

import pytest
import requests

from tests import contract
from tests.helpers.bodies import APP_COMIC
from tests.servers import wait_for


@pytest.fixture
def tiny_disk():
    folder = tempfile.mkdtemp(prefix="liroo-tinydisk-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", folder],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(folder)
        pytest.skip(
            "cannot mount a 2 MB tmpfs here (needs root): "
            f"{mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], check=False)
        os.rmdir(folder)


def fill(folder: str) -> str:
    """Write a file until the disk refuses more; returns its path."""
    path = os.path.join(folder, ".filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with open(path, "ab", buffering=0) as f:  # and the last few bytes
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return path


def health(server) -> dict:
    response = requests.get(server.url("/health"), timeout=10)
    assert response.status_code == 200
    body = response.json()
    contract.decode_health(body)
    return body


def request_picture(server, request_id: str) -> requests.Response:
    return requests.post(
        server.url("/generate_image"),
        json={"prompt": "a lighthouse at dawn"},
        headers={"X-Request-ID": request_id},
        timeout=60,
    )


def test_a_full_disk_is_503_storage_unavailable_and_health_shows_it(start_server, tiny_disk):
    media = os.path.join(tiny_disk, "media")
    server = start_server(
        {"LIROO_MEDIA_DIR": media, "LIROO_IMAGE_CACHE": "off", "LIROO_RETRY_AFTER_S": "9"}
    )
    assert health(server)["status"] == "healthy"
    os.makedirs(media, exist_ok=True)
    filler = fill(tiny_disk)

    request_id = "disk-" + uuid.uuid4().hex
    image = request_picture(server, request_id)
    assert image.status_code == 503, image.text
    assert image.headers["Retry-After"] == "9"
    assert contract.decode_error(image.json())["code"] == "storage_unavailable"
    comic = requests.post(server.url("/generate_comic"), json=APP_COMIC, timeout=60)
    assert comic.status_code == 503, comic.text
    assert contract.decode_comic(comic.json())["code"] == "storage_unavailable"
    assert "Retry-After" in comic.headers
    view = requests.get(server.url(f"/progress/{request_id}"), timeout=10).json()
    assert view["status"] == "failed" and view["error_code"] == "storage_unavailable"

    # Whichever worker answers /health sees the failure another worker met.
    for _ in range(6):
        seen = health(server)
        assert seen["status"] == "degraded", seen
        assert "No space left on device" in seen["storage_error"] and seen["message"]
        assert seen["memory_critical"] is False

    os.unlink(filler)  # the operator frees space: the retry works, health recovers
    retry = request_picture(server, request_id)  # the same request again
    assert retry.status_code == 200, retry.text
    wait_for(
        lambda: all(health(server)["status"] == "healthy" for _ in range(4)),
        timeout=30,
        what="/health to clear on every worker",
    )
    assert "Traceback" not in server.log() and "internal_error" not in server.log()
