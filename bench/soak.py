"""Soak: thousands of mixed requests through the real server; does a worker's memory keep growing?

Two real gunicorn servers run the same load, in turns: ours
(``wsgi:app``, the memory governor on) and the operations guide's style
(``bench.guide_style:app``: no heap freeze, ``gc.collect()`` after every
response, LIROO_GOVERNOR=off). Both use the offline provider (real pictures
drawn with Pillow, real audio) with LIROO_IMAGE_CACHE=off, so every picture
is really made, and LIROO_MAX_REQUESTS=0, so no worker is recycled during
the measurement.

The load mixes health checks, pictures, comics, stories, study pages and
speech, every text distinct, from a few concurrent clients. Each worker's
RSS is read after a warm-up and at the end; the growth must stay under
10 MB per worker (a steady worker plateaus after warm-up; a leak climbs
with the request count).

Each side's workers' CPU (user + system, from /proc) over the requests
after the warm-up gives its CPU per request: ``cpu_ratio`` is ours over the
guide's, ``rss_ratio`` our largest worker's RSS at the end over the guide's
(goals: cpu_ratio <= 1.05 with rss_ratio <= 0.8; the allocator settings that
decide both are gunicorn.conf.py's). ``--candidate NAME:KEY=VALUE,...`` runs
ours again with other settings in the same run, for choosing them.

Last line: ``ours_growth_mb_max=… guide_growth_mb_max=… requests=… failures=… cpu_ratio=…
rss_ratio=…``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import gunicorn_command  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402

BOUND_MB = 10.0
TOPICS = [
    "volcanoes",
    "rivers",
    "photosynthesis",
    "the moon",
    "bees",
    "glaciers",
    "electricity",
    "the heart",
    "deserts",
    "tides",
    "bridges",
    "clouds",
    "fossils",
    "magnets",
    "rainforests",
    "the Romans",
]
# (weight, kind): about a third health checks, the rest real generation.
MIX = [
    (30, "health"),
    (20, "image"),
    (10, "comic"),
    (10, "story"),
    (15, "study"),
    (5, "flashcards"),
    (10, "tts"),
]
KINDS = [kind for weight, kind in MIX for _ in range(weight)]


def text_for(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Lesson {i} is about {topic}. Students observe {topic} closely and write down what "
        "changes. "
        f"Then they compare notes with a partner about {topic} and draw one careful picture of it."
    )


PATHS = {
    "health": "/health",
    "image": "/generate_image",
    "comic": "/generate_comic",
    "story": "/generate_story",
    "study": "/process",
    "flashcards": "/process",
    "tts": "/generate_tts",
}


def body_for(kind: str, i: int) -> dict | None:
    text, topic = text_for(i), TOPICS[i % len(TOPICS)]
    return {
        "health": None,
        "image": {"prompt": f"A drawing of {topic}, number {i}", "image_style": "Watercolor"},
        "comic": {"text": text, "level": "beginner", "image_style": "Comic Book"},
        "story": {
            "text": text,
            "level": "moderate",
            "image_style": "Studio Ghibli",
            "genre": "adventure",
        },
        "study": {
            "input_text": text,
            "level": "moderate",
            "summarization_tier": "Detailed Explanation",
        },
        "flashcards": {"input_text": text, "output_format": "flashcards"},
        "tts": {"text": text[:120], "voice": "narrator"},
    }[kind]


def request_for(i: int) -> tuple[str, str, dict | None]:
    kind = KINDS[(i * 37) % len(KINDS)]  # a fixed, well-mixed order
    body = body_for(kind, i)
    return ("GET" if body is None else "POST"), PATHS[kind], body


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Run:
    name: str
    warm_rss: dict[int, float] = field(default_factory=dict)
    end_rss: dict[int, float] = field(default_factory=dict)
    # (requests done, max worker RSS)
    samples: list[tuple[int, float]] = field(default_factory=list)
    requests: int = 0
    measured_requests: int = 0  # after the warm-up
    cpu_s: float = 0.0  # the workers' CPU over those requests
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    replaced_workers: bool = False

    @property
    def growth(self) -> dict[int, float]:
        return {
            pid: self.end_rss[pid] - rss
            for pid, rss in self.warm_rss.items()
            if pid in self.end_rss
        }

    @property
    def growth_max(self) -> float:
        return max(self.growth.values()) if self.growth else float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / max(self.measured_requests, 1)

    @property
    def rss_end_max(self) -> float:
        return max(self.end_rss.values()) if self.end_rss else float("nan")


def cpu_s(pid: int) -> float:
    """A process's user + system CPU so far (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(server: GunicornServer, indexes: range, concurrency: int, run: Run) -> None:
    def one(i: int) -> None:
        method, path, body = request_for(i)
        try:
            # A new connection per request, so that both workers' accept loops share the load.
            response = requests.request(
                method,
                server.url(path),
                json=body,
                timeout=300,
                headers={"X-Request-ID": f"soak-{run.name}-{i:08d}"},
            )
            if response.status_code != 200:
                run.failures.append(f"{path} {response.status_code} {response.text[:120]}")
        except requests.RequestException as exc:
            run.failures.append(f"{path} {type(exc).__name__}")
        run.requests += 1

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, indexes))


def soak(sides: dict[str, tuple[dict, str]], total: int, warmup: int, concurrency: int) -> dict:
    """Every side's server started at once and loaded in turns, a fifth of the requests at a time,
    so that each side meets the machine's other load as the others do (this machine is shared:
    one side after the other, a busier minute made one side's CPU per request 20% higher)."""
    base = {"LIROO_MAX_REQUESTS": "0", "LIROO_IMAGE_CACHE": "off", "LIROO_LOG_LEVEL": "WARNING"}
    runs = {name: Run(name) for name in sides}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, (env, app) in sides.items():
            server = GunicornServer({**base, **env}, command=gunicorn_command(app))
            stack.callback(server.__exit__, None, None, None)
            servers[name] = server.start(timeout=180)  # a loaded machine starts gunicorn slowly
        pids, warm_cpu, warm_requests = {}, {}, {}
        for name, server in servers.items():
            run = runs[name]
            started = time.monotonic()
            load(server, range(warmup), concurrency, run)
            run.seconds += time.monotonic() - started
            pids[name] = server.worker_pids()
            run.warm_rss = {pid: rss_mb(pid) for pid in pids[name]}
            warm_cpu[name] = sum(cpu_s(pid) for pid in pids[name])
            warm_requests[name] = run.requests
            run.samples.append((run.requests, max(run.warm_rss.values())))
        step = max(1, (total - warmup) // 5)
        for first in range(warmup, total, step):
            for name, server in servers.items():
                run = runs[name]
                started = time.monotonic()
                load(server, range(first, min(first + step, total)), concurrency, run)
                run.seconds += time.monotonic() - started
                run.samples.append((run.requests, max(rss_mb(p) for p in server.worker_pids())))
        for name, server in servers.items():
            run = runs[name]
            run.end_rss = {pid: rss_mb(pid) for pid in server.worker_pids()}
            run.cpu_s = sum(cpu_s(pid) for pid in pids[name]) - warm_cpu[name]
            run.measured_requests = run.requests - warm_requests[name]
            run.replaced_workers = set(server.worker_pids()) != set(pids[name])
    return runs


def report(run: Run) -> str:
    lines = [
        f"{run.name}: {run.requests} requests in {run.seconds:.0f} s, "
        f"{len(run.failures)} failures, "
        f"{run.cpu_ms_per_request:.1f} ms of worker CPU per request after the warm-up"
        + (", WORKERS REPLACED" if run.replaced_workers else "")
    ]
    for pid, warm in sorted(run.warm_rss.items()):
        end = run.end_rss.get(pid, float("nan"))
        lines.append(
            f"  worker {pid}: {warm:.1f} MB after warm-up -> {end:.1f} MB at the end "
            f"({end - warm:+.1f} MB)"
        )
    lines.append(
        "  max worker RSS by requests done: " + ", ".join(f"{n}: {mb:.1f}" for n, mb in run.samples)
    )
    lines += [f"  failure: {f}" for f in run.failures[:5]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=3000, help="requests per server (default 3000)"
    )
    parser.add_argument("--warmup", type=int, default=300, help="requests before the first reading")
    parser.add_argument("--concurrency", type=int, default=6, help="concurrent clients")
    parser.add_argument("--only", choices=["ours", "guide"], help="run one side only")
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,... ours again with these environment settings (repeatable)",
    )
    args = parser.parse_args()
    sides = {
        "ours": ({}, "wsgi:app"),
        # the guide's style runs on the libraries' allocator defaults (Pillow keeps no free block)
        "guide": ({"LIROO_GOVERNOR": "off", "PILLOW_BLOCKS_MAX": "0"}, "bench.guide_style:app"),
    }
    for candidate in args.candidate:
        name, _, settings = candidate.partition(":")
        sides[name] = (dict(pair.split("=", 1) for pair in settings.split(",")), "wsgi:app")
    if args.only:
        sides = {args.only: sides[args.only]}
    runs = soak(sides, args.requests, args.warmup, args.concurrency)
    for run in runs.values():
        print(report(run), flush=True)
    ours, guide = runs.get("ours"), runs.get("guide")
    total = sum(r.requests for r in runs.values())
    failures = sum(len(r.failures) for r in runs.values())
    verdict = "ok" if ours and ours.growth_max < BOUND_MB and not ours.replaced_workers else "LEAK"
    for name, run in runs.items():
        if guide and name != "guide":
            print(
                f"{name}: cpu_ratio={run.cpu_ms_per_request / guide.cpu_ms_per_request:.2f} "
                f"rss_ratio={run.rss_end_max / guide.rss_end_max:.2f}"
            )
    nan = float("nan")
    cpu_ratio = ours.cpu_ms_per_request / guide.cpu_ms_per_request if ours and guide else nan
    rss_ratio = ours.rss_end_max / guide.rss_end_max if ours and guide else nan
    print(
        f"ours_growth_mb_max={ours.growth_max if ours else nan:.1f} "
        f"guide_growth_mb_max={guide.growth_max if guide else float('nan'):.1f} "
        f"bound_mb={BOUND_MB:.0f} requests={total} failures={failures} ours={verdict} "
        f"cpu_ratio={cpu_ratio:.2f} rss_ratio={rss_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
