"""Caddy and Traefik in front of a Compose service's replicas, for the zero-downtime proof and for
bench/side_by_side.py (both import it as ``tests.support.fronts``).

Both reach the replicas at their IP on the Compose project's network, port 8080, and each keeps
an access log: its own account of what every client got, beside the clients' own.

- Caddy (the host's binary) runs in the network namespace of a sandbox container on the project's
  network. Caddy rebinds its listener on every config change, and Linux resets the connections
  queued on the closing listener unless ``net.ipv4.tcp_migrate_req=1`` (rollover's README asks
  it of Caddy hosts): the sandbox is made with that sysctl, so the host's own setting is never
  touched. Clients and rollover reach Caddy (proxy and admin API) at the sandbox's IP.
- Traefik runs on the host with its Docker provider, routing on the project's network and
  constrained to containers carrying this front's ``rtest-zd.site`` label; the replicas get the
  labels and the drain-marker healthcheck from ``traefik_compose_options``.

Nothing here is left behind by ``stop()``: the process is killed by its handle, the sandbox
container removed by name. ``stop()`` may be called whatever ``start()`` got to.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import docker.errors
import httpx

from rollover.balancers.traefik import DEFAULT_DRAIN_MARKER
from tests.support.http_stubs import closed_port as free_loopback_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
TRAEFIK = shutil.which("traefik") or str(Path(sys.executable).with_name("traefik"))
CONTAINER_PORT = 8080
ROUTE = "web"  # the @id of Caddy's route


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until it holds (neither balancer announces readiness)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        time.sleep(0.02)


def project_network(project: str) -> str:
    """The network Compose makes for a project's services (``docker compose down`` removes it)."""
    return f"{project}_default"


def network_addresses(client: Any, project: str, network: str) -> list[str]:
    """``ip:8080`` of every running replica of the project's ``web`` on ``network``, sorted."""
    filters = {"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=web"],
               "status": "running"}
    found = []
    for container in client.containers.list(filters=filters):
        ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        found.append(f"{ip}:{CONTAINER_PORT}")
    return sorted(found)


def _dial(url: str) -> str:
    """'http://172.18.0.5:8080' -> '172.18.0.5:8080'."""
    return url.split("://", 1)[-1].rstrip("/")


def _answers_ok(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


class NetworkFront:
    """A balancer reaching the replicas on ``network``, clients reaching it at ``host:port``, and
    its own account of the requests from its access log."""

    def __init__(self, network: str, workdir: Path, host: str, port: int) -> None:
        self.network = network
        self.workdir = workdir
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/version.txt"

    @property
    def balancer_address(self) -> str:
        return f"network:{self.network}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def statuses(self) -> Counter[int]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{type(self).__name__} access log: statuses {dict(self.statuses())}"

    def assert_clean(self) -> None:
        """No request answered by the balancer with a 5xx (a replica it could not reach, or lost)."""
        statuses = self.statuses()
        assert statuses and not any(status >= 500 for status in statuses), self.describe()


class CaddyFront(NetworkFront):
    """Caddy 2 with one route (``@id`` web) whose reverse_proxy holds one upstream per replica."""

    def __init__(self, client: Any, network: str, name: str, workdir: Path) -> None:
        super().__init__(network, workdir, "", 80)  # the host is the sandbox's IP, known once it runs
        self.client = client
        self.name = name  # the sandbox container's

    @property
    def log(self) -> Path:
        return self.workdir / "caddy.log"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:2019"

    @property
    def spec(self) -> str:
        return f"caddy:{self.admin_url}:{ROUTE}"

    def start(self, image: str, upstreams: Sequence[str]) -> None:
        """The sandbox (``image`` with its healthcheck off), then Caddy in its network namespace."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        sandbox = self.client.containers.run(
            image, name=self.name, detach=True, network=self.network, healthcheck={"test": ["NONE"]},
            sysctls={"net.ipv4.tcp_migrate_req": "1"},
        )
        sandbox.reload()
        self.host = sandbox.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        config = self.workdir / "caddy.json"
        config.write_text(json.dumps(self._config(upstreams)))
        home = {"HOME": str(self.workdir), "XDG_CONFIG_HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir)}
        namespace = f"--net=/proc/{sandbox.attrs['State']['Pid']}/ns/net"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(["nsenter", namespace, CADDY, "run", "--config", str(config)],
                                            stdout=sink, stderr=subprocess.STDOUT, env=home)
        wait_until(self._answering, 15, f"Caddy to answer at {self.url}")

    def _answering(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        return _answers_ok(self.admin_url + "/config/") and _answers_ok(self.url)

    def _config(self, upstreams: Sequence[str]) -> dict[str, Any]:
        proxy = {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": dial} for dial in upstreams],
            "load_balancing": {"selection_policy": {"policy": "round_robin"}},  # no retries: nothing is hidden
        }
        server = {"listen": [f"{self.host}:{self.port}"], "routes": [{"@id": ROUTE, "handle": [proxy]}],
                  "automatic_https": {"disable": True}, "logs": {}}  # an access log line per request
        return {"admin": {"listen": f"{self.host}:2019", "config": {"persist": False}},
                "logging": {"logs": {"default": {"level": "DEBUG"}}},  # the upstream of each request, too
                "apps": {"http": {"servers": {"web": server}}}}

    def routed(self) -> list[str]:
        """The upstreams of the route, sorted; a handler left behind (parked) shows as ``parked:``."""
        handlers = httpx.get(f"{self.admin_url}/id/{ROUTE}/handle", timeout=5).json()
        dials = [u["dial"] for u in handlers[0].get("upstreams") or []]
        dials += [f"parked:{u['dial']}" for handler in handlers[1:] for u in handler.get("upstreams") or []]
        return sorted(dials)

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def statuses(self) -> Counter[int]:
        """HTTP status per request, from Caddy's access log."""
        return Counter(int(e.get("status", 0)) for e in self._entries() if e.get("logger") == "http.log.access")

    def describe(self) -> str:
        """Statuses, and where each request that failed or took over 1 s went (status 0: the client
        gave up first), from the reverse proxy's debug lines."""
        entries = self._entries()
        upstream = {(e["request"]["remote_ip"], e["request"]["remote_port"]): (e.get("upstream"), e.get("error"))
                    for e in entries if e.get("msg") == "upstream roundtrip" and "request" in e}
        bad = [(round(e["ts"] - e["duration"], 3), e["status"], round(e["duration"], 3),
                upstream.get((e["request"]["remote_ip"], e["request"]["remote_port"])))
               for e in entries if e.get("logger") == "http.log.access" and (e["status"] != 200 or e["duration"] > 1)]
        return f"{super().describe()}; {len(bad)} failed or slow (start, status, s, upstream): {bad[:20]}"

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(self.name, force=True)


def traefik_compose_options(site: str) -> dict[str, Any]:
    """What the README asks of a service behind Traefik: identical labels on every replica, and a
    healthcheck in the compose file that also fails while the drain marker is non-empty (every
    0.5 s, 3 retries: Traefik hears of a drain within about 1.5 s)."""
    service = f"rtest-zd-{site}"
    labels = {
        "traefik.enable": "true",
        "rtest-zd.site": site,
        f"traefik.http.routers.{service}.rule": "PathPrefix(`/`)",
        f"traefik.http.routers.{service}.entrypoints": "web",
        f"traefik.http.routers.{service}.service": service,
        f"traefik.http.services.{service}.loadbalancer.server.port": str(CONTAINER_PORT),
    }
    check = f"test ! -s {DEFAULT_DRAIN_MARKER} && wget -q -O- http://127.0.0.1:{CONTAINER_PORT}/version.txt >/dev/null"
    healthcheck = {"test": json.dumps(["CMD-SHELL", check]), "interval": "500ms", "timeout": "2s", "retries": "3"}
    return {"labels": labels, "healthcheck": healthcheck}


class TraefikFront(NetworkFront):
    """Traefik 3 on the host: entry point ``web`` and its API on free 127.0.0.1 ports."""

    def __init__(self, network: str, site: str, workdir: Path, throttle: str = "100ms") -> None:
        """``throttle``: Traefik's providersThrottleDuration (its own default is 2s, see the README)."""
        super().__init__(network, workdir, "127.0.0.1", free_loopback_port())
        self.site = site
        self.throttle = throttle
        self.api_url = f"http://127.0.0.1:{free_loopback_port()}"

    @property
    def service(self) -> str:
        return f"rtest-zd-{self.site}@docker"

    @property
    def spec(self) -> str:
        return f"traefik:{self.api_url}:{self.service}"

    @property
    def log(self) -> Path:
        return self.workdir / "traefik.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def start(self, upstreams: Sequence[str], timeout: float = 45) -> None:
        """Launch Traefik and wait until it routes to exactly ``upstreams``: it re-reads the
        engine's containers on their events, which lag on a busy shared engine."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            TRAEFIK, "--global.checknewversion=false", "--global.sendanonymoususage=false",
            f"--providers.providersThrottleDuration={self.throttle}",  # 100ms: under half the healthcheck interval
            "--providers.docker=true", "--providers.docker.exposedbydefault=false",
            f"--providers.docker.network={self.network}",
            f"--providers.docker.constraints=Label(`rtest-zd.site`,`{self.site}`)",
            f"--entrypoints.web.address=127.0.0.1:{self.port}",
            f"--entrypoints.traefik.address={self.api_url.removeprefix('http://')}",
            "--api.insecure=true", "--log.level=INFO",
            "--accesslog=true", f"--accesslog.filepath={self.access_log}", "--accesslog.format=json",
        ]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        wanted = sorted(upstreams)
        wait_until(lambda: self._alive() and self.routed() == wanted, timeout, f"Traefik to route to {wanted}")

    def _alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        return True

    def routed(self) -> list[str]:
        """The servers of the service, as Traefik's API lists them, sorted."""
        try:
            response = httpx.get(f"{self.api_url}/api/http/services/{self.service}", timeout=5)
        except httpx.TransportError:
            return []
        if response.status_code != 200:
            return []
        return sorted(_dial(s["url"]) for s in response.json()["loadBalancer"].get("servers") or [])

    def _requests(self) -> list[dict[str, Any]]:
        entries = []
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and "DownstreamStatus" in entry:
                    entries.append(entry)
        return entries

    def statuses(self) -> Counter[int]:
        """HTTP status per request, from Traefik's access log."""
        return Counter(int(e["DownstreamStatus"]) for e in self._requests())

    def describe(self) -> str:
        """Statuses, and where each request that failed or took over 1 s went."""
        bad = [(e.get("StartUTC", "")[11:23], e["DownstreamStatus"], round(e.get("Duration", 0) / 1e9, 3),
                e.get("ServiceAddr")) for e in self._requests()
               if e["DownstreamStatus"] != 200 or e.get("Duration", 0) > 1e9]
        return f"{super().describe()}; {len(bad)} failed or slow (start UTC, status, s, server): {bad[:20]}"
