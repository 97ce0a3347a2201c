"""Benchmark: what rollover's traffic probe costs in CPU, per request and as a share of one core.

The probe runs in rollover's own event loop, beside the controller: at 200 requests/s, every
millisecond of CPU a request costs is a fifth of a core the controller, the balancer, the engine
and the replicas do not get. This sends
the probe's traffic to busybox httpd on 127.0.0.1 (a process of its own, so its CPU is not
counted) and reads the probe process's CPU time (user + system) around the run.

    .venv/bin/python -m bench.probe_cost [--rate 200] [--seconds 10] [--runs 3] [--transport httpx]

Example: 2.6 s of CPU over a 10 s run at 200/s (2000 requests) is 1.3 ms per request, 26 % of
a core. ``--transport httpx`` measures the same probe over httpx's own transport (httpcore on
anyio), the one it used before ``rollover.probe.transport``: the comparison behind that module.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rollover.probe.open_loop import Probe


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_run(url: str, rate: float, seconds: float, transport: str) -> tuple[float, int, int]:
    """CPU seconds the probe used, requests sent, requests failed."""
    pooled = None
    if transport == "httpx":
        pooled = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    probe = Probe(url, rate=rate, timeout=2.0, transport=pooled)
    before = cpu_seconds()
    await probe.start()
    await asyncio.sleep(seconds)
    report = await probe.stop()
    if pooled is not None:
        await pooled.aclose()
    return cpu_seconds() - before, report.sent, report.failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", choices=("fresh", "httpx"), default="fresh",
                        help="the probe's own transport (default), or httpx's")
    args = parser.parse_args()
    busybox = shutil.which("busybox")
    if busybox is None:
        print("busybox is missing: run scripts/setup", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rollover-probe-bench-") as root:
        Path(root, "index.html").write_text("v1\n")
        port = free_port()
        server = subprocess.Popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", root])
        try:
            deadline = time.monotonic() + 5
            while True:  # until httpd listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            runs = [asyncio.run(one_run(f"http://127.0.0.1:{port}/", args.rate, args.seconds, args.transport))
                    for _ in range(args.runs)]
        finally:
            server.terminate()
            server.wait()
    per_request_ms = [cpu / sent * 1000 for cpu, sent, _ in runs]
    core_share = [cpu / args.seconds * 100 for cpu, _, _ in runs]
    failed = sum(failed for _, _, failed in runs)
    print(f"probe at {args.rate:g}/s for {args.seconds:g} s over the {args.transport} transport, {args.runs} runs: "
          f"{statistics.median(per_request_ms):.2f} ms CPU per request (median; "
          f"{min(per_request_ms):.2f}-{max(per_request_ms):.2f}), "
          f"{statistics.median(core_share):.0f} % of one core; {failed} failed requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
