"""HAProxy's runtime API as the tests and bench/ speak it: blocking, one command per connection.

rollover's own client (``rollover.balancers.haproxy_api``) speaks asyncio; a test asserts from
plain code and the bench from threads, so they need a blocking twin of ``RuntimeApi.execute``.
What HAProxy replies is read with rollover's own parser (``parse_servers_state``), plus the one
column it leaves out: whether the server is up (``srv_op_state``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rollover.balancers.haproxy_api import ServerState, parse_servers_state

RUNNING = 2  # srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping


def admin_command(admin_socket: Path, line: str, *, timeout: float = 5.0) -> str:
    """One runtime-API command on the unix socket; HAProxy closes the connection after its reply."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout)
        client.connect(str(admin_socket))
        client.sendall(line.encode() + b"\n")
        return b"".join(iter(lambda: client.recv(65536), b"")).decode()


def wait_until_answering(command: Callable[[str], str], process: subprocess.Popen[bytes], log: Path,
                         timeout: float = 10.0) -> None:
    """Until ``show info`` answers; RuntimeError with HAProxy's log if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):  # the socket is not there yet
            if command("show info").startswith("Name: HAProxy"):
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"haproxy did not start: {log.read_text()}")
        time.sleep(0.02)  # polled: HAProxy announces no readiness


@dataclass(frozen=True)
class ServerRow(ServerState):
    """A ``show servers state`` line as rollover reads it, and whether HAProxy has the server up."""

    op_state: int = 0

    @property
    def in_rotation(self) -> bool:
        """Up, and neither in maintenance nor draining: it gets new requests."""
        return self.op_state == RUNNING and not (self.in_maintenance or self.draining)


def server_rows(reply: str) -> list[ServerRow]:
    """``show servers state <backend>``, parsed; ValueError on anything else."""
    lines = reply.splitlines()
    states = parse_servers_state(reply)
    op_state = lines[1].lstrip("# ").split().index("srv_op_state")
    rows = [line.split() for line in lines[2:] if line.strip() and not line.startswith("#")]
    return [ServerRow(state.name, state.addr, state.port, state.admin_state, int(row[op_state]))
            for state, row in zip(states, rows, strict=True)]
