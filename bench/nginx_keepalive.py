"""What nginx's reload alone costs keep-alive clients, and which front configuration changes it.

    .venv/bin/python -m bench.nginx_keepalive [--reloads 12] [--rounds 2]

No rollover and no container here: nginx 1.22 (Debian's) with ``keepalive 16`` upstream
connections in front of two busybox httpd on 127.0.0.1, wrk (keep-alive, closed loop, 8
connections) through it while ``nginx -s reload`` is sent ``--reloads`` times, each once the
previous one is over (the front's ``bare_reloads``). One row per front configuration, the same
directives added to nginx's ``http`` block; the control is the last row: the default
configuration, wrk for as many requests as the first row served, and no reload at all.
Printed: requests, read errors, other socket errors, non-2xx, and read errors per reload
(the ratio to compare).

The question (issue 14): can any setting make a reload lose no request on a keep-alive client
connection? nginx's old workers close their idle keep-alive connections at once when told to quit
(``ngx_close_idle_connections``; the keep-alive handler closes on ``c->close`` without reading
what arrived), so a request racing that close is lost, whatever the timeouts say. Only a front
without client keep-alive (``keepalive_timeout 0``: every answer says ``Connection: close``)
escapes it.

Everything is made in a temporary directory (rngx-bench-*) and stopped at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.fronts import wait_until
from tests.support.http_stubs import closed_port
from tests.support.local_nginx import NginxFront
from tests.support.zero_downtime import wrk_running

CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    "default (keepalive_timeout 75s)": (),
    "keepalive_timeout 1s": ("keepalive_timeout 1s;",),
    "keepalive_requests 10": ("keepalive_requests 10;",),
    "lingering_close always": ("lingering_close always;", "lingering_timeout 5s;"),
    "keepalive_timeout 0 (no client keep-alive)": ("keepalive_timeout 0;",),
}


@contextmanager
def backends(directory: Path, count: int = 2) -> Iterator[list[str]]:
    """busybox httpd serving version.txt on free loopback ports."""
    (directory / "www").mkdir()
    (directory / "www" / "version.txt").write_text("v1\n")
    ports = [closed_port() for _ in range(count)]
    servers = [subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(directory / "www")])
               for port in ports]
    try:
        yield [f"127.0.0.1:{port}" for port in ports]
    finally:
        for server in servers:
            server.kill()
            server.wait()


def measure(front_directives: Sequence[str], reloads: int, quiet_requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rngx-bench-") as folder, backends(Path(folder)) as servers:
        front = NginxFront(Path(folder) / "nginx", servers, keepalive=True, front=front_directives)
        front.start()
        try:
            with wrk_running(front.url) as wrk:
                if reloads:
                    front.bare_reloads(reloads)
                else:  # the control: as many requests as a run with reloads answers, no reload
                    wait_until(lambda: front.answered() >= quiet_requests, 120, f"{quiet_requests} requests")
            return wrk["figures"]
        finally:
            front.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=12, help="reloads per row (a step-2 rollout of 6 does 12)")
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    print(f"{'front configuration':45} {'round':>5} {'requests':>9} {'read err':>9} {'other err':>9}"
          f" {'non-2xx':>8} {'read err/reload':>15}")
    for round_ in range(1, options.rounds + 1):
        rows = [*((name, directives, options.reloads) for name, directives in CONFIGURATIONS.items()),
                ("control: no reload, default", (), 0)]
        served = 0
        for name, directives, reloads in rows:
            # The control serves as many requests as the default row did around its reloads.
            figures = measure(directives, reloads, quiet_requests=served)
            served = served or int(figures["requests"])
            per_reload = f"{figures['read_errors'] / reloads:.2f}" if reloads else "-"
            print(f"{name:45} {round_:>5} {figures['requests']:>9.0f} {figures['read_errors']:>9.0f}"
                  f" {figures['connect_write_timeout_errors']:>9.0f} {figures['non_2xx']:>8.0f} {per_reload:>15}",
                  flush=True)


if __name__ == "__main__":
    main()
