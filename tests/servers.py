"""Real servers on loopback for the tests: gunicorn running the app, and helpers that wait on it
or call it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent

# Settings that must not leak from the developer's shell into a test server.
_SCRUB_PREFIXES = (
    "LIROO_",
    "GENAI_",
    "GCS_",
    "MEMORY_",
    "FORCE_GC_",
    "REDIS_",
    "K_SERVICE",
    "BASE_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "WEB_CONCURRENCY",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition"
):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
    )


def ended_job(server: GunicornServer, request_id: str, timeout: float) -> dict:
    """/jobs/<request_id> once the job no longer runs."""

    def look():
        view = requests.get(server.url(f"/jobs/{request_id}"), timeout=10).json()
        return view if view["status"] != "running" else None

    return wait_for(look, timeout, interval=0.1, what=f"job {request_id} to end")


def sent_twice(
    server: GunicornServer, path: str, body: dict
) -> tuple[str, requests.Response, requests.Response]:
    """One generation sent twice under one X-Request-ID: the second answer is a replay of the
    first. Returns the id and both answers."""
    request_id = "twice-" + uuid.uuid4().hex
    first, second = (
        requests.post(
            server.url(path), json=body, headers={"X-Request-ID": request_id}, timeout=120
        )
        for _ in range(2)
    )
    assert first.status_code == second.status_code == 200
    assert second.headers.get("X-Idempotent-Replay") == "true"
    return request_id, first, second


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def slow_pictures_env(delay_s: float) -> dict[str, str]:
    """The offline provider drawing one uncached picture at a time, each slowed on purpose, so
    that what a request shows before it ends can be seen."""
    return {
        "LIROO_OFFLINE_IMAGE_DELAY_S": str(delay_s),
        "LIROO_PANEL_CONCURRENCY": "1",
        "LIROO_IMAGE_CACHE": "off",
    }


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` on a free loopback port, as in production."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        command: list[str] | None = None,
        preexec_fn=None,
    ) -> None:
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="liroo-test-")
        media = os.path.join(self._tmp.name, "media")
        base = {
            "PORT": str(self.port),
            "LIROO_MEDIA_DIR": media,
            "WEB_CONCURRENCY": "2",
            "LIROO_THREADS": "8",
            "MALLOC_ARENA_MAX": "2",
        }
        base.update(env or {})
        self.env = clean_env(**base)
        self.media_dir = self.env["LIROO_MEDIA_DIR"]
        self.command = command or [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "wsgi:app",
            *args,
        ]
        self.log_path = os.path.join(self._tmp.name, "server.log")
        self._preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, timeout: float = 60) -> "GunicornServer":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec_fn,
        )
        try:
            wait_for(self._healthy, timeout, interval=0.05, what="gunicorn to answer /health")
        except TimeoutError as timeout_error:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log()) from timeout_error
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("server exited:\n" + self.log())
        return requests.get(self.url("/health"), timeout=2).status_code == 200

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The master's current children (the workers)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "GunicornServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()


class SteadyLoad:
    """Clients sending GET requests in a loop until stopped; counts answers and failures.

    A failure is a connection error or any status but 200.
    """

    def __init__(self, server: GunicornServer, path: str = "/", clients: int = 4) -> None:
        import concurrent.futures
        import threading

        self._url = server.url(path)
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(clients)
        self._clients = clients
        self.answered = 0
        self.failures: list = []

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.get(self._url, timeout=30)
                    self.answered += 1
                    if response.status_code != 200:
                        self.failures.append(response.status_code)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> "SteadyLoad":
        for _ in range(self._clients):
            self._pool.submit(self._client)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
