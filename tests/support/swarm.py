"""Helpers for the Swarm backend tests: a throwaway swarm, services on it, and event logs."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from rollover.backends.swarm.backend import SwarmBackend
from rollover.backends.swarm.lock import lock_name
from rollover.core.model import ReplicaEvent
from tests.support.engine import APP_BROKEN, APP_V1, APP_V2, BUILD_ENV  # the same test app, built on the swarm nodes

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "swarm-cluster.sh"
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
    for tag, build_args in variants.items():
        args = [arg for value in build_args for arg in ("--build-arg", value)]
        run("docker", "-H", docker_host, "build", "-q", *args, "-t", tag, str(context), env=BUILD_ENV)
    run("docker", "-H", docker_host, "save", "-o", str(tarball), *variants)


@dataclass
class ServiceFactory:
    cluster: SwarmCluster
    made: list[str] = field(default_factory=list)

    def __call__(self, image: str = APP_V1, *, replicas: int = 2, host_port: bool = False,
                 global_mode: bool = False, healthcheck: bool = True, wait: bool = True,
                 ignores_sigterm: bool = False, stop_grace_s: int = 5,
                 update_config: dict[str, Any] | None = None) -> str:
        """A service of the test app; returns once all its tasks run (healthy).

        ``ignores_sigterm``: httpd as PID 1 (no entrypoint trapping TERM), so every stop takes
        the whole ``stop_grace_s``, as many real images do. ``update_config``: the user's own."""
        name = f"rsw-{uuid.uuid4().hex[:8]}"
        ports = [{"TargetPort": 8080, "Protocol": "tcp", "PublishMode": "host"}] if host_port else []
        endpoint = {"Mode": "vip", "Ports": ports} if host_port else {"Mode": "dnsrr"}
        mode = {"Global": {}} if global_mode else {"Replicated": {"Replicas": replicas}}
        container: dict[str, Any] = {"Image": image, "StopGracePeriod": stop_grace_s * 1_000_000_000}
        if ignores_sigterm:
            container["Command"] = ["httpd", "-f", "-p", "8080", "-h", "/www"]
        if not healthcheck:
            container["Healthcheck"] = {"Test": ["NONE"]}
        self.cluster.client.api.create_service(
            {"ContainerSpec": container, "Networks": [{"Target": OVERLAY}],
             "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000}},
            name=name, mode=mode, endpoint_spec=endpoint, update_config=update_config,
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
