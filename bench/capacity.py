"""Capacity under a real memory limit: ours against the governor off and against fixed concurrency
K.

The real gunicorn server runs inside a memory cgroup (v2 or v1, set up as in
bench/survival.py; needs root) and is driven by clients that behave like the
iOS app: on a 503 they wait attempt x 4 s (stories: x 5 s) and try again, at
most 5 attempts, ignoring Retry-After; a dropped connection or a timeout
counts as a failed attempt and is retried the same way. Each client asks for a
mix of pictures, comics and stories, one after the other, for the whole run.
The loopback Gemini answers pictures with large RGBA images (small on the
wire, large to decode), so memory is what limits the server.

Configurations, one after the other on the same machine:
- ours: the governor on, defaults (2 workers x 20 threads, panels not capped);
- off: the governor off, the same threads (what happens without it);
- K=n: the governor off, n threads per worker and one panel at a time per
  request: the hand-tuning an operator would otherwise do.

Per configuration: user requests served per minute, user-visible p50/p95
latency (back-offs included), 503s, dropped connections, OOM kills, and the
peak working set divided by the hard limit (75% of the cgroup's limit, the
line the governor keeps under).

Last line (key=value): served_ratio (ours / the best K with no OOM kill),
p95_ratio (ours / that K's), utilisation (ours), oom_kills (ours), shed_share
(503s / attempts, ours). Goals: oom_kills=0, served_ratio>=1.0,
p95_ratio<=1.2, utilisation>=0.8, shed_share<=0.1.

``--cloud-run`` runs the deployed shape instead (see ``cloud_run``): a 4 GiB
limit, 2 workers x 20 threads, 40 clients, realistic model latencies with a
few 429s and 500s, for 5 minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fake_gemini_env  # noqa: E402
from bench.survival import limited_group, run_limited  # noqa: E402  (one cgroup set-up for every bench)
from tests.fake_gemini import FakeGemini, _prompt_png  # noqa: E402
from tests.servers import GunicornServer, wait_for  # noqa: E402

ATTEMPTS = 5
TEXT = (
    "Rivers carry sand and stones downhill. Over thousands of years the water cuts deeper, and a "
    "valley "
    "forms where the land was flat. "
) * 6


class BenchGemini(FakeGemini):
    """The loopback Gemini with its pictures drawn once (four variants), so that drawing 3072x3072
    PNGs
    in this process does not take the CPU from the server being measured; a model it could not reach
    (a worker killed mid-call) is not worth a traceback."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._server.handle_error = lambda request, address: None
        self._drawn: dict[int, str] = {}

    def _image(self, prompt: str) -> str:
        if self.image_noise:
            return super()._image(prompt)
        variant = sum(prompt.encode()) % 4
        if variant not in self._drawn:
            self._drawn[variant] = _prompt_png(
                f"variant {variant}", self.image_size, self.image_mode
            )
        return self._drawn[variant]


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    weight: int
    backoff_s: float  # the app waits attempt x this after a 503
    timeout_s: float  # the app's own timeout for one attempt

    def body(self, token: str) -> dict:
        text = (
            f"{TEXT} ({token})"  # one user request: its retries send the same body, as the app does
        )
        if self.name == "picture":
            return {
                "prompt": f"a river valley at dawn, wide view ({token})",
                "image_style": "Watercolor",
            }
        if self.name == "story":
            return {
                "text": (
                    "[Level: moderate]\nPlease convert the following text into an engaging "
                    "fantasy story.\n"
                    "Image Style to consider for tone and visuals: Studio Ghibli.\nOriginal "
                    f"Text:\n{text}"
                ),
                "level": "moderate",
                "image_style": "Studio Ghibli",
                "genre": "fantasy",
            }
        return {"text": text, "level": "moderate", "image_style": "Comic Book"}


KINDS = (
    Kind("picture", "/generate_image", 6, 4.0, 300.0),
    Kind("comic", "/generate_comic", 2, 4.0, 600.0),
    Kind("story", "/generate_story", 2, 5.0, 300.0),
)


@dataclass(frozen=True)
class Config:
    name: str
    governed: bool
    threads: int = 20  # per worker
    panel_concurrency: int = 0  # 0: not capped
    workers: int = 2


@dataclass
class UserRequest:
    kind: str
    served: bool
    seconds: float
    attempts: int
    refused: int  # 503s
    dropped: int  # connection errors and timeouts
    other: int  # any other status


def _summed(count: str) -> property:
    """A Result's total of one count over its user requests."""
    return property(lambda result: sum(getattr(r, count) for r in result.requests))


@dataclass
class Result:
    config: Config
    requests: list[UserRequest] = field(default_factory=list)
    seconds: float = 0.0
    oom_kills: int = 0
    peak_bytes: int = 0
    limit_bytes: int = 0
    rss_start_mb: list[float] = field(default_factory=list)
    rss_end_mb: list[float] = field(default_factory=list)

    @property
    def served(self) -> list[UserRequest]:
        return [r for r in self.requests if r.served]

    @property
    def served_per_min(self) -> float:
        return len(self.served) / max(self.seconds, 1e-9) * 60

    def latency(self, q: float, kind: str | None = None) -> float:
        times = sorted(r.seconds for r in self.served if kind in (None, r.kind))
        if not times:
            return float("inf")
        return times[min(len(times) - 1, int(q * len(times)))]

    # The run's totals of the user requests' counts.
    attempts = _summed("attempts")
    refused = _summed("refused")
    dropped = _summed("dropped")
    other = _summed("other")

    @property
    def served_share(self) -> float:
        return len(self.served) / max(len(self.requests), 1)

    @property
    def utilisation(self) -> float:
        return self.peak_bytes / (self.limit_bytes * run_limited.LIMIT_SHARE)


def user_request(server: GunicornServer, kind: Kind, stop_retrying: threading.Event) -> UserRequest:
    """One user request as the app makes it: up to 5 attempts with its back-off; the latency the
    user sees."""
    body = kind.body(uuid.uuid4().hex[:12])
    start = time.monotonic()
    refused = dropped = other = 0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = requests.post(server.url(kind.path), json=body, timeout=kind.timeout_s)
        except requests.RequestException:
            dropped += 1
        else:
            if response.status_code == 200:
                return UserRequest(
                    kind.name, True, time.monotonic() - start, attempt, refused, dropped, other
                )
            if response.status_code == 503:
                refused += 1
            else:
                other += 1
                break  # the app shows an error: no retry
        if attempt < ATTEMPTS and not stop_retrying.wait(attempt * kind.backoff_s):
            continue
        if stop_retrying.is_set():
            break
    return UserRequest(kind.name, False, time.monotonic() - start, attempt, refused, dropped, other)


class Periodic:
    """Calls ``tick`` every ``every_s`` seconds on a background thread while its with-block runs."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.tick()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class WorkingSetSampler(Periodic):
    """The cgroup's working set (usage minus inactive page cache, as the OOM killer and the governor
    see it)."""

    def __init__(self, plan) -> None:
        super().__init__(0.02)
        self._usage = os.path.join(
            plan.group, "memory.current" if plan.version == 2 else "memory.usage_in_bytes"
        )
        self._stat = os.path.join(plan.group, "memory.stat")
        self._inactive_key = "inactive_file" if plan.version == 2 else "total_inactive_file"
        self.peak = 0

    def read(self) -> int:
        try:
            usage = int(open(self._usage).read())
            inactive = 0
            for line in open(self._stat):
                key, _, value = line.partition(" ")
                if key == self._inactive_key:
                    inactive = int(value)
            return max(usage - inactive, 0)
        except (OSError, ValueError):
            return 0

    def tick(self) -> None:
        self.peak = max(self.peak, self.read())


def worker_rss_mb(server: GunicornServer) -> list[float]:
    sizes = []
    for pid in server.worker_pids():
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    sizes.append(round(int(line.split()[1]) / 1024, 1))
        except OSError:
            pass
    return sorted(sizes)


def server_env(config: Config, fake: FakeGemini, extra: dict[str, str]) -> dict[str, str]:
    env = fake_gemini_env(
        "capacity",
        fake.url,
        LIROO_GOVERNOR="on" if config.governed else "off",
        WEB_CONCURRENCY=str(config.workers),
        LIROO_THREADS=str(config.threads),
        LIROO_PANEL_CONCURRENCY=str(config.panel_concurrency),
        # Long enough that the app's own timeouts, not the server's, end a slow request.
        LIROO_WORKER_TIMEOUT_S="600",
    )
    env.update(extra)
    return env


def run(
    config: Config,
    fake: FakeGemini,
    limit_bytes: int,
    clients: int,
    duration_s: float,
    extra_env: dict[str, str],
    kinds: tuple[Kind, ...] = KINDS,
    seed: int = 1,
) -> Result:
    plan, join_group = limited_group(limit_bytes)
    result = Result(config, limit_bytes=limit_bytes)
    server = GunicornServer(server_env(config, fake, extra_env), preexec_fn=join_group)
    lock = threading.Lock()
    stop_starting, stop_retrying = threading.Event(), threading.Event()
    weights = [k.weight for k in kinds]

    def client(number: int) -> None:
        # the same sequence of requests for every configuration
        rng = random.Random(seed * 1000 + number)
        while not stop_starting.is_set():
            kind = rng.choices(kinds, weights)[0]
            outcome = user_request(server, kind, stop_retrying)
            with lock:
                result.requests.append(outcome)

    try:
        server.start()
        wait_for(
            lambda: len(server.worker_pids()) == config.workers, 60, what="every worker to start"
        )
        result.rss_start_mb = worker_rss_mb(server)
        with WorkingSetSampler(plan) as sampler:
            start = time.monotonic()
            threads = [
                threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(duration_s)  # the run's length: the clients run meanwhile
            stop_starting.set()
            # Let requests under way finish (their latency counts), but cut back-off sequences
            # short.
            grace = time.monotonic() + max(kind.timeout_s for kind in kinds) / 4
            for thread in threads:
                thread.join(max(grace - time.monotonic(), 0))
            stop_retrying.set()
            for thread in threads:
                thread.join(30)
            result.seconds = time.monotonic() - start
        result.peak_bytes = sampler.peak
        result.rss_end_mb = worker_rss_mb(server)
        result.oom_kills = run_limited.oom_kills(plan) or 0
    finally:
        stop_starting.set()
        stop_retrying.set()
        server.__exit__(None, None, None)
        run_limited.remove(plan)
    return result


def report(result: Result) -> str:
    served = len(result.served)
    return (
        f"{result.config.name:6s}: {result.served_per_min:6.1f} served/min "
        f"({served}/{len(result.requests)} "
        f"user requests in {result.seconds:.0f} s), p50 {result.latency(0.5):6.1f} s, "
        f"p95 {result.latency(0.95):6.1f} s, {result.refused} x 503 of {result.attempts} attempts, "
        f"{result.dropped} dropped, {result.other} other errors, {result.oom_kills} OOM kills, "
        f"peak working set {result.peak_bytes / 2**20:.0f} MiB = {result.utilisation:.2f} of the "
        "hard limit; p95 by kind: "
        + ", ".join(f"{kind.name} {result.latency(0.95, kind.name):.1f} s" for kind in KINDS)
    )


def capacity(args) -> None:
    limit = run_limited.parse_size(args.mem)
    env = {
        "LIROO_GEMINI_RPM": "0",
        "LIROO_GEMINI_RETRY_ATTEMPTS": "1",
        "LIROO_MAX_PANELS": str(args.panels),
    }
    configs = [Config("ours", True), Config("off", False)]
    configs += [Config(f"K={k}", False, threads=k, panel_concurrency=1) for k in args.k]
    if args.only:
        configs = [c for c in configs if c.name in args.only.split(",")]
    with BenchGemini(
        image_size=(args.image_side, args.image_side),
        image_mode="RGBA",
        latency={"image": args.image_latency, "text": args.text_latency},
    ) as fake:
        results = []
        for config in configs:
            result = run(config, fake, limit, args.clients, args.duration, env)
            print(report(result), flush=True)
            results.append(result)
    if results[0].config.name != "ours" or len(results) < 2:
        return
    ours = results[0]
    safe = [r for r in results if r.config.name.startswith("K=") and r.oom_kills == 0 and r.served]
    best = max(safe, key=lambda r: r.served_per_min, default=None)
    served_ratio = ours.served_per_min / best.served_per_min if best else float("inf")
    p95_ratio = ours.latency(0.95) / best.latency(0.95) if best else 0.0
    print(f"best fixed K without an OOM kill: {best.config.name if best else 'none'}")
    print(
        f"served_ratio={served_ratio:.2f} p95_ratio={p95_ratio:.2f} "
        f"utilisation={ours.utilisation:.2f} "
        f"oom_kills={ours.oom_kills} shed_share={ours.refused / max(ours.attempts, 1):.3f}"
    )


class FaultInjector(Periodic):
    """A few 429s and 500s from the model, spread over the run (the server's retries should absorb
    them)."""

    def __init__(self, fake: FakeGemini, every_s: float) -> None:
        super().__init__(every_s)
        self.fake = fake
        self.injected = 0

    def tick(self) -> None:
        if self.injected % 2:
            self.fake.fail("http", status=500)
        else:
            self.fake.fail("http", status=429, retry_after=2)
        self.injected += 1


def cloud_run(args) -> None:
    """The deployed shape: 4 GiB, 2 workers x 20 threads, 40 app-like clients, realistic model
    latencies.

    Pictures are 1024x1024 noise PNGs (the size of a real model picture on the
    wire); text takes 3-10 s and pictures 5-15 s; every ``--fault-every``
    seconds the next model call fails with a 429 (Retry-After 2 s) or a 500.
    Pacing is off (LIROO_GEMINI_RPM=0): the loopback model has no quota.
    """
    limit = run_limited.parse_size(args.mem or "4g")
    env = {"LIROO_GEMINI_RPM": "0", "LIROO_GEMINI_RETRY_INITIAL_S": "1"}
    with BenchGemini(
        image_size=(1024, 1024),
        image_noise=True,
        latency={"image": (5.0, 15.0), "text": (3.0, 10.0), "speech": (3.0, 10.0)},
    ) as fake:
        with FaultInjector(fake, args.fault_every) as faults:
            result = run(
                Config("cloud", True), fake, limit, args.clients or 40, args.duration or 300, env
            )
    print(report(result))
    print(f"model faults injected: {faults.injected} (429 and 500, alternately)")
    print(f"worker RSS at the start: {result.rss_start_mb} MB; at the end: {result.rss_end_mb} MB")
    print(
        f"served={len(result.served)} requests={len(result.requests)} "
        f"served_share={result.served_share:.3f} p95_s={result.latency(0.95):.1f} "
        f"refused_503={result.refused} dropped={result.dropped} oom_kills={result.oom_kills}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cloud-run", action="store_true", help="the deployed shape instead (>= 5 minutes)"
    )
    parser.add_argument(
        "--mem", default=None, help="the cgroup's memory limit (default 700m; --cloud-run: 4g)"
    )
    parser.add_argument(
        "--clients", type=int, default=None, help="app-like clients (default 20; --cloud-run: 40)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds each configuration runs (default 40; --cloud-run: 300); --long: 180",
    )
    parser.add_argument(
        "--long", action="store_true", help="a longer, steadier run (180 s per configuration)"
    )
    parser.add_argument(
        "--k", type=int, nargs="+", default=[1, 2, 3], help="fixed threads per worker to compare"
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated configurations to run (e.g. ours,K=3)"
    )
    parser.add_argument("--panels", type=int, default=4, help="panels per comic (LIROO_MAX_PANELS)")
    parser.add_argument(
        "--image-side", type=int, default=3072, help="side of the RGBA pictures the model sends"
    )
    parser.add_argument(
        "--image-latency", type=float, default=3.0, help="seconds the model takes per picture"
    )
    parser.add_argument(
        "--text-latency", type=float, default=1.0, help="seconds the model takes per text"
    )
    parser.add_argument(
        "--fault-every", type=float, default=20.0, help="--cloud-run: seconds between model faults"
    )
    args = parser.parse_args()
    if args.cloud_run:
        cloud_run(args)
        return
    args.mem = args.mem or "700m"
    args.clients = args.clients or 20
    args.duration = args.duration or (180.0 if args.long else 40.0)
    capacity(args)


if __name__ == "__main__":
    main()
