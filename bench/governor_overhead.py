"""What the memory governor costs per request: no governor vs ours vs the guide's style.

Three real gunicorn servers run the same app and the same trivial route (GET /).
They are measured in alternating rounds so that drift of the machine hits all
three alike. Load comes from ``wrk`` when installed (``apt install wrk``), else
a Python keep-alive client. Worker CPU per request comes from /proc, so it does
not depend on how fast the client is.

Last line: key=value pairs; ``cpu_overhead`` and ``rps_overhead`` are ours
against no governor (goal: under 3%).
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import gunicorn_command  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def worker_cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


def load_wrk(url, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", url],
                         capture_output=True, text=True, check=True).stdout
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return requests_done, int(bad.group(1)) if bad else 0, errors.group(0) if errors else ""


def load_python(url, seconds, connections):
    host, port = url.split("//")[1].split("/")[0].split(":")
    deadline = time.monotonic() + seconds
    counts, bad = [0] * connections, [0] * connections

    def client(i):
        conn = http.client.HTTPConnection(host, int(port))
        while time.monotonic() < deadline:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            counts[i] += 1
            bad[i] += response.status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), sum(bad), ""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    load = load_wrk if shutil.which("wrk") else load_python
    print(
        f"load generator: {'wrk' if load is load_wrk else 'python'}; {args.rounds} rounds x "
        f"{args.seconds}s each"
    )

    common = {
        "WEB_CONCURRENCY": "2",
        "LIROO_THREADS": "8",
        "LIROO_LOG_LEVEL": "WARNING",
        "LIROO_MAX_REQUESTS": "0",
    }  # no recycling mid-measurement
    sides = {  # name: (environment, WSGI app)
        "none": ({"LIROO_GOVERNOR": "off"}, "wsgi:app"),
        "ours": ({}, "wsgi:app"),
        "guide": ({"LIROO_GOVERNOR": "off"}, "bench.guide_style:app"),
    }
    modes = {
        name: GunicornServer(
            {**common, **env}, command=gunicorn_command(app, "--access-logfile", "/dev/null")
        )
        for name, (env, app) in sides.items()
    }
    results = {name: {"rps": [], "cpu_us": []} for name in modes}
    try:
        for server in modes.values():
            server.start()
        for server in modes.values():  # warm-up
            load(server.url("/"), 1, args.connections)
        for round_no in range(args.rounds):
            order = list(modes) if round_no % 2 == 0 else list(reversed(modes))
            for name in order:
                server = modes[name]
                pids = server.worker_pids()
                cpu0, t0 = worker_cpu_seconds(pids), time.monotonic()
                done, bad, errors = load(server.url("/"), args.seconds, args.connections)
                elapsed, cpu = time.monotonic() - t0, worker_cpu_seconds(pids) - cpu0
                if bad or "timeout" in errors:
                    print(f"warning: {name}: {bad} bad responses {errors}")
                results[name]["rps"].append(done / elapsed)
                results[name]["cpu_us"].append(cpu / done * 1e6)
                print(
                    f"round {round_no + 1} {name:5s}: {done / elapsed:8.0f} req/s  "
                    f"{cpu / done * 1e6:7.1f} us CPU/request"
                )
    finally:
        for server in modes.values():
            server.__exit__(None, None, None)

    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    for name in modes:
        print(
            f"{name:5s}: median {med[name]['rps']:8.0f} req/s, {med[name]['cpu_us']:7.1f} us "
            "worker CPU per request"
        )
    cpu_overhead = med["ours"]["cpu_us"] / med["none"]["cpu_us"] - 1
    rps_overhead = 1 - med["ours"]["rps"] / med["none"]["rps"]
    print(
        f"rps_none={med['none']['rps']:.0f} rps_ours={med['ours']['rps']:.0f} "
        f"rps_guide={med['guide']['rps']:.0f} "
        f"cpu_us_none={med['none']['cpu_us']:.1f} cpu_us_ours={med['ours']['cpu_us']:.1f} "
        f"cpu_us_guide={med['guide']['cpu_us']:.1f} cpu_overhead={cpu_overhead:.2%} "
        f"rps_overhead={rps_overhead:.2%} "
        f"guide_vs_ours_rps={med['ours']['rps'] / med['guide']['rps']:.2f}"
    )


if __name__ == "__main__":
    main()
