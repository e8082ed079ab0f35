"""An 8-panel comic end to end: ours against the guide's loop, on the same stack, in one run.

Both servers are real gunicorn with the service's default worker and thread
counts (WEB_CONCURRENCY, LIROO_THREADS unset: what a user gets; printed), using
the real google-genai SDK against the loopback Gemini with fixed latencies:
0.5 s per text call and 1.0 s per image, and the default Gemini pacing (one
budget for the instance, shared by its workers). The peak RSS is the busiest
worker's. Ours draws panels concurrently under memory reservations and the
provider's pacing; the guide's
loop (bench/guide_comic.py) draws one panel at a time with a memory check,
``gc.collect()`` and a 5 s pause between panels.

Last line: ``speedup=… peak_ratio=… ours_s=… guide_s=… workers=…`` (goals: speedup >= 8 at
peak_ratio <= 1.5, and ours_s <= 4 with the default workers).
"""
from __future__ import annotations

import os
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fake_gemini_env, gunicorn_command  # noqa: E402
from liroo.settings import Settings  # noqa: E402
from tests.fake_gemini import FakeGemini  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402

TEXT = " ".join(
    f"Step {i}: water carries sand and stones downhill, slowly cutting a deeper valley."
    for i in range(30)
)
SCRIPT = {
    "comic_title": "How rivers carve valleys",
    "theme": "Slow forces shape the land.",
    "characters": [
        {"name": "Ria", "description": "a girl in a yellow raincoat with a red backpack"}
    ],
    "panels": [
        {
            "scene": f"Scene {i}",
            "image_prompt": f"Ria watches the river, moment {i}",
            "dialogue": [{"speaker": "Ria", "line": f"Look at step {i}!"}],
        }
        for i in range(1, 9)
    ],
}


def worker_peak_mb(server: GunicornServer) -> float:
    peak = 0
    for pid in server.worker_pids():
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def reset_peaks(server: GunicornServer) -> None:
    for pid in server.worker_pids():
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS


def measure(name: str, server: GunicornServer, fake: FakeGemini, path: str) -> tuple[float, float]:
    # Warm up: the first call of a worker imports and connects; not part of the figure.
    fake.answer(SCRIPT)
    requests.post(server.url("/generate_image"), json={"prompt": "warm-up"}, timeout=60)
    fake.reset()
    fake.set_latency(0.5, operation="text")
    fake.set_latency(1.0, operation="image")
    fake.answer(SCRIPT)
    reset_peaks(server)
    start = time.monotonic()
    response = requests.post(
        server.url(path),
        json={"text": TEXT, "level": "moderate", "image_style": "Comic Book"},
        timeout=600,
    )
    seconds = time.monotonic() - start
    response.raise_for_status()
    panels = response.json()["comic"]["panel_layout"]
    drawn = sum(1 for p in panels if p.get("image_url"))
    peak = worker_peak_mb(server)
    print(
        f"{name:5s}: {seconds:6.2f} s, {drawn}/{len(panels)} panels drawn, "
        f"{len(fake.requests('image'))} image calls, "
        f"worker peak RSS {peak:.1f} MB"
    )
    return seconds, peak


def main() -> None:
    with FakeGemini() as fake:
        env = fake_gemini_env("bench", fake.url)
        ours = GunicornServer(env)
        guide = GunicornServer(env, command=gunicorn_command("bench.guide_comic:app"))
        for server in (ours, guide):  # the service's own defaults, not the test harness's
            for name in ("WEB_CONCURRENCY", "LIROO_THREADS"):
                server.env.pop(name, None)
        with ours, guide:
            workers = len(ours.worker_pids())
            defaults = Settings.from_env({})
            print(
                f"workers: {workers} per server (defaults WEB_CONCURRENCY={defaults.workers}, "
                f"LIROO_THREADS={defaults.threads}, LIROO_GEMINI_RPM={defaults.gemini_rpm})"
            )
            ours_s, ours_peak = measure("ours", ours, fake, "/generate_comic")
            guide_s, guide_peak = measure("guide", guide, fake, "/generate_comic_guide")
    print(
        f"speedup={guide_s / ours_s:.2f} peak_ratio={ours_peak / guide_peak:.2f} "
        f"ours_s={ours_s:.2f} guide_s={guide_s:.2f} workers={workers}"
    )


if __name__ == "__main__":
    main()
