"""Answers in time under picture and speech pressure: the request's deadline (ours) against today's
behaviour (the settings before deadlines) and a fixed concurrency.

The real gunicorn server (2 workers, MEMORY_LIMIT_MB=220 read against each
worker's RSS) is driven by clients that behave like the iOS app
(shared/client-contract.md): every attempt has a 60 s timeout; on a 503 they
wait attempt x 4 s and try again, at most 5 attempts, ignoring Retry-After;
comics and pictures do not retry a timeout; a narration is not retried at all.
Each client asks for comics, pictures and 20,000-character narrations, one
after the other, with fresh bodies; it starts new ones for the run's length,
and the one it has started runs to its end as the app would (a user still in
back-off when the run ends is neither served nor failed early). The loopback
Gemini answers 3072x3072 pictures of noise (27 MB each, 36 MB on the wire), so
a few pictures at once fill a worker's memory, and reads each ~1,500-character
chunk of a narration as ~75 s of PCM (~20 MB while it is decoded and encoded).

Sides, one after the other on the same machine (``--rounds N`` runs them in turn N
times and sums: single runs of a side differ by +-10% in requests served):
- ours: the defaults (a 55 s deadline per request, LIROO_DEADLINE_S; the door's line waits up
  to 40 s, LIROO_ADMISSION_WAIT_S, and never past the deadline minus the expected service);
- today: the settings before deadlines, LIROO_DEADLINE=off (a request is answered when its work
  ends) and LIROO_ADMISSION_WAIT_S=15 (without a deadline a longer wait would answer late);
- K=1: today's behaviour with the governor off, one thread per worker and one panel at a
  time (hand-tuned concurrency).

Per side: user requests served, late answers (an attempt answered after the
client's 60 s timeout, timeouts included: the user saw nothing for a minute),
503s, and the user-visible p50/p95 latency. Last line (key=value): for each
side ``late_answers_<side>=`` and ``served_<side>=``, then ``late_answers=``
(ours) and ``served_ratio=`` (ours / today). Goal: late_answers=0 with
served_ratio >= 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fake_gemini_env  # noqa: E402
from tests.fake_gemini import FakeGemini  # noqa: E402
from tests.servers import GunicornServer, wait_for  # noqa: E402

ATTEMPTS = 5
BACKOFF_S = 4.0  # comics, lectures, pictures: attempt x 4 s after a 503 (speech: no retry)
CLIENT_TIMEOUT_S = 60.0  # URLRequest's idle timeout
TEXT = (
    "Rivers carry sand and stones downhill. Over thousands of years the water cuts deeper, and a "
    "valley forms where the land was flat. "
) * 6


@dataclass(frozen=True)
class Side:
    name: str
    env: dict[str, str]


SIDES = (
    Side("ours", {}),
    Side("today", {"LIROO_DEADLINE": "off", "LIROO_ADMISSION_WAIT_S": "15"}),
    Side(
        "K=1",
        {
            "LIROO_GOVERNOR": "off",
            "LIROO_DEADLINE": "off",
            "LIROO_THREADS": "1",
            "LIROO_PANEL_CONCURRENCY": "1",
        },
    ),
)


@dataclass
class UserRequest:
    kind: str
    served: bool
    seconds: float
    late: int  # attempts answered after the client's timeout, or never
    refusals: list[float]  # seconds each 503 took to come


@dataclass
class Result:
    side: str
    requests: list[UserRequest] = field(default_factory=list)

    @property
    def late(self) -> int:
        return sum(r.late for r in self.requests)

    @property
    def refused(self) -> int:
        return sum(len(r.refusals) for r in self.requests)

    def refusals(self) -> str:
        """When the 503s came, by kind: at once (< 1 s), after waiting, at the deadline (50 s+)."""
        parts = []
        for kind in dict.fromkeys(KINDS):
            times = [t for r in self.requests if r.kind == kind for t in r.refusals]
            at_once, at_deadline = sum(t < 1.0 for t in times), sum(t >= 50.0 for t in times)
            parts.append(f"{kind} {at_once}/{len(times) - at_once - at_deadline}/{at_deadline}")
        return ", ".join(parts)

    @property
    def served(self) -> int:
        return sum(r.served for r in self.requests)

    def by_kind(self) -> str:
        """Served / asked for each kind, e.g. "comic 9/12"."""
        return ", ".join(
            f"{kind} {sum(r.served for r in self.requests if r.kind == kind)}"
            f"/{sum(r.kind == kind for r in self.requests)}"
            for kind in dict.fromkeys(KINDS)
        )

    def summary(self) -> str:
        return (
            f"{len(self.requests)} user requests, {self.served} served, "
            f"{self.late} late answers, {self.refused} 503s, "
            f"p50 {self.latency(0.5):.1f} s, p95 {self.latency(0.95):.1f} s; "
            f"served: {self.by_kind()}; "
            f"503s at once/after waiting/at the deadline: {self.refusals()}"
        )

    def latency(self, q: float) -> float:
        times = sorted(r.seconds for r in self.requests if r.served)
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("inf")


NARRATION = " ".join(
    f"Sentence {n}: the river carried the small boat past the old mill and under the stone bridge."
    for n in range(240)
)[:20_000]
KINDS = ("comic", "comic", "picture", "speech")


def body(kind: str) -> tuple[str, dict]:
    token = uuid.uuid4().hex[:12]  # one user request: its retries send the same body
    if kind == "speech":
        return "/generate_tts", {"text": f"({token}) {NARRATION}"[:20_000], "voice": "narrator"}
    if kind == "picture":
        return "/generate_image", {"prompt": f"a river valley at dawn ({token})"}
    return "/generate_comic", {"text": f"{TEXT} ({token})", "level": "moderate"}


def user_request(server: GunicornServer, kind: str) -> UserRequest:
    """One user request as the app makes it; an attempt is late when no answer came within the
    client's timeout (a timeout) or the answer came after it."""
    path, payload = body(kind)
    start = time.monotonic()
    late = 0
    refusals: list[float] = []
    for attempt in range(1, ATTEMPTS + 1):
        sent = time.monotonic()
        try:
            response = requests.post(server.url(path), json=payload, timeout=CLIENT_TIMEOUT_S)
        except requests.Timeout:
            late += 1
            break  # comics and pictures do not retry a timeout
        except requests.RequestException:
            break
        if time.monotonic() - sent > CLIENT_TIMEOUT_S:
            late += 1
            break
        if response.status_code == 200:
            return UserRequest(kind, True, time.monotonic() - start, late, refusals)
        if response.status_code != 503:
            break  # the app shows an error: no retry
        refusals.append(time.monotonic() - sent)
        if attempt == ATTEMPTS or kind == "speech":
            break
        time.sleep(attempt * BACKOFF_S)  # the app's back-off
    return UserRequest(kind, False, time.monotonic() - start, late, refusals)


def run(
    side: Side, fake: FakeGemini, clients: int, duration_s: float, seed: int, extra: dict
) -> Result:
    env = (
        fake_gemini_env(
            "deadline",
            fake.url,
            LIROO_GEMINI_RPM="0",
            LIROO_GEMINI_TIMEOUT_S="60",
            MEMORY_LIMIT_MB="220",
            LIROO_WORKER_RECYCLE_MB="100000",  # memory is the governor's to keep, not recycling's
            LIROO_WORKER_TIMEOUT_S="600",
        )
        | extra
        | side.env
    )
    result = Result(side.name)
    lock = threading.Lock()
    stop_starting = threading.Event()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)  # the same sequence on every side
        while not stop_starting.is_set():
            outcome = user_request(server, rng.choice(KINDS))
            with lock:
                result.requests.append(outcome)

    with GunicornServer(env) as server:
        wait_for(lambda: len(server.worker_pids()) == 2, 60, what="both workers")
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(duration_s)  # the run's length, not a synchronisation
        stop_starting.set()  # user requests under way run to their end
        for thread in threads:
            thread.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds each side runs")
    parser.add_argument("--image-latency", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="runs of every side, summed")
    parser.add_argument(
        "--set", action="append", default=[], help="KEY=VALUE for every side's server"
    )
    parser.add_argument("--sides", default=",".join(s.name for s in SIDES))
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    sides = [s for s in SIDES if s.name in args.sides.split(",")]
    results = {side.name: Result(side.name) for side in sides}
    with FakeGemini(
        image_size=(3072, 3072),
        image_noise=True,
        latency={"image": args.image_latency, "speech": 0.5},
    ) as fake:
        for round_number in range(args.rounds):  # sides alternate, so drift hits each alike
            for side in sides:
                started = time.monotonic()
                seed = args.seed + round_number
                result = run(side, fake, args.clients, args.duration, seed, extra)
                results[side.name].requests += result.requests
                print(
                    f"{side.name:>6}: {result.summary()} ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    if args.rounds > 1:
        for name, result in results.items():
            print(f"{name:>6}, {args.rounds} rounds: {result.summary()}")
    ours, today = results.get("ours", Result("ours")), results.get("today", Result("today"))
    figures = " ".join(
        f"late_answers_{name}={r.late} served_{name}={r.served}" for name, r in results.items()
    )
    print(
        f"{figures} late_answers={ours.late} served_ratio={ours.served / max(today.served, 1):.2f}"
    )


if __name__ == "__main__":
    main()
