"""Cloud Storage going away mid-request, on a real gunicorn server with LIROO_STORAGE=gcs.

The real google-cloud-storage client talks to gcp-storage-emulator, run here
as its own process with its data on disk (so that a restart finds the objects
stored before it), through tests/test_storage_gcs.py's loopback FaultProxy.
The proxy can hold uploads at its door, which lets a test stop the emulator
at a known point of a request; with the emulator gone the proxy hangs up
without an answer, as a dead server's connection would.

What must hold: an outage longer than LIROO_GCS_RETRY_DEADLINE_S is a clear
503 ``storage_unavailable`` with Retry-After, recorded as the job's failure;
a shorter one is ridden out by the library's retries; a retried request
succeeds once storage is back; and no success body carries a URL that does
not fetch a whole picture.
"""
from __future__ import annotations

import concurrent.futures
import io
import subprocess
import sys
import threading
import uuid

import pytest
import requests
from PIL import Image

from tests import contract
from tests.helpers.bodies import APP_COMIC, LONG_TEXT
from tests.helpers.gcs_proxy import FaultProxy
from tests.helpers.http import post
from tests.servers import free_port, wait_for

BUCKET = "liroo-faults"
UPLOAD = "/upload/storage/v1/b/"


class Emulator:
    """gcp-storage-emulator as a separate process on a fixed port, data kept on disk across
    restarts."""

    def __init__(self, data_dir: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Emulator":
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "--data-dir",
                self.data_dir,
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--default-bucket",
                BUCKET,
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: requests.get(f"{self.url}/storage/v1/b/{BUCKET}", timeout=2).status_code == 200,
            timeout=30,
            what="the storage emulator",
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class GatedProxy(FaultProxy):
    """The FaultProxy, plus: uploads after the first ``let_through`` wait at a gate the test opens;
    and an upstream that is gone is answered by hanging up (recorded with status 0)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.gate = threading.Event()
        self.gate.set()
        self.let_through = 0
        self.uploads_seen = 0
        self.held = 0
        self._count_lock = threading.Lock()

    def close_gate(self, let_through: int = 0) -> None:
        self.let_through = let_through
        self.gate.clear()

    def _handle(self, handler) -> None:
        if handler.command == "POST" and handler.path.startswith(UPLOAD):
            with self._count_lock:
                self.uploads_seen += 1
                wait = not self.gate.is_set() and self.uploads_seen > self.let_through
                self.held += wait
            if wait:
                self.gate.wait(60)
        try:
            super()._handle(handler)
        except OSError:  # the emulator is down: no answer at all
            self.requests.append((handler.command, handler.path, 0))
            handler.close_connection = True

    def upload_statuses(self) -> list[int]:
        return [status for _, status in self.calls("POST", UPLOAD)]


@pytest.fixture
def storage(tmp_path):
    emulator = Emulator(str(tmp_path / "gcs")).start()
    proxy = GatedProxy(emulator.url)
    yield emulator, proxy
    proxy.gate.set()
    proxy.close()
    emulator.kill()


def gcs_env(proxy: GatedProxy, deadline_s: float) -> dict:
    return {
        "STORAGE_EMULATOR_HOST": proxy.url,
        "GCS_BUCKET_NAME": BUCKET,
        "LIROO_STORAGE": "gcs",
        "LIROO_GCS_URL_MODE": "public",
        "LIROO_GCS_RETRY_DEADLINE_S": str(deadline_s),
        "LIROO_IMAGE_CACHE": "off",
    }


def workers(server) -> set[int]:
    return wait_for(
        lambda: len(server.worker_pids()) == 2 and set(server.worker_pids()),
        timeout=30,
        what="both workers",
    )


def assert_whole_picture(url: str) -> None:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    with Image.open(io.BytesIO(response.content)) as picture:
        picture.load()  # raises on a truncated file


def test_an_outage_longer_than_the_deadline_is_a_clear_503_and_the_retry_succeeds(
    start_server, storage
):
    emulator, proxy = storage
    server = start_server(gcs_env(proxy, deadline_s=1.5))
    pids = workers(server)
    rid = "gcs-" + uuid.uuid4().hex
    proxy.close_gate()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            post, server, "/generate_image", {"prompt": "A lighthouse at dusk"}, rid
        )
        wait_for(lambda: proxy.held >= 1, timeout=60, what="the upload to reach storage")
        emulator.kill()  # storage dies while the request is uploading
        proxy.gate.set()
        response = pending.result()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    body = contract.decode_error(response.json())
    assert body["code"] == "storage_unavailable" and body["request_id"] == rid
    assert "url" not in body and "image_url" not in body
    assert len(proxy.upload_statuses()) >= 2 and set(proxy.upload_statuses()) == {
        0
    }  # it retried, then gave up
    state = contract.decode_progress(
        requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    )
    assert state["status"] == "failed" and state["error_code"] == "storage_unavailable"

    emulator.start()  # storage is back: the app's retry (same id) runs afresh
    retry = post(server, "/generate_image", {"prompt": "A lighthouse at dusk"}, rid)
    assert retry.status_code == 200, retry.text
    assert_whole_picture(contract.decode_image(retry.json())["url"])
    assert proxy.upload_statuses()[-1] == 200
    assert workers(server) == pids  # no worker died on the way


def test_a_short_outage_is_ridden_out_by_the_retries(start_server, storage):
    emulator, proxy = storage
    server = start_server(gcs_env(proxy, deadline_s=60))
    proxy.close_gate()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            post,
            server,
            "/generate_image",
            {"prompt": "A fox in the snow"},
            "gcs-" + uuid.uuid4().hex,
        )
        wait_for(lambda: proxy.held >= 1, timeout=60, what="the upload to reach storage")
        emulator.kill()
        proxy.gate.set()
        wait_for(
            lambda: proxy.upload_statuses().count(0) >= 2,
            timeout=60,
            what="two failed upload attempts",
        )
        emulator.start()
        response = pending.result()
    assert response.status_code == 200, response.text
    statuses = proxy.upload_statuses()
    assert statuses[-1] == 200 and set(statuses[:-1]) == {
        0
    }  # the same upload, retried until it landed
    assert_whole_picture(response.json()["url"])


def comic_while_storage_dies(server, emulator, proxy, body, stored):
    """A comic whose first ``stored`` panels reach storage, then the emulator is killed under the
    next: (request id, response)."""
    rid = "gcs-comic-" + uuid.uuid4().hex
    proxy.close_gate(let_through=stored)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, server, "/generate_comic", body, rid)
        wait_for(
            lambda: proxy.held >= 1 and proxy.upload_statuses().count(200) == stored,
            timeout=60,
            what=f"{stored} panels stored and the next at the door",
        )
        emulator.kill()
        proxy.gate.set()
        return rid, pending.result()


def test_a_comic_keeps_only_the_panels_that_were_stored(start_server, storage):
    """Half the panels are stored, then storage dies: the comic succeeds with exactly those
    pictures, each of which fetches whole; the others say why they are missing instead of
    pointing nowhere."""
    emulator, proxy = storage
    server = start_server({**gcs_env(proxy, deadline_s=1.5), "LIROO_MAX_PANELS": "6"})
    _, response = comic_while_storage_dies(
        server, emulator, proxy, {**APP_COMIC, "text": LONG_TEXT}, stored=3
    )
    assert response.status_code == 200, response.text
    panels = contract.decode_comic(response.json())["comic"]["panel_layout"]
    assert len(panels) == 6
    drawn = [p for p in panels if "image_url" in p]
    assert len(drawn) == 3
    assert all(p["image_error"] == "storage_unavailable" for p in panels if "image_url" not in p)

    emulator.start()
    for panel in drawn:
        assert_whole_picture(panel["image_url"])


def test_a_comic_with_too_few_stored_panels_fails_clearly(start_server, storage):
    emulator, proxy = storage
    server = start_server(gcs_env(proxy, deadline_s=1.5))
    rid, response = comic_while_storage_dies(server, emulator, proxy, APP_COMIC, stored=1)
    assert response.status_code == 503, response.text
    body = contract.decode_comic(contract.decode_error(response.json()))
    assert (
        body["success"] is False and body["code"] == "storage_unavailable" and "comic" not in body
    )
    state = requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    assert state["status"] == "failed" and state["error_code"] == "storage_unavailable"
