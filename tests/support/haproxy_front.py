"""HAProxy as an operator runs it in front of a service, for the rollout proofs (tests/zero_downtime)
and the Swarm CLI tests: a real process in the foreground, its runtime API on a unix socket, one
log line per request. Traffic only ever goes to 127.0.0.1 or to addresses the test made."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.haproxy_admin import ServerRow, admin_command, server_rows, wait_until_answering
from tests.support.http_stubs import closed_port
from tests.support.local_haproxy import HAPROXY

# The operator's HAProxy. Choices, and why:
# - mode http, balance roundrobin: HAProxy picks a server per request (so a keep-alive client
#   connection never pins a replica), and roundrobin allows servers to change at run time.
# - retries 3 + option redispatch 1: a connection that cannot be made (refused: a replica died
#   under HAProxy's feet) is retried up to 3 times, each time on another server. Only connection
#   failures are retried (the default retry-on conn-failure): the request never reached a server,
#   so this is safe for any method. Resets or empty answers after the request was sent are NOT
#   retried (retry-on empty-response etc.), since that could run a non-idempotent request twice.
#   The rollover tests additionally assert that HAProxy never had to retry or redispatch: the
#   zero comes from rollover's sequencing, not from HAProxy hiding a dead server.
# - timeout connect 1s: loopback refuses or accepts at once; queue 2s: bounded wait if every
#   server is saturated instead of the default (timeout connect).
# - one log line per request on stdout (status, total ms, termination state, server): HAProxy's
#   own account of what every client got, independent of any client's clock or CPU share.
# - spare slots: ``server-template spare 1-8 127.0.0.1:1 disabled`` - rollover points one at each
#   replacement (they survive a reload, unlike dynamic servers); a replaced replica's server
#   becomes a spare again, so 8 is well above the 3 replacements in flight at once (step half).
CONFIG = """\
global
    stats socket {socket} level admin
    log stdout format raw local0 info
defaults
    mode http
    log global
    log-format "lb %ST %Ta %ts %s"
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout queue 2s
    retries 3
    option redispatch 1
frontend fe
    bind 127.0.0.1:{port}
    default_backend web
backend web
    balance roundrobin
{servers}
    server-template spare 1-8 127.0.0.1:1 disabled
"""

class HAProxy:
    """One HAProxy process in the foreground, with its runtime API on a unix socket."""

    host = "127.0.0.1"
    balancer_address = "published"  # its servers are the replicas' published loopback ports

    def __init__(self, directory: Path, servers: Sequence[tuple[str, str, int]], *, check: bool = False) -> None:
        """``servers``: (name, address, port) of each; ``check``: HAProxy's own health checks too."""
        self.directory = directory
        self.socket = directory / "admin.sock"
        self.port = closed_port()
        self.log = directory / "haproxy.log"
        options = " check inter 500" if check else ""
        lines = "\n".join(f"    server {name} {host}:{port}{options}" for name, host, port in servers)
        self.config = directory / "haproxy.cfg"
        self.config.write_text(CONFIG.format(socket=self.socket, port=self.port, servers=lines))
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [HAPROXY, "-f", str(self.config), "-db"], stdout=sink, stderr=subprocess.STDOUT
            )
        wait_until_answering(self.command, self.process, self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/version.txt"

    @property
    def spec(self) -> str:
        return f"haproxy:{self.socket}:web"

    def command(self, line: str) -> str:
        return admin_command(self.socket, line)

    def servers(self) -> list[ServerRow]:
        return server_rows(self.command("show servers state web"))

    def in_rotation(self) -> list[tuple[str, int]]:
        """(address, port) of the servers in rotation, sorted."""
        return sorted((row.addr, row.port) for row in self.servers() if row.in_rotation)

    def routed(self) -> list[str]:
        """``addr:port`` of the servers in rotation, sorted."""
        return sorted(f"{row.addr}:{row.port}" for row in self.servers() if row.in_rotation)

    def describe(self) -> str:
        return f"haproxy {self.backend_counters()}; haproxy log: {self.request_log()}"

    def assert_clean(self) -> None:
        """HAProxy's own account (independent of any client's CPU share): every request got a
        server's answer, none was cut off by a server, and HAProxy never had to cover for a dead
        server - no retry, no redispatch, no 5xx."""
        seen = self.request_log()
        assert seen.server_side_clean, seen
        counters = self.backend_counters()
        assert (counters["wretr"], counters["wredis"], counters["hrsp_5xx"]) == (0, 0, 0), counters

    def backend_counters(self) -> dict[str, int]:
        """The backend's retry/redispatch/error counters from ``show stat`` (CSV)."""
        text = self.command("show stat web 2 -1")
        header = text.splitlines()[0].lstrip("# ").split(",")
        for line in text.splitlines()[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") == "BACKEND":
                keys = ("wretr", "wredis", "econ", "eresp", "hrsp_5xx", "stot")
                return {key: int(row.get(key) or 0) for key in keys}
        raise AssertionError(f"no BACKEND row in: {text}")

    def request_log(self) -> HAProxyLog:
        return HAProxyLog.parse(self.log.read_text(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@dataclass(frozen=True)
class HAProxyLog:
    """What HAProxy logged per request: status, total active time, termination state, server."""

    statuses: Counter[int]
    terminations: Counter[str]  # "--" is a normal end; anything else is an abort or an error
    slowest_ms: int
    by_server: Counter[str]

    @classmethod
    def parse(cls, text: str) -> HAProxyLog:
        statuses: Counter[int] = Counter()
        terminations: Counter[str] = Counter()
        by_server: Counter[str] = Counter()
        slowest = 0
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 5 or fields[0] != "lb":
                continue
            statuses[int(fields[1])] += 1
            slowest = max(slowest, int(fields[2]))
            terminations[fields[3]] += 1
            by_server[fields[4]] += 1
        return cls(statuses, terminations, slowest, by_server)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def clean(self) -> bool:
        return set(self.statuses) <= {200} and set(self.terminations) <= {"--"}

    @property
    def server_side_clean(self) -> bool:
        """No 5xx and no session ended by a server, HAProxy itself or a missing server.

        Termination states starting with C/c (the client aborted or timed out: a starved client
        gave up) are the clients' business and are judged by the clients' own counts.
        """
        no_5xx = not any(status >= 500 for status in self.statuses)
        return no_5xx and all(state[0] in "-Cc" for state in self.terminations)

    def __str__(self) -> str:
        return (f"{self.requests} requests, statuses {dict(self.statuses)}, terminations"
                f" {dict(self.terminations)}, slowest {self.slowest_ms} ms")
