"""A real Caddy (the Debian package's binary), in the foreground, in front of stub servers, for the
balancer tests; see the ``caddy`` fixture."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_stubs import StubServer, closed_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
ROUTE = "app"


@dataclass
class RunningCaddy:
    admin_url: str
    url: str

    def get(self, path: str) -> Any:
        """The admin API's answer, for assertions (the code under test speaks asyncio)."""
        response = httpx.get(self.admin_url + path, timeout=5)
        return response.json() if response.status_code == 200 else None

    def upstreams(self) -> list[str]:
        return [u["dial"] for u in self.get(f"/id/{ROUTE}/handle/0/upstreams")]


class CaddyLauncher:
    """Caddy processes in the foreground, each with its own home; killed by handle at the end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._processes: list[subprocess.Popen[bytes]] = []

    def launch(self, servers: Sequence[StubServer]) -> RunningCaddy:
        instance = self._workdir / str(len(self._processes))
        instance.mkdir()
        admin, port = closed_port(), closed_port()
        config = instance / "caddy.json"
        config.write_text(json.dumps(_config(admin, port, [f"127.0.0.1:{s.port}" for s in servers])))
        home = {"HOME": str(instance), "XDG_CONFIG_HOME": str(instance), "XDG_DATA_HOME": str(instance)}
        with (instance / "caddy.log").open("wb") as sink:
            self._processes.append(subprocess.Popen(
                [CADDY, "run", "--config", str(config)], stdout=sink, stderr=subprocess.STDOUT, env=home
            ))
        running = RunningCaddy(f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{port}")
        self._wait_until_answering(running, self._processes[-1], instance / "caddy.log")
        return running

    @staticmethod
    def _wait_until_answering(caddy: RunningCaddy, process: subprocess.Popen[bytes], log: Path) -> None:
        """Caddy announces readiness only in its log: ask the admin API (deadline 10 s)."""
        async def ready() -> None:
            async with asyncio.timeout(10), httpx.AsyncClient() as client:
                while process.poll() is None:
                    try:
                        if (await client.get(caddy.admin_url + "/config/")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.02)
            raise AssertionError(f"caddy exited: {log.read_text()}")

        asyncio.run(ready())

    def stop_all(self) -> None:
        for process in self._processes:
            process.kill()
            process.wait(timeout=10)


def _config(admin: int, port: int, dials: list[str]) -> dict[str, Any]:
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial} for dial in dials],
        "load_balancing": {"selection_policy": {"policy": "round_robin"}},
    }
    server = {"listen": [f"127.0.0.1:{port}"], "routes": [{"@id": ROUTE, "handle": [proxy]}],
              "automatic_https": {"disable": True}}
    return {"admin": {"listen": f"127.0.0.1:{admin}", "config": {"persist": False}},
            "apps": {"http": {"servers": {"web": server}}}}
