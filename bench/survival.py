"""Survival under a real memory limit: the governed server against the same server ungoverned.

The real gunicorn server runs inside a memory-limited cgroup (made by
scripts/run-limited's helpers: v2 ``memory.max`` where available, else v1
``memory.limit_in_bytes`` + ``memory.memsw.limit_in_bytes``; needs root). The
loopback Gemini runs outside it and answers every picture with a 4096x4096
RGBA image (small on the wire, about 130 MB to decode). A burst of concurrent
/generate_image requests asks for far more than fits.

The speech scenario sends a burst of concurrent 20,000-character narrations
(/generate_tts) instead: the loopback Gemini reads each ~1,500-character chunk
as ~75 s of 24 kHz PCM (3.6 MB, sent as 4.8 MB of base64), so every chunk in
flight holds ~20 MB while it is received, decoded and encoded.

The governor is given no MEMORY_LIMIT_MB: it must learn the limit from the
cgroup. Then the same burst runs with LIROO_GOVERNOR=off, to show that the
burst really kills an ungoverned server.

One line of figures per scenario, and for the last line the pictures' and the speech's:
``oom_kills=… dropped=… served_ratio=… ungoverned_oom_kills=… speech_oom_kills=…
speech_served_ratio=… speech_ungoverned_oom_kills=… speech_time_ratio=…``.
speech_time_ratio is the governed burst's time over the ungoverned one's (goal <= 1.1 where the
ungoverned side survives: the governor must not make a burst it would survive slower).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.machinery
import importlib.util
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fake_gemini_env  # noqa: E402
from tests.fake_gemini import FakeGemini  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402


def _run_limited():
    """scripts/run-limited as a module: one implementation of cgroup set-up for the script and this
    bench."""
    path = str(ROOT / "scripts" / "run-limited")
    loader = importlib.machinery.SourceFileLoader("run_limited", path)
    spec = importlib.util.spec_from_loader("run_limited", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_limited"] = module  # dataclasses look their module up while the file runs
    loader.exec_module(module)
    return module


run_limited = _run_limited()


@dataclass
class Outcome:
    governed: bool
    statuses: list[int] = field(default_factory=list)
    dropped: int = 0  # connection errors: the server died under the request
    refusals_without_retry_after: int = 0
    oom_kills: int = 0
    seconds: float = 0.0
    learned_limit_mb: float | None = None
    other_codes: list[str] = field(default_factory=list)  # "status code" of the other answers
    source: str | None = None

    @property
    def served(self) -> int:
        return self.statuses.count(200)

    @property
    def total(self) -> int:
        return len(self.statuses) + self.dropped

    @property
    def refused(self) -> int:
        return self.statuses.count(503)

    @property
    def other(self) -> int:
        return len(self.statuses) - self.served - self.refused


def cgroup_unavailable_reason(limit_bytes: int) -> str | None:
    plan = run_limited.plan(limit_bytes)
    return None if plan.version is not None else plan.reason


# What each scenario's burst asks for: a huge picture, or a long narration.
IMAGE_REQUEST = ("/generate_image", lambda i: {"prompt": "a huge detailed mountain landscape"})
NARRATION = " ".join(
    f"Part {{i}}, sentence {n}: the river carried the small boat past the old mill and under "
    "the stone bridge."
    for n in range(220)
)[:20_000]
SPEECH_REQUEST = ("/generate_tts", lambda i: {"text": NARRATION.format(i=i), "voice": "narrator"})


def _code(response: requests.Response) -> str:
    try:
        return str(response.json().get("code"))
    except ValueError:
        return "(not JSON)"


def burst(server: GunicornServer, requests_n: int, outcome: Outcome, request=IMAGE_REQUEST) -> None:
    path, body = request

    def one(i: int):
        try:
            # Its own id, or every request of the burst would be one job (the same body is one
            # request).
            response = requests.post(
                server.url(path),
                json=body(i),
                headers={"X-Request-ID": f"burst-{uuid.uuid4().hex}"},
                timeout=300,
            )
            if response.status_code not in (200, 503):
                outcome.other_codes.append(f"{response.status_code} {_code(response)}")
            return response.status_code, response.headers.get("Retry-After")
        except requests.RequestException:
            return None, None

    with concurrent.futures.ThreadPoolExecutor(requests_n) as pool:
        for status, retry_after in pool.map(one, range(requests_n)):
            if status is None:
                outcome.dropped += 1
                continue
            outcome.statuses.append(status)
            if status == 503 and not retry_after:
                outcome.refusals_without_retry_after += 1


def limited_group(limit_bytes: int):
    """A new memory cgroup of ``limit_bytes`` and a preexec_fn that puts a child in it (root)."""
    plan = run_limited.plan(limit_bytes)
    if plan.version is None:
        raise RuntimeError(f"no memory cgroup can be made here: {plan.reason}")
    run_limited.create(plan)
    procs = os.path.join(plan.group, "cgroup.procs")

    def join_group():
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    return plan, join_group


def run(
    governed: bool, fake: FakeGemini, limit_bytes: int, requests_n: int, request=IMAGE_REQUEST
) -> Outcome:
    plan, join_group = limited_group(limit_bytes)
    env = fake_gemini_env(
        "survival",
        fake.url,
        LIROO_GEMINI_RPM="0",
        LIROO_GEMINI_RETRY_ATTEMPTS="1",
        LIROO_GOVERNOR="on" if governed else "off",
        LIROO_RESERVATION_WAIT_S="120",
    )
    outcome = Outcome(governed)
    server = GunicornServer(env, preexec_fn=join_group)
    try:
        server.start(timeout=180)  # a loaded machine starts gunicorn slowly
        memory = requests.get(server.url("/memory"), timeout=10).json()
        outcome.learned_limit_mb, outcome.source = memory["memory_limit_mb"], memory["source"]
        start = time.monotonic()
        burst(server, requests_n, outcome, request)
        outcome.seconds = time.monotonic() - start
        outcome.oom_kills = run_limited.oom_kills(plan) or 0
    finally:
        server.__exit__(None, None, None)
        run_limited.remove(plan)
    return outcome


def report(outcome: Outcome, scenario: str = "pictures") -> str:
    name = f"{scenario}, " + ("governed  " if outcome.governed else "ungoverned")
    return (
        f"{name}: {outcome.served}/{outcome.total} served, {outcome.refused} refused (503), "
        f"{outcome.other} other statuses"
        + (f" ({', '.join(sorted(set(outcome.other_codes)))})" if outcome.other_codes else "")
        + f", {outcome.dropped} dropped connections, "
        f"{outcome.oom_kills} OOM kills, {outcome.seconds:.1f} s; limit learned "
        f"{outcome.learned_limit_mb} MB "
        f"({outcome.source})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mem", default="640m", help="the cgroup's memory limit (default 640m)")
    parser.add_argument("--requests", type=int, default=40, help="concurrent requests in the burst")
    parser.add_argument(
        "--image-side", type=int, default=4096, help="side of the RGBA pictures the fake sends"
    )
    parser.add_argument("--scenario", choices=("all", "pictures", "speech"), default="all")
    args = parser.parse_args()
    limit = run_limited.parse_size(args.mem)
    figures = []
    if args.scenario in ("all", "pictures"):
        with FakeGemini(image_size=(args.image_side, args.image_side), image_mode="RGBA") as fake:
            governed = run(True, fake, limit, args.requests)
            print(report(governed))
            ungoverned = run(False, fake, limit, args.requests)
            print(report(ungoverned))
        figures.append(
            f"oom_kills={governed.oom_kills} dropped={governed.dropped} "
            f"served_ratio={governed.served / max(governed.total, 1):.2f} "
            f"refusals_without_retry_after={governed.refusals_without_retry_after} "
            f"ungoverned_oom_kills={ungoverned.oom_kills} ungoverned_dropped={ungoverned.dropped}"
        )
    if args.scenario in ("all", "speech"):
        with FakeGemini() as fake:
            # chunks of many narrations in flight together
            fake.set_latency(0.5, operation="speech")
            speech = run(True, fake, limit, args.requests, SPEECH_REQUEST)
            print(report(speech, "speech"))
            speech_ungoverned = run(False, fake, limit, args.requests, SPEECH_REQUEST)
            print(report(speech_ungoverned, "speech"))
        figures.append(
            f"speech_oom_kills={speech.oom_kills} speech_dropped={speech.dropped} "
            f"speech_served_ratio={speech.served / max(speech.total, 1):.2f} "
            f"speech_refusals_without_retry_after={speech.refusals_without_retry_after} "
            f"speech_ungoverned_oom_kills={speech_ungoverned.oom_kills} "
            f"speech_ungoverned_dropped={speech_ungoverned.dropped} "
            f"speech_time_ratio={speech.seconds / max(speech_ungoverned.seconds, 1e-9):.2f}"
        )
    print(" ".join(figures))


if __name__ == "__main__":
    main()
