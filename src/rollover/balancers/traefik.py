"""Traefik 3 with its Docker provider in front of a service.

Traefik builds its servers from the containers, and its API is read-only: rollover cannot tell it
to stop using one. It changes what Traefik sees of the container instead - its health - without
touching the application image.

What the user configures (the contract):
  - Traefik's Docker provider watches the engine rollover drives, and Traefik's API is reachable
    by rollover (``--api.insecure=true --entrypoints.traefik.address=127.0.0.1:8080``, say).
    rollover is given the API URL and the service as the API names it (``web@docker``; a name
    without ``@`` gets ``@docker``).
  - Every replica carries the same Traefik labels (``traefik.enable=true``, a router,
    ``traefik.http.services.web.loadbalancer.server.port=8080``): Traefik merges them into one
    service (replicas whose labels differ make Traefik drop the service altogether). They are on
    a network Traefik reaches them on (``traefik.docker.network`` or the provider's ``network``).
  - The service has a healthcheck - in the compose file or ``docker run``, the image stays as it
    is - that fails while the drain marker ``/tmp/rollover-drain`` is non-empty, e.g.
        test: ["CMD-SHELL", "test ! -s /tmp/rollover-drain && wget -qO- http://127.0.0.1:8080/health"]
    and ``/tmp`` exists in the container. Traefik routes to a container with a healthcheck only
    while it is healthy: admission waits for that, and a drain is Docker reporting it unhealthy.
    A drain takes up to ``interval x retries`` before Docker says so: keep them short (0.5-2 s x 3).
  - rollover runs on the Docker host: it counts a replica's open connections in
    ``/proc/<pid>/net/tcp`` to know when its in-flight requests are done.

Admission waits until Traefik's API lists the replica among the service's servers.

A drain writes "drain" into the marker through the engine's archive API (``docker cp``: no tool
is needed in the image), so the next probes fail and Docker turns the replica unhealthy with a
``health_status`` event. Traefik re-reads the containers on that event and drops it. rollover
polls Traefik's API until the replica is gone and its connections are closed (bounded by the
timeout); requests in flight run on, since nothing touches the process. The replica stays
unhealthy, so no later refresh brings it back, until it is stopped - or admitted again, which
empties the marker (its next probe passes).

A connection Traefik has begun but the replica has not accepted leaves no trace in its
``/proc/<pid>/net/tcp``: when the app's accept queue is full (busy, or starved of CPU for a moment
while a container starts beside it), the kernel drops the SYN and Traefik's kernel sends it again
1 s later, then 2 s after that. Stopping the replica in between answers the retry with a reset:
Traefik returns a 502 for a request it sent before it dropped the replica (seen at 200 requests/s
on a loaded 2-core host: one 502 after exactly 1.015 s). So the drain also watches the namespace's
``ListenDrops`` counter (``/proc/<pid>/net/netstat``) and is not done until
``SYN_RETRY_WINDOW_S`` passed since the last drop it saw: a dropped SYN comes back within that
window (twice), and is then either a counted connection or another drop. Drops from before the
drain began have come back before Traefik could drop the replica (that takes at least
``interval x retries`` of failed probes).

Why this, on Engine 20.10 and Traefik 3.7 (measured here; sources: Traefik
``pkg/provider/docker/pdocker.go``, ``config.go``; moby ``container/health.go``):
  - Traefik re-reads containers only on ``start``, ``die`` and ``health_status`` events, and keeps
    a container only while it runs and, with a healthcheck, is healthy. A pause or a network
    change is not seen until some other container's event.
  - Disconnecting the replica from Traefik's network cut its in-flight request (it hung until the
    client gave up), and Traefik kept routing to the vanished IP until an unrelated event came.
  - Pausing freezes the in-flight requests. Unpausing them makes Traefik take the replica back:
    Docker silently reports a paused container unhealthy and emits ``health_status: healthy`` at
    the first probe after the unpause. Pause-unpause "blinks" every half interval did keep it
    out while it served, but under load the cgroup-v1 freezer took 3.9 s to freeze a busybox
    httpd forking per request: every request to it timed out meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import logging
import posixpath
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from rollover.balancers.base import DrainResult
from rollover.balancers.endpoints import network_addresses, published_bindings
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica
from rollover.engine import Engine, Inspect
from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError, Unsupported

log = logging.getLogger(__name__)

DEFAULT_DRAIN_MARKER = "/tmp/rollover-drain"
_MARKER_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?")
_LISTEN = "0A"
_SERVING = frozenset({"01", "03", "08"})  # ESTABLISHED, SYN_RECV, CLOSE_WAIT: an answer is still owed
# Traefik applies a configuration change at most every providersThrottleDuration (100 ms and up)
# and every answer of its API costs rollover's loop about a millisecond: 20 looks a second.
POLL_INTERVAL_S = 0.05
# Linux resends a SYN 1 s after it, then 2 s after that: 2.5 s after a drop, the SYN it dropped has
# come back (and, if dropped once more, that drop has been seen and restarts the wait).
SYN_RETRY_WINDOW_S = 2.5


@dataclass(frozen=True)
class TraefikServer:
    url: str
    host: str
    port: int


@dataclass(frozen=True)
class ReplicaContainer:
    """What a drain needs to know about the replica's container, from the engine."""

    id: str
    name: str
    pid: int
    running: bool
    healthcheck: str  # the healthcheck's command, joined; "" without one


def replica_container(inspect: Inspect) -> ReplicaContainer:
    state, config = inspect.get("State") or {}, inspect.get("Config") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return ReplicaContainer(
        id=str(inspect["Id"]),
        name=str(inspect.get("Name", "")).lstrip("/"),
        pid=int(state.get("Pid") or 0),
        running=bool(state.get("Running")),
        healthcheck="" if not test or test[0] == "NONE" else " ".join(map(str, test[1:])),
    )


def marker_archive(path: str, content: bytes) -> bytes:
    """A tar holding the file ``path``'s name with ``content``, for the archive API."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entry = tarfile.TarInfo(posixpath.basename(path))
        entry.size, entry.mode = len(content), 0o644
        archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def open_sessions(pid: int) -> int:
    """Connections the replica's servers accepted and have not finished, from its network namespace.

    A connection counts when its local port is one the namespace listens on, so the app's own
    outgoing connections (to a database) do not. An idle keep-alive connection counts too: it is
    indistinguishable from a request being worked on.
    """
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        try:
            text = Path(f"/proc/{pid}/net/{table}").read_text()
        except FileNotFoundError:  # no IPv6 there, or the process is gone (then nothing is open)
            continue
        except OSError as exc:
            raise PlatformError(f"cannot read the connections of process {pid}: {exc}") from exc
        rows += [line.split() for line in text.splitlines()[1:] if line.strip()]
    listening = {_local_port(row) for row in rows if row[3] == _LISTEN}
    return sum(1 for row in rows if row[3] in _SERVING and _local_port(row) in listening)


def listen_drops(pid: int) -> int:
    """Connection attempts the process's network namespace dropped, most at a full accept queue
    (``TcpExt: ListenDrops``): each is a client that will send its SYN again."""
    try:
        lines = Path(f"/proc/{pid}/net/netstat").read_text().splitlines()
    except FileNotFoundError:  # the process is gone: nothing will be accepted any more
        return 0
    except OSError as exc:
        raise PlatformError(f"cannot read the network counters of process {pid}: {exc}") from exc
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:") and values.startswith("TcpExt:"):
            counters = dict(zip(header.split()[1:], values.split()[1:], strict=False))
            return int(counters.get("ListenDrops", 0))
    return 0


def _local_port(row: list[str]) -> int:
    return int(row[1].rpartition(":")[2], 16)


def carried_by(replica: Replica, servers: Sequence[TraefikServer], network: str | None) -> TraefikServer | None:
    """The server that points at ``replica``: its IP on a network (``network`` if given), or a
    published binding on a specific host IP (Traefik's ``useBindPortIP``)."""
    ips = network_addresses(replica)
    if network is not None:
        ips = {network: ips[network]} if network in ips else {}
    bound = {(b.host, b.host_port) for b in published_bindings(replica) if b.host not in ("", "0.0.0.0", "::")}
    return next((s for s in servers if s.host in ips.values() or (s.host, s.port) in bound), None)


class TraefikApi:
    def __init__(self, api_url: str, timeout: float) -> None:
        self.url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def servers(self, service: str) -> list[TraefikServer] | None:
        """The service's servers; None when Traefik has no such service (it drops one with no server)."""
        try:
            response = await self._http.get(f"/api/http/services/{service}")
        except httpx.HTTPError as exc:
            raise PlatformError(f"Traefik API at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PlatformError(f"Traefik API at {self.url}: HTTP {response.status_code} for service {service}")
        try:
            entries = response.json()["loadBalancer"].get("servers") or []
            return [_server(str(entry["url"])) for entry in entries]
        except (ValueError, KeyError, TypeError, AttributeError, httpx.InvalidURL) as exc:
            raise PlatformError(f"Traefik service {service} is not a load balancer of URLs ({exc})") from exc

    async def close(self) -> None:
        await self._http.aclose()


def _server(url: str) -> TraefikServer:
    parsed = httpx.URL(url)
    return TraefikServer(url, parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))


class TraefikBalancer:
    def __init__(
        self,
        api_url: str,
        service: str,
        *,
        network: str | None = None,
        drain_marker: str = DEFAULT_DRAIN_MARKER,
        docker_host: str | None = None,
        clock: Clock | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        admit_timeout: float = 60.0,
        api_timeout: float = 5.0,
        syn_retry_window: float = SYN_RETRY_WINDOW_S,
    ) -> None:
        """``network``: the network Traefik routes on, when replicas are on several."""
        if not _SERVICE_NAME.fullmatch(service):
            raise InvalidOption(f"Traefik balancer: service name {service!r}")
        try:
            scheme = httpx.URL(api_url).scheme
        except httpx.InvalidURL as exc:
            raise InvalidOption(f"Traefik balancer: API URL {api_url!r}: {exc}") from None
        if scheme not in ("http", "https"):
            raise InvalidOption(f"Traefik balancer: API URL {api_url!r}: expected http://HOST:PORT")
        if not _MARKER_PATH.fullmatch(drain_marker) or drain_marker.endswith("/"):
            raise InvalidOption(f"Traefik balancer: drain marker {drain_marker!r}: expected an absolute file path")
        self._service = service if "@" in service else f"{service}@docker"
        self._api = TraefikApi(api_url, api_timeout)
        self._network = network
        self._marker = drain_marker
        self._docker_host = docker_host
        self._engine: Engine | None = None
        self._clock = clock
        self._poll_interval = poll_interval
        self._admit_timeout = admit_timeout
        self._syn_retry_window = syn_retry_window
        self._drained: dict[str, str] = {}  # replica id -> container id, marked by us and not yet forgotten
        self._servers_lock = asyncio.Lock()
        self._servers_seen: tuple[float, list[TraefikServer] | None] | None = None  # (asked at, answer)

    async def attach(self, replicas: Sequence[Replica]) -> None:
        try:
            servers = await self._api.servers(self._service)
        except PlatformError as exc:
            raise BalancerUnavailable(str(exc)) from exc
        if servers is None:
            raise BalancerUnavailable(f"Traefik at {self._api.url} has no HTTP service {self._service}")
        carried = [r for r in replicas if carried_by(r, servers, self._network) is not None]
        if replicas and not carried:
            urls = ", ".join(s.url for s in servers) or "none"
            names = ", ".join(r.name for r in replicas)
            raise BalancerUnavailable(f"no server of Traefik service {self._service} points at any of {names}"
                                      f" (servers: {urls}); check the network")
        for replica in replicas:
            if all(replica.id != known.id for known in carried):
                log.warning("no server of Traefik service %s points at %s", self._service, replica.name)
        for replica in carried:
            await self._check_drainable(replica)

    async def _check_drainable(self, replica: Replica) -> None:
        """Its healthcheck tests the marker, and its connections can be read here."""
        container = await self._container(replica)
        if container is None or not container.running:
            return
        if self._marker not in container.healthcheck:
            raise Unsupported(self._no_marker(container))
        try:
            open_sessions(container.pid)
        except PlatformError as exc:
            where = f"{exc} ({replica.name})"
            raise BalancerUnavailable(f"{where}: the Traefik balancer must run on the Docker host") from exc

    def _no_marker(self, container: ReplicaContainer) -> str:
        return (
            f"Traefik balancer: the healthcheck of {container.name} ({container.healthcheck or 'none'}) does not"
            f" test the drain marker {self._marker}: make it fail while the marker is non-empty, e.g."
            f" 'test ! -s {self._marker} && <your check>'"
        )

    async def admit(self, replica: Replica) -> None:
        container_id = self._drained.pop(replica.id, None)
        if container_id is not None:  # admitted again after a drain: its next probe passes
            await self._write_marker(container_id, b"")
        clock = self._clock or loop_clock()
        deadline = clock() + self._admit_timeout
        # Traefik's API has no change stream: ask it every poll_interval until it lists the replica.
        while not await self._is_listed(replica):
            if clock() >= deadline:
                raise PlatformError(
                    f"Traefik did not route to {replica.name} within {self._admit_timeout:g}s (service"
                    f" {self._service}): check its labels and network, and that it turns healthy"
                )
            await asyncio.sleep(self._poll_interval)

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        clock = self._clock or loop_clock()
        started = clock()
        container = await self._container(replica)
        if container is None or not container.running:  # gone or stopped: nothing reaches it
            return DrainResult(sessions_left=0, waited_s=0.0)
        if self._marker not in container.healthcheck:
            raise PlatformError(self._no_marker(container))
        self._drained[replica.id] = container.id
        await self._write_marker(container.id, b"drain\n")
        sessions = await self._wait_until_unused(replica, container, deadline=started + timeout, clock=clock)
        return DrainResult(sessions_left=sessions, waited_s=clock() - started)

    async def _wait_until_unused(
        self, replica: Replica, container: ReplicaContainer, deadline: float, clock: Clock
    ) -> int:
        """Sessions left once Traefik dropped the replica, its connections closed and no dropped
        SYN can still come back (see the module's docstring), or at the deadline (counting 1 while
        Traefik still routes to it or a dropped SYN may come back).

        Polling (every ``poll_interval``) is unavoidable: neither Traefik's configuration nor a
        namespace's connections announce their changes. The connections are read only when they
        decide the outcome (Traefik no longer routes to the replica, no SYN is owed), and at most
        a tenth of the time: ``/proc/<pid>/net/tcp`` lists every TIME_WAIT socket too, and a busy
        replica has thousands (measured: 3000 cost ~10 ms a read; at every poll, a drain alone
        would take most of a core from rollover's loop - and from its probe).
        """
        drops, last_drop_at = listen_drops(container.pid), None
        next_read = clock()
        while True:
            listed = await self._is_listed(replica)
            if (seen := listen_drops(container.pid)) != drops:
                drops, last_drop_at = seen, clock()
            retry_due = last_drop_at is not None and clock() - last_drop_at < self._syn_retry_window
            if not listed and not retry_due and clock() >= next_read:
                read_at = clock()
                sessions = open_sessions(container.pid)
                if sessions == 0:
                    return 0
                next_read = read_at + max(self._poll_interval, 10 * (clock() - read_at))
            if clock() >= deadline:
                if listed:
                    log.warning("Traefik still routes to %s after the drain timeout", replica.name)
                return max(open_sessions(container.pid), int(listed), int(retry_due))
            await asyncio.sleep(min(self._poll_interval, max(0.0, deadline - clock())))

    async def forget(self, replica: Replica) -> None:
        """Nothing to undo in Traefik: it drops a removed container by itself."""
        self._drained.pop(replica.id, None)

    async def close(self) -> None:
        """Give back what a rollout that stopped halfway left drained (its next probe passes)."""
        for replica_id, container_id in list(self._drained.items()):
            try:
                await self._write_marker(container_id, b"")
            except PlatformError as exc:  # close runs in the controller's finally: do not mask its error
                log.warning("could not clear the drain marker of %s: %s", container_id[:12], exc)
            del self._drained[replica_id]
        await self._api.close()
        if self._engine is not None:
            await self._engine.close()

    async def _is_listed(self, replica: Replica) -> bool:
        servers = await self._current_servers()
        return servers is not None and carried_by(replica, servers, self._network) is not None

    async def _current_servers(self) -> list[TraefikServer] | None:
        """The service's servers, asked of Traefik at most once per ``poll_interval`` however many
        admissions and drains are waiting (with step half, six at once would each ask 66 times a
        second, and every answer costs rollover's loop about a millisecond)."""
        clock = self._clock or loop_clock()
        async with self._servers_lock:
            if self._servers_seen is not None and clock() - self._servers_seen[0] < self._poll_interval:
                return self._servers_seen[1]
            asked = clock()  # the answer is at least as recent as this
            servers = await self._api.servers(self._service)
            self._servers_seen = (asked, servers)
            return servers

    async def _engine_connection(self) -> Engine:
        if self._engine is None:
            self._engine = await Engine.connect(self._docker_host)
        return self._engine

    async def _container(self, replica: Replica) -> ReplicaContainer | None:
        inspect = await (await self._engine_connection()).inspect_container(replica.id)
        return None if inspect is None else replica_container(inspect)

    async def _write_marker(self, container_id: str, content: bytes) -> None:
        """Write the marker with the engine's archive API (``docker cp``): no tool runs in the container."""
        engine = await self._engine_connection()
        directory = posixpath.dirname(self._marker)
        what = f"write the drain marker {self._marker} into container {container_id[:12]} ({directory} must exist)"
        await engine.put_archive(container_id, directory, marker_archive(self._marker, content), what)
