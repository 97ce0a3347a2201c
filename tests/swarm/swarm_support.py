"""Helpers for the Swarm backend tests: a throwaway swarm, services on it, and event logs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from rollover.backends.swarm import SwarmBackend
from rollover.backends.swarm_tasks import lock_name
from rollover.model import ReplicaEvent

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "swarm-cluster.sh"
APP_DIR = ROOT / "tests" / "images" / "app"
APP_V1 = "rollover-test/app:v1"
APP_V2 = "rollover-test/app:v2"
APP_BROKEN = "rollover-test/app:broken"
OVERLAY = "rsw-net"


def run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class SwarmCluster:
    hosts: dict[str, str]  # node hostname -> its docker host
    client: Any = field(repr=False)  # docker SDK client of the manager

    @property
    def manager(self) -> str:
        return self.hosts["rsw-n1"]

    def node_address(self, hostname: str) -> str:
        return f"10.213.0.{10 + int(hostname.rsplit('n', 1)[1])}"


@contextlib.contextmanager
def running_cluster(size: int, app_context: Path) -> Iterator[SwarmCluster]:
    """Up, images in, overlay network made; always down again afterwards. The images are built
    once (against node 1 of the first cluster) and kept as a tarball for the next cluster."""
    try:
        listing = run(str(CLUSTER_SCRIPT), "up", str(size))
        hosts = dict(line.split() for line in listing.splitlines() if line.strip())
        images = app_context / "images.tar"
        if not images.exists():
            build_app_images(hosts["rsw-n1"], app_context, images)
        run(str(CLUSTER_SCRIPT), "load", "--file", str(images))
        client = docker.DockerClient(base_url=hosts["rsw-n1"])
        client.networks.create(OVERLAY, driver="overlay", attachable=True)
        try:
            yield SwarmCluster(hosts, client)
        finally:
            client.close()
    finally:
        run(str(CLUSTER_SCRIPT), "down")


def build_app_images(docker_host: str, context: Path, tarball: Path) -> None:
    variants = {APP_V1: ["VERSION=v1"], APP_V2: ["VERSION=v2"],
                APP_BROKEN: ["VERSION=broken", "HEALTH_FILE=missing.txt"]}
    env = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    for tag, build_args in variants.items():
        args = [arg for value in build_args for arg in ("--build-arg", value)]
        run("docker", "-H", docker_host, "build", "-q", *args, "-t", tag, str(context), env=env)
    run("docker", "-H", docker_host, "save", "-o", str(tarball), *variants)


@dataclass
class ServiceFactory:
    cluster: SwarmCluster
    made: list[str] = field(default_factory=list)

    def __call__(self, image: str = APP_V1, *, replicas: int = 2, host_port: bool = False,
                 global_mode: bool = False, healthcheck: bool = True, wait: bool = True) -> str:
        """A service of the test app; returns once all its tasks run (healthy)."""
        name = f"rsw-{uuid.uuid4().hex[:8]}"
        ports = [{"TargetPort": 8080, "Protocol": "tcp", "PublishMode": "host"}] if host_port else []
        endpoint = {"Mode": "vip", "Ports": ports} if host_port else {"Mode": "dnsrr"}
        mode = {"Global": {}} if global_mode else {"Replicated": {"Replicas": replicas}}
        container: dict[str, Any] = {"Image": image, "StopGracePeriod": 5_000_000_000}
        if not healthcheck:
            container["Healthcheck"] = {"Test": ["NONE"]}
        self.cluster.client.api.create_service(
            {"ContainerSpec": container, "Networks": [{"Target": OVERLAY}],
             "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000}},
            name=name, mode=mode, endpoint_spec=endpoint,
        )
        self.made.append(name)
        if wait:
            expected = len(self.cluster.hosts) if global_mode else replicas
            wait_for(lambda: len(running_tasks(self.cluster, name)) == expected, 30, f"{name} to run")
        return name

    def remove_all(self) -> None:
        for name in self.made:
            with contextlib.suppress(docker.errors.NotFound):
                self.cluster.client.api.remove_service(name)
            with contextlib.suppress(docker.errors.NotFound):
                self.cluster.client.api.remove_config(lock_name(name))


def running_tasks(cluster: SwarmCluster, service: str) -> list[dict[str, Any]]:
    tasks = cluster.client.api.tasks(filters={"service": service})
    return [task for task in tasks
            if task["DesiredState"] == "running" and task["Status"]["State"] == "running"]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Test-side settling only (the code under test never polls): check every 0.2 s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


class EventLog:
    """Collects a backend's events in the background; tests wait for the one they expect."""

    def __init__(self, events: AsyncIterator[ReplicaEvent]) -> None:
        self.seen: list[ReplicaEvent] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read(events))

    async def _read(self, events: AsyncIterator[ReplicaEvent]) -> None:
        async for event in events:
            self.seen.append(event)
            self._arrived.set()

    async def wait_for(self, kind: type, replica_id: str, timeout_s: float) -> ReplicaEvent:
        async def found() -> ReplicaEvent:
            while True:
                for event in self.seen:
                    if isinstance(event, kind) and event.replica_id == replica_id:
                        return event
                if self._reader.done():
                    self._reader.result()
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(found(), timeout_s)

    def close(self) -> None:
        self._reader.cancel()


def backend_for(cluster: SwarmCluster, service: str, loop: asyncio.AbstractEventLoop, **options: Any) -> SwarmBackend:
    options.setdefault("node_hosts", cluster.hosts)
    return SwarmBackend(service, docker_host=cluster.manager, clock=loop.time, **options)


def in_loop(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
    return loop.run_until_complete(asyncio.wait_for(work, timeout_s))



# -- for the CLI tests: where tasks answer, and an HAProxy in front of them ------------------------


def node_addresses(cluster: SwarmCluster) -> dict[str, str]:
    """Node id -> the address the node advertises (10.213.0.1x), from the manager."""
    return {node["ID"]: node["Status"]["Addr"] for node in cluster.client.api.nodes()}


def task_endpoints(cluster: SwarmCluster, service: str) -> dict[str, tuple[str, int]]:
    """Running task id -> (node address, host port) of its host-mode published 8080/tcp."""
    addresses = node_addresses(cluster)
    endpoints: dict[str, tuple[str, int]] = {}
    for task in running_tasks(cluster, service):
        for port in (task["Status"].get("PortStatus") or {}).get("Ports") or []:
            if port.get("TargetPort") == 8080 and port.get("PublishMode") == "host":
                endpoints[task["ID"]] = (addresses[task["NodeID"]], int(port["PublishedPort"]))
    return endpoints


# The operator's HAProxy, as in tests/zero_downtime (mode http, roundrobin, retries 3 + redispatch,
# spare slots, one log line per request), but its servers are tasks' host-mode ports on the nodes.
NODE_HAPROXY_CONFIG = """\
global
    stats socket {socket} level admin
    log stdout format raw local0 info
defaults
    mode http
    log global
    log-format "rsw %ST %Ta %ts %s"
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


class NodeHAProxy:
    """HAProxy on the host (foreground, killed by its Popen handle) whose backend ``web`` carries
    one server per ``(address, port)``; it reaches the nodes through the cluster's host leg."""

    def __init__(self, directory: Path, servers: list[tuple[str, int]]) -> None:
        from local_haproxy import HAPROXY

        self.socket = directory / "admin.sock"
        with contextlib.closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        lines = "\n".join(f"    server s{number} {host}:{port}" for number, (host, port) in enumerate(servers, 1))
        config = directory / "haproxy.cfg"
        config.write_text(NODE_HAPROXY_CONFIG.format(socket=self.socket, port=self.port, servers=lines))
        self.log = directory / "haproxy.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=sink,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                if self.command("show info").startswith("Name: HAProxy"):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.log.read_text()}")
            time.sleep(0.02)  # polled: HAProxy announces no readiness

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/version.txt"

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(self.socket))
            client.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: client.recv(65536), b"")).decode()

    def in_rotation(self) -> list[tuple[str, int]]:
        """(address, port) of the servers HAProxy sends traffic to now (running, not drain/maint)."""
        lines = self.command("show servers state web").splitlines()
        header = lines[1].lstrip("# ").split()
        rows = [dict(zip(header, line.split(), strict=False)) for line in lines[2:] if line.strip()]
        return sorted((row["srv_addr"], int(row["srv_port"])) for row in rows
                      if row["srv_op_state"] == "2" and not int(row["srv_admin_state"]) & 0x3B)

    def counters(self) -> dict[str, int]:
        """Backend retries, redispatches, connection/response errors and 5xx from ``show stat``."""
        text = self.command("show stat web 2 -1")
        header = text.splitlines()[0].lstrip("# ").split(",")
        for line in text.splitlines()[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") == "BACKEND":
                return {key: int(row.get(key) or 0) for key in ("wretr", "wredis", "econ", "eresp", "hrsp_5xx")}
        raise AssertionError(f"no BACKEND row in: {text}")

    def statuses(self) -> dict[str, int]:
        """HAProxy's own account: how many requests got each status (its log, one line a request)."""
        counts: dict[str, int] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) == 5 and fields[0] == "rsw":
                counts[fields[1]] = counts.get(fields[1], 0) + 1
        return counts

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
