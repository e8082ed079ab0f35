"""An instance's baseline and one heavy request's peak: the figures deploy-cloud-run.sh's
--concurrency is derived from.

The real server (gunicorn.conf.py, 2 workers, the governor on) talks to the
loopback Gemini answering 1024x1024 pictures (the size Gemini sends for 1:1)
and 24 kHz speech. Memory is the proportional set size (PSS) of the master and
its workers summed: each shared page counted once, as the container's working
set counts it. Baseline: the idle instance after one request of each kind.
Each kind then runs alone, several times, sampled every 20 ms: its peak is the
most it added over the idle figure just before it.

Last line: ``baseline_mb=… request_peak_mb=… peak_kind=…`` (the largest kind's peak).
"""

from __future__ import annotations

import os
import sys
import threading

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fake_gemini_env  # noqa: E402
from tests.fake_gemini import FakeGemini  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402

ROUNDS = 3
TEXT = (
    "Rivers carry sand and stones downhill. Over thousands of years the water cuts deeper, and a "
    "valley forms where the land was flat. "
) * 6
NARRATION = (
    "The river carried the small boat past the old mill and under the stone bridge. " * 40
)[:3000]
KINDS = {
    "picture": (
        "/generate_image",
        {"prompt": "a river valley at dawn", "image_style": "Watercolor"},
    ),
    "comic": ("/generate_comic", {"text": TEXT, "level": "moderate", "image_style": "Comic Book"}),
    "story": (
        "/generate_story",
        {"text": TEXT, "level": "moderate", "image_style": "Studio Ghibli", "genre": "fantasy"},
    ),
    "narration": ("/generate_tts", {"text": NARRATION, "voice": "narrator"}),
}


def pss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total_kb += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass  # a worker replaced meanwhile
    return total_kb / 1024


def peak_of(server: GunicornServer, pids: list[int], path: str, body: dict, tag: str) -> float:
    """The most the instance added over its idle figure while one request ran (MB)."""
    idle = pss_mb(pids)
    peak = idle
    done = threading.Event()

    def send():
        try:
            body_tagged = {**body}
            key = "prompt" if "prompt" in body else "text"
            body_tagged[key] = f"{body[key]} ({tag})"  # a new request, not a replay
            response = requests.post(server.url(path), json=body_tagged, timeout=300)
            assert response.status_code == 200, (path, response.status_code, response.text[:200])
        finally:
            done.set()

    sender = threading.Thread(target=send)
    sender.start()
    while not done.wait(0.02):
        peak = max(peak, pss_mb(pids))
    sender.join()
    return peak - idle


def main() -> None:
    with FakeGemini() as fake:
        env = fake_gemini_env("peaks", fake.url, LIROO_GEMINI_RPM="0")
        with GunicornServer(env) as server:
            pids = [server.proc.pid, *server.worker_pids()]
            for name, (path, body) in KINDS.items():  # warm-up: every route once
                peak_of(server, pids, path, body, f"warm-up {name}")
            baseline = pss_mb(pids)
            peaks = {
                name: max(
                    peak_of(server, pids, path, body, f"round {i} {name}") for i in range(ROUNDS)
                )
                for name, (path, body) in KINDS.items()
            }
    for name, mb in peaks.items():
        print(f"{name}: {mb:.1f} MB over the idle instance at its peak (most of {ROUNDS} runs)")
    kind = max(peaks, key=peaks.get)
    print(f"idle instance (master + 2 workers, PSS): {baseline:.1f} MB")
    print(f"baseline_mb={baseline:.0f} request_peak_mb={peaks[kind]:.0f} peak_kind={kind}")


if __name__ == "__main__":
    main()
