"""Side by side: what clients behind a balancer see while 6 replicas go from v1 to v2, by method.

    .venv/bin/python -m bench.side_by_side [--rate 200] [--client raw|probe] [--no-swarm]

The same engine, the same app image (busybox httpd, healthcheck every 0.5 s, quick TERM), 6
replicas, one balancer (HAProxy on 127.0.0.1 unless the row says Caddy or Traefik) and the same
load for every row: --rate requests/s through the balancer, a new connection per request, 2 s
timeout, open loop. The default client is a small
raw-socket one that holds its rate on a loaded machine; ``--client probe`` uses rollover's own
Probe class instead (same figures, but it falls behind its rate on a busy event loop). The load
starts just before the method's command and stops once the method has converged: all 6 replicas
run v2 and the balancer sends only to them. Wall time is that span.

Rows:
  rollover + HAProxy       ``rollover redeploy --balancer haproxy:...`` start-first, step 1 and 2:
                           random published ports, rollover admits/drains through the runtime API.
  rollover + Caddy         ``--balancer caddy:ADMIN_URL:web``, start-first, step 1 and 2: Caddy's
                           upstreams are the replicas' IPs on the project's network; Caddy runs in
                           a sandbox container's network namespace with net.ipv4.tcp_migrate_req=1
                           (as rollover's README asks of Caddy hosts), the load goes to its IP.
  rollover + Traefik       ``--balancer traefik:API_URL:SERVICE``, start-first, step 1 and 2:
                           Traefik on 127.0.0.1 with its Docker provider (labels, and the
                           drain-marker healthcheck in the compose file).
  compose up -d            six services web1..web6 on fixed loopback ports (a static HAProxy
                           config can only name ports known in advance; replicas of one service
                           cannot have fixed ports each), HAProxy health checks (inter 500 ms) and
                           retries/redispatch; ``docker compose up -d --wait`` recreates all six.
  compose, one by one      the same, but ``up -d --wait webN`` for N = 1..6: a careful operator.
  swarm start-first        ``docker service update --update-parallelism 2 --update-order
                           start-first`` on a one-node swarm (its own dockerd in a network
                           namespace, scripts/swarm-cluster.sh), tasks on random host-mode ports of
                           the node; HAProxy learns them like registrator/docker-gen would: a task
                           container that turns healthy takes a server slot, one that is killed
                           (the stop signal) leaves it; HAProxy health checks and retries as above.
  lower bound              waves x time-to-healthy, from rollover's own events.

Everything is named rtest-zd-bench-* (the swarm: namespaces rtest-zd-*, 10.213.50.0/24) and
removed at the end, also on failure or Ctrl-C. Caddy and Traefik are launched by the zero-downtime
tests' own ``tests/support/fronts.py``, and compose files written by
``tests/support/engine.py``: one definition each for the tests and this bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from rollover.probe import Probe, ProbeReport
from tests.support.engine import compose_yaml
from tests.support.fronts import (
    CONTAINER_PORT,
    CaddyFront,
    TraefikFront,
    free_loopback_port,
    project_network,
    traefik_compose_options,
)
from tests.support.haproxy_admin import admin_command, server_rows, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
ROLLOVER = str(Path(sys.executable).with_name("rollover"))
HAPROXY = "/usr/sbin/haproxy"
V1, V2 = "rollover-test/app:v1", "rollover-test/app:v2"
REPLICAS = 6
SWARM_ENV = {"RSW": "rtest-zd", "RSW_NET": "10.213.50"}  # apart from other suites' swarms (rsw, 10.213.0)
SWARM_NODE_IP = "10.213.50.11"
SWARM_SOCKET = "unix:///run/rtest-zd-n1/docker.sock"
SWARM_SERVICE = "rtest-zd-bench-web"

HAPROXY_CONFIG = """\
global
    stats socket {socket} level admin
defaults
    mode http
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
"""


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Row:
    method: str
    failed: int | None = None
    sent: int | None = None
    gap_s: float | None = None
    wall_s: float | None = None
    note: str = ""
    failures_by_kind: dict[str, int] | None = None


class HAProxy:
    """One HAProxy in the foreground, in a short temporary directory of its own (socket path < 108)."""

    balancer_address = "published"

    def __init__(self, server_lines: Sequence[str]) -> None:
        self.directory = directory = Path(tempfile.mkdtemp(prefix="rtest-zd-bench-"))
        self.socket = directory / "admin.sock"
        self.port = free_loopback_port()
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(socket=self.socket, port=self.port,
                                                servers="\n".join(f"    {line}" for line in server_lines)))
        self._log = (directory / "haproxy.log").open("wb")
        self.process = subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self._lock = threading.Lock()
        wait_until_answering(self.command, self.process, directory / "haproxy.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/version.txt"

    def command(self, line: str) -> str:
        with self._lock:
            return admin_command(self.socket, line)

    @property
    def spec(self) -> str:
        return f"haproxy:{self.socket}:web"

    def routed(self) -> list[str]:
        return [f"{addr}:{port}" for addr, port in self.in_rotation()]

    def in_rotation(self) -> list[tuple[str, int]]:
        """(addr, port) of the servers that get traffic now: up, not in maintenance or drain."""
        return sorted((row.addr, row.port) for row in server_rows(self.command("show servers state web"))
                      if row.in_rotation)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """HAProxy and the engine's port tables publish no events: poll (20 Hz) with a deadline."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not converged within {timeout:g}s: {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Load:
    client: str  # "raw" or "probe"
    rate: float


async def measured(proxy: HAProxy | CaddyFront | TraefikFront, load: Load, action: Callable[[], Awaitable[None]],
                   converged: Callable[[], bool]) -> tuple[ProbeReport, float]:
    """Load through the balancer from just before ``action`` until ``converged`` holds after it."""
    loop = asyncio.get_running_loop()
    probe = make_client(load.client, proxy.url, load.rate)
    await probe.start()
    started = loop.time()
    try:
        await action()
        await until(converged, 60, "6 replicas on v2, only they in HAProxy's rotation")
        wall = loop.time() - started
    finally:
        report = await probe.stop()
    return report, wall


def row_from(method: str, report: ProbeReport, wall: float, note: str = "") -> Row:
    return Row(method, report.failed, report.sent, report.longest_gap_s, wall, note, dict(report.failures_by_kind))


class RawClient:
    """An open-loop client on raw asyncio streams: GET on a fixed schedule, a new connection each.

    Unlike rollover's Probe (which sends one request per event-loop wake-up and so falls behind
    on a busy loop, silently), it sends every request that fell due at each wake-up, and a request
    costs a fraction of an httpx one: the rate holds on a loaded two-core machine. Same failure
    kinds and the same "longest gap" (longest time without a successful answer) as the Probe.
    """

    def __init__(self, url: str, rate: float, timeout: float = 2.0) -> None:
        address = url.removeprefix("http://")
        host_port, _, path = address.partition("/")
        host, _, port = host_port.partition(":")
        self.host, self.port, self.path = host, int(port), "/" + path
        self.rate, self.timeout = rate, timeout
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._last_ok = 0.0
        self._longest_gap = 0.0
        self._stopped_at: float | None = None

    async def start(self) -> None:
        self._last_ok = asyncio.get_running_loop().time()
        self._scheduler = asyncio.create_task(self._schedule())

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            while due <= now:
                self.sent += 1
                task = asyncio.create_task(self._one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                due += 1.0 / self.rate

    async def _one(self) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(request)
                await writer.drain()
                reply = await reader.read()
        except TimeoutError:
            self.failures["timeout"] += 1
            return
        except ConnectionRefusedError:
            self.failures["connect"] += 1
            return
        except OSError:
            self.failures["other"] += 1
            return
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        status_line = reply.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status == 200:
            now = asyncio.get_running_loop().time() if self._stopped_at is None else self._stopped_at
            self._longest_gap = max(self._longest_gap, now - self._last_ok)
            self._last_ok = max(self._last_ok, now)
            self.answers[reply.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()] += 1
        elif status:
            self.failures["status-5xx" if status >= 500 else "status-4xx"] += 1
        else:
            self.failures["other"] += 1

    async def stop(self) -> ProbeReport:
        self._stopped_at = asyncio.get_running_loop().time()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        failed = sum(self.failures.values())
        return ProbeReport(sent=self.sent, ok=self.sent - failed, failed=failed,
                           failures_by_kind=dict(self.failures),
                           longest_gap_s=max(self._longest_gap, self._stopped_at - self._last_ok),
                           answers=dict(self.answers))


def make_client(kind: str, url: str, rate: float) -> Probe | RawClient:
    return Probe(url, rate=rate) if kind == "probe" else RawClient(url, rate)


# --- Compose ------------------------------------------------------------------------------------


class Compose:
    def __init__(self, directory: Path, kind: str) -> None:
        self.name = f"rtest-zd-bench-{kind}-{uuid.uuid4().hex[:6]}"
        self.directory = directory / self.name
        self.directory.mkdir()
        self.file = self.directory / "compose.yaml"
        self.fronts: list[CaddyFront | TraefikFront] = []  # stopped by down(), even half-started

    def __call__(self, *args: str) -> list[str]:
        return ["docker", "compose", "-p", self.name, "-f", str(self.file), *args]

    def up(self) -> None:
        run(*self("up", "-d", "--wait", "--wait-timeout", "60"), cwd=self.directory)

    def ports(self, client: Any, image: str | None = None) -> dict[str, int]:
        """Running container name -> host port of 8080 (only containers on ``image`` if given)."""
        found = {}
        filters = {"label": [f"com.docker.compose.project={self.name}"], "status": "running"}
        for container in client.containers.list(filters=filters):
            if image and container.attrs["Config"]["Image"] != image:
                continue
            [binding] = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
            found[container.name] = int(binding["HostPort"])
        return found

    def down(self) -> None:
        for front in self.fronts:
            with contextlib.suppress(Exception):
                front.stop()
        with contextlib.suppress(RuntimeError):
            run(*self("down", "-v", "--remove-orphans", "-t", "1"), cwd=self.directory)
        client = docker.from_env()
        for container in client.containers.list(all=True, filters={"name": self.name}):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            client.containers.get(f"rollover-lock-{self.name}-web").remove(force=True)


def fixed_ports_compose(project: str, image: str, ports: Sequence[int]) -> str:
    text = f"name: {project}\nservices:\n"
    for number, port in enumerate(ports, start=1):
        text += (f"  web{number}:\n    image: {image}\n    stop_grace_period: 5s\n"
                 f"    ports:\n      - \"127.0.0.1:{port}:8080\"\n")
    return text


def v2_endpoints(client: Any, project: str, balancer_address: str) -> list[str]:
    """Where the balancer must send to reach the running v2 replicas, in its address mode, sorted."""
    filters = {"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=web"],
               "status": "running"}
    found = []
    for container in client.containers.list(filters=filters):
        if container.attrs["Config"]["Image"] != V2:
            continue
        settings = container.attrs["NetworkSettings"]
        if balancer_address == "published":
            found.append(f"127.0.0.1:{settings['Ports'][f'{CONTAINER_PORT}/tcp'][0]['HostPort']}")
        else:
            found.append(f"{settings['Networks'][balancer_address.removeprefix('network:')]['IPAddress']}:{CONTAINER_PORT}")
    return sorted(found)


def start_balancer(kind: str, client: Any, project: Compose) -> HAProxy | CaddyFront | TraefikFront:
    """The balancer in front of the project's 6 v1 replicas. ``stop()`` it whatever happens."""
    network = project_network(project.name)
    addresses = [f"{settings['IPAddress']}:{CONTAINER_PORT}" for settings in (
        c.attrs["NetworkSettings"]["Networks"][network] for c in client.containers.list(
            filters={"label": [f"com.docker.compose.project={project.name}"], "status": "running"}))]
    front: CaddyFront | TraefikFront
    if kind == "caddy":
        front = CaddyFront(client, network, f"{project.name}-caddy", project.directory / "caddy")
        project.fronts.append(front)
        front.start(V1, addresses)
    else:
        front = TraefikFront(network, project.name.rsplit("-", 1)[-1], project.directory / "traefik")
        project.fronts.append(front)
        front.start(addresses)
    return front


async def rollover_row(workdir: Path, client: Any, step: str, load: Load,
                       balancer: str = "haproxy") -> tuple[Row, list[float]]:
    project = Compose(workdir, f"rollover-{balancer}-s{step}")
    options: dict[str, Any] = {"ports": ["127.0.0.1::8080"]} if balancer == "haproxy" else {}
    if balancer == "traefik":
        options = traefik_compose_options(project.name.rsplit("-", 1)[-1])
    proxy: HAProxy | CaddyFront | TraefikFront | None = None
    try:
        project.file.write_text(compose_yaml(project.name, V1, replicas=REPLICAS, **options))
        project.up()
        if balancer == "haproxy":
            ports = project.ports(client)
            proxy = HAProxy([f"server w{n} 127.0.0.1:{port}" for n, port in enumerate(ports.values())]
                            + ["server-template spare 1-8 127.0.0.1:1 disabled"])
        else:
            proxy = start_balancer(balancer, client, project)
        front = proxy
        project.file.write_text(compose_yaml(project.name, V2, replicas=REPLICAS, **options))
        output: list[str] = []

        async def roll() -> None:
            process = await asyncio.create_subprocess_exec(
                ROLLOVER, "redeploy", "web", "--project", project.name, "--step", step, "--order", "start-first",
                "--balancer", front.spec, "--balancer-address", front.balancer_address, "--output", "json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await process.communicate()
            output.append(out.decode())
            if process.returncode != 0:
                raise RuntimeError(f"rollover exited {process.returncode}: {err.decode()[-2000:]}")

        def converged() -> bool:
            new = v2_endpoints(client, project.name, front.balancer_address)
            return len(new) == REPLICAS and front.routed() == new

        report, wall = await measured(front, load, roll, converged)
        events = [json.loads(line) for line in output[0].splitlines() if line.startswith("{")]
        sent = {e["replica"]: e["t"] for e in events if e["event"] == "request_sent"}
        to_healthy = [e["t"] - sent[e["replica"]] for e in events if e["event"] == "up"]
        name = {"haproxy": "HAProxy", "caddy": "Caddy", "traefik": "Traefik"}[balancer]
        note = "" if balancer == "haproxy" else f"{name}'s access log: statuses {dict(front.statuses())}"
        return row_from(f"rollover + {name}, start-first, step {step}", report, wall, note), to_healthy
    finally:
        if proxy is not None:
            proxy.stop()
        project.down()


async def compose_row(workdir: Path, client: Any, load: Load, one_by_one: bool) -> Row:
    project = Compose(workdir, "compose-seq" if one_by_one else "compose")
    proxy: HAProxy | None = None
    ports = [free_loopback_port() for _ in range(REPLICAS)]
    try:
        project.file.write_text(fixed_ports_compose(project.name, V1, ports))
        project.up()
        proxy = HAProxy([f"server web{n} 127.0.0.1:{port} check inter 500"
                                      for n, port in enumerate(ports, start=1)])
        project.file.write_text(fixed_ports_compose(project.name, V2, ports))

        async def recreate() -> None:
            services = [f"web{n}" for n in range(1, REPLICAS + 1)]
            for group in ([[s] for s in services] if one_by_one else [services]):
                await asyncio.to_thread(run, *project("up", "-d", "--wait", "--wait-timeout", "60", *group),
                                        cwd=project.directory)

        def converged() -> bool:
            return (len(project.ports(client, V2)) == REPLICAS
                    and [port for _, port in proxy.in_rotation()] == sorted(ports))

        report, wall = await measured(proxy, load, recreate, converged)
        if one_by_one:
            return row_from("compose up -d --wait webN, one by one (fixed ports, HAProxy checks)", report, wall)
        return row_from("compose up -d --wait, all six (fixed ports, HAProxy checks)", report, wall)
    finally:
        if proxy is not None:
            proxy.stop()
        project.down()


# --- Swarm --------------------------------------------------------------------------------------


def swarm_script(*args: str) -> str:
    env = {**os.environ, **SWARM_ENV}
    return run(str(ROOT / "scripts" / "swarm-cluster.sh"), *args, env=env)


class TaskSync:
    """A registrator-like bridge from the node's container events to HAProxy's server slots.

    A task container that reports healthy takes a free slot (``set server ... addr/port``, then
    ``ready``); one that is killed (Swarm's stop signal), dies or goes unhealthy gives it back
    (``maint``). This is what an event-driven discovery tool can do at best: Swarm itself tells
    no balancer anything before it stops a task.
    """

    def __init__(self, node: Any, proxy: HAProxy, slots: int) -> None:
        self.node = node
        self.proxy = proxy
        self.free = [f"spare{n}" for n in range(1, slots + 1)]
        self.slot_of: dict[str, str] = {}  # container id -> server
        self.image_of: dict[str, str] = {}
        self.port_of: dict[str, int] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stream = node.events(decode=True, filters={
            "type": "container", "label": f"com.docker.swarm.service.name={SWARM_SERVICE}",
            "event": ["health_status", "kill", "die"]})
        self._thread = threading.Thread(target=self._pump, daemon=True, name="rtest-zd-task-sync")
        self._thread.start()

    def register_running(self) -> None:
        filters = {"label": f"com.docker.swarm.service.name={SWARM_SERVICE}", "status": "running"}
        for container in self.node.containers.list(filters=filters):
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                self._admit(container.id)

    def _pump(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when close() closes it
            for event in self._stream:
                action = str(event.get("Action") or event.get("status") or "")
                container_id = str(event.get("id") or event.get("Actor", {}).get("ID"))
                try:
                    if action.startswith("health_status") and action.endswith("healthy") and "unhealthy" not in action:
                        self._admit(container_id)
                    elif action in ("kill", "die") or "unhealthy" in action:
                        self._remove(container_id)
                except Exception as exc:  # recorded and reported; the bench goes on
                    self.errors.append(f"{action} {container_id[:12]}: {exc}")

    def _admit(self, container_id: str) -> None:
        with self._lock:
            if container_id in self.slot_of:
                return
            container = self.node.containers.get(container_id)
            port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
            server = self.free.pop(0)
            self.proxy.command(f"set server web/{server} addr {SWARM_NODE_IP} port {port}")
            self.proxy.command(f"set server web/{server} state ready")
            self.slot_of[container_id] = server
            self.image_of[container_id] = container.attrs["Config"]["Image"]
            self.port_of[container_id] = port

    def _remove(self, container_id: str) -> None:
        with self._lock:
            server = self.slot_of.pop(container_id, None)
            if server is None:
                return
            self.proxy.command(f"set server web/{server} state maint")
            self.free.append(server)
            self.port_of.pop(container_id, None)

    def ports_on(self, image: str) -> list[int]:
        with self._lock:
            return sorted(port for cid, port in self.port_of.items() if self.image_of.get(cid, "").startswith(image))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


async def swarm_row(load: Load) -> Row:
    proxy: HAProxy | None = None
    sync: TaskSync | None = None
    node: Any = None
    try:
        await asyncio.to_thread(swarm_script, "up", "1")
        await asyncio.to_thread(
            lambda: subprocess.run(f"docker save {V1} {V2} | docker -H {SWARM_SOCKET} load -q", shell=True,
                                   check=True, capture_output=True))
        node = docker.DockerClient(base_url=SWARM_SOCKET)
        proxy = HAProxy([f"server-template spare 1-16 {SWARM_NODE_IP}:1 check inter 500 disabled"])
        sync = TaskSync(node, proxy, 16)
        swarm = ["docker", "-H", SWARM_SOCKET, "service"]
        run(*swarm, "create", "--name", SWARM_SERVICE, "--replicas", str(REPLICAS), "--no-resolve-image",
            "--publish", "mode=host,target=8080", "--stop-grace-period", "5s", "--detach", V1)
        await until(lambda: len(sync.ports_on(V1)) == REPLICAS, 90, "6 healthy v1 tasks")
        sync.register_running()

        def converged() -> bool:
            new = sync.ports_on(V2)
            return (len(new) == REPLICAS and not sync.ports_on(V1)
                    and [port for _, port in proxy.in_rotation()] == new)

        async def update() -> None:
            await asyncio.to_thread(run, *swarm, "update", "--image", V2, "--update-parallelism", "2",
                                    "--update-order", "start-first", "--no-resolve-image", "--detach", SWARM_SERVICE)

        report, wall = await measured(proxy, load, update, converged)
        note = f"task sync errors: {sync.errors}" if sync.errors else ""
        return row_from("swarm service update, parallelism 2, start-first (+ event sync, checks)", report, wall, note)
    finally:
        if sync is not None:
            sync.close()
        if node is not None:
            node.close()
        if proxy is not None:
            proxy.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(swarm_script, "down")


# --- the report ---------------------------------------------------------------------------------


def table(rows: list[Row], load: Load, load_before: float) -> str:
    who = "rollover's Probe class" if load.client == "probe" else "an open-loop client (raw asyncio sockets)"
    lines = [
        f"side by side: {REPLICAS} replicas v1 -> v2 behind a balancer (HAProxy 2.6 unless the row says Caddy"
        f" 2.6 or Traefik 3.7); load: {who} at {load.rate:g} req/s"
        f" through the balancer, a new connection per request, 2 s timeout; machine load average"
        f" {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores",
        "",
        "| method | failed requests | sent | longest gap | wall time |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row.wall_s is None:
            lines.append(f"| {row.method} | {row.note} | | | |")
            continue
        def cell(value: object, fmt: str) -> str:
            return "—" if value is None else format(value, fmt)
        lines.append(f"| {row.method} | {cell(row.failed, 'd')} | {cell(row.sent, 'd')} | "
                     f"{cell(row.gap_s, '.2f')}{'' if row.gap_s is None else ' s'} | {row.wall_s:.1f} s |")
    details = [f"- {row.method}: failures by kind {row.failures_by_kind}; achieved"
               f" {row.sent / row.wall_s:.0f} req/s{'; ' + row.note if row.note else ''}"
               for row in rows if row.sent is not None and row.wall_s]
    return "\n".join([*lines, "", *details])


async def main_async(options: argparse.Namespace) -> list[Row]:
    client = docker.from_env()
    load = Load(options.client, options.rate)
    rows: list[Row] = []
    bounds: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rtest-zd-bench-") as workdir:
        for step in ("1", "2"):
            row, to_healthy = await rollover_row(Path(workdir), client, step, load)
            rows.append(row)
            print(f"measured: {row.method}", file=sys.stderr)
            # The row's own replacements: how long each took from its request to healthy.
            waves, mean = math.ceil(REPLICAS / int(step)), statistics.mean(to_healthy)
            bounds.append(Row(f"lower bound, step {step}: {waves} waves x {mean:.2f} s to healthy (rollover's own"
                              " replacements in the row above)", wall_s=waves * mean))
        for balancer in ("caddy", "traefik"):
            for step in ("1", "2"):
                rows.append((await rollover_row(Path(workdir), client, step, load, balancer))[0])
                print(f"measured: {rows[-1].method}", file=sys.stderr)
        rows.append(await compose_row(Path(workdir), client, load, one_by_one=False))
        print(f"measured: {rows[-1].method}", file=sys.stderr)
        rows.append(await compose_row(Path(workdir), client, load, one_by_one=True))
        print(f"measured: {rows[-1].method}", file=sys.stderr)
    if options.no_swarm:
        rows.append(Row("swarm service update", note="not measured: --no-swarm"))
    else:
        try:
            rows.append(await swarm_row(load))
        except Exception as exc:  # the table says why
            rows.append(Row("swarm service update", note=f"not measured: {str(exc).splitlines()[0][:200]}"))
        print(f"measured: {rows[-1].method}", file=sys.stderr)
    rows += bounds
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second through HAProxy")
    parser.add_argument("--client", choices=("raw", "probe"), default="raw",
                        help="raw: an open-loop asyncio client that holds its rate; probe: rollover's Probe class")
    parser.add_argument("--no-swarm", action="store_true", help="skip the swarm row (it needs root and ip netns)")
    options = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "build-images")], check=True)
    load_before = os.getloadavg()[0]
    rows = asyncio.run(main_async(options))
    print(table(rows, Load(options.client, options.rate), load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
