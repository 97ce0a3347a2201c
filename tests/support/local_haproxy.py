"""A real HAProxy (the Debian package's binary), in the foreground, for tests; see the ``haproxy`` fixture."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.http_stubs import StubServer, closed_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """\
global
    stats socket {socket} level admin expose-fd listeners
    stats socket ipv4@127.0.0.1:{api_port} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance {balance}
{servers}
"""


@dataclass
class RunningHAProxy:
    admin_socket: Path
    tcp_api: str  # the same runtime API on tcp:127.0.0.1:PORT
    url: str
    log: Path

    def command(self, line: str) -> str:
        """One runtime-API command, for assertions (the code under test speaks asyncio)."""
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(self.admin_socket))
            client.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: client.recv(65536), b"")).decode()

    def servers(self) -> dict[str, tuple[int, int]]:
        """Server name -> (port, srv_admin_state) of the backend, as HAProxy has it now."""
        lines = self.command("show servers state app").splitlines()[2:]
        return {f[3]: (int(f[18]), int(f[6])) for f in (line.split() for line in lines if line.strip())}


class HAProxyLauncher:
    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._processes: list[subprocess.Popen[bytes]] = []

    def launch(
        self, servers: Sequence[StubServer], balance: str = "roundrobin", extra: Sequence[str] = ()
    ) -> RunningHAProxy:
        """HAProxy whose backend ``app`` carries ``servers`` (named after them) plus ``extra`` lines."""
        lines = [f"    server {s.name} 127.0.0.1:{s.port}" for s in servers] + [f"    {x}" for x in extra]
        instance = self._workdir / str(len(self._processes))  # files of their own per launch
        instance.mkdir()
        admin_socket, port, api_port = instance / "admin.sock", closed_port(), closed_port()
        config = instance / "haproxy.cfg"
        config.write_text(
            CONFIG.format(socket=admin_socket, api_port=api_port, port=port, balance=balance, servers="\n".join(lines))
        )
        log = instance / "haproxy.log"
        with log.open("wb") as sink:
            self._processes.append(
                subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=sink, stderr=subprocess.STDOUT)
            )
        running = RunningHAProxy(admin_socket, f"tcp:127.0.0.1:{api_port}", f"http://127.0.0.1:{port}", log)
        self._wait_until_answering(running, self._processes[-1])
        return running

    @staticmethod
    def _wait_until_answering(running: RunningHAProxy, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                if running.command("show info").startswith("Name: HAProxy"):
                    return
            except OSError:
                pass  # the socket is not there yet
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {running.log.read_text()}")
            time.sleep(0.02)  # the condition is polled: HAProxy does not announce readiness

    def stop_all(self) -> None:
        for process in self._processes:
            process.kill()
            process.wait(timeout=10)
