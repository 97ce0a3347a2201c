"""A real HAProxy (the Debian package's binary), in the foreground, for tests; see the ``haproxy`` fixture."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.haproxy_admin import admin_command, server_rows, wait_until_answering
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
    default_backend {backend}
backend {backend}
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
        return admin_command(self.admin_socket, line)

    def servers(self) -> dict[str, tuple[int, int]]:
        """Server name -> (port, srv_admin_state) of the backend, as HAProxy has it now."""
        return {row.name: (row.port, row.admin_state) for row in server_rows(self.command("show servers state app"))}


class HAProxyLauncher:
    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._processes: list[subprocess.Popen[bytes]] = []

    def launch(
        self, servers: Sequence[StubServer], balance: str = "roundrobin", extra: Sequence[str] = (),
        backend: str = "app",
    ) -> RunningHAProxy:
        """HAProxy whose backend ``backend`` carries ``servers`` (named after them) plus ``extra``
        lines; its frontend is ``web``."""
        lines = [f"    server {s.name} 127.0.0.1:{s.port}" for s in servers] + [f"    {x}" for x in extra]
        instance = self._workdir / str(len(self._processes))  # files of their own per launch
        instance.mkdir()
        admin_socket, port, api_port = instance / "admin.sock", closed_port(), closed_port()
        config = instance / "haproxy.cfg"
        config.write_text(
            CONFIG.format(socket=admin_socket, api_port=api_port, port=port, balance=balance, backend=backend,
                          servers="\n".join(lines))
        )
        log = instance / "haproxy.log"
        with log.open("wb") as sink:
            self._processes.append(
                subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=sink, stderr=subprocess.STDOUT)
            )
        running = RunningHAProxy(admin_socket, f"tcp:127.0.0.1:{api_port}", f"http://127.0.0.1:{port}", log)
        wait_until_answering(running.command, self._processes[-1], log)
        return running

    def stop_all(self) -> None:
        for process in self._processes:
            process.kill()
            process.wait(timeout=10)
