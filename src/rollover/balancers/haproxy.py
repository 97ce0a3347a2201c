"""HAProxy as the balancer in front of a service, steered through its runtime API.

Each replica is carried by one server of the backend. At attach, the servers already pointing at
the current replicas are found by address. A replacement gets a server of its own, preferably a
spare slot (a server in maintenance that carries no replica: pre-declared with
``server-template spare 1-4 127.0.0.1:1 disabled``, or freed by an earlier ``forget``), else a
dynamic server ``r-<short id>`` (``add server``; needs a dynamic balance algorithm such as
roundrobin or leastconn). Spare slots win because they survive a reload of HAProxy's
configuration, where dynamic servers vanish.

Draining is HAProxy's own: ``state drain`` takes the server out of load balancing while its
in-flight sessions finish; once its sessions (``scur`` + ``qcur``) reach 0 it goes to ``maint``.
In ``mode http`` HAProxy balances every request, so a keep-alive client connection does not pin
a drained server; in ``mode tcp`` a session is a connection and lasts as long as the client keeps
it, which is what the drain timeout bounds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

from rollover.balancers.base import BalancerView, DrainResult, ViewObserver
from rollover.balancers.endpoints import (
    AddressMode,
    Endpoint,
    UnreachableReplica,
    endpoint_for,
    match_servers,
)
from rollover.balancers.haproxy_api import (
    RuntimeApi,
    ServerState,
    checked_name,
    parse_servers_state,
    parse_sessions,
)
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError

log = logging.getLogger(__name__)

DYNAMIC_PREFIX = "r-"


def dynamic_server_name(replica: Replica) -> str:
    """``r-<short id>``, kept to characters that are safe on a runtime-API line."""
    return DYNAMIC_PREFIX + re.sub(r"[^A-Za-z0-9]", "", replica.id)[:12]


class HAProxyBalancer:
    def __init__(
        self,
        address: str,
        backend: str,
        *,
        address_mode: str = "auto",
        network: str | None = None,
        port: int | None = None,
        clock: Clock | None = None,
        poll_interval: float = 0.015,
        delete_budget: float = 1.0,
        api_timeout: float = 5.0,
    ) -> None:
        """``port`` is the container port the service listens on; when None it is learned at
        attach from the servers that point at the current replicas."""
        try:
            self._backend = checked_name("backend", backend)
            self._api = RuntimeApi(address, timeout=api_timeout)
            self._mode = AddressMode.parse(address_mode, network)
        except ValueError as exc:
            raise InvalidOption(f"HAProxy balancer: {exc}") from exc
        self._container_port = port
        self._published_host: str | None = None
        self._clock = clock
        self._poll_interval = poll_interval
        self._delete_budget = delete_budget
        self._servers: dict[str, str] = {}  # replica id -> server name
        self._spare_slots: list[str] = []
        self._slot_lock = asyncio.Lock()  # concurrent admits must not take the same spare slot
        self._observer: ViewObserver | None = None

    def tell(self, observer: ViewObserver) -> None:
        self._observer = observer

    def _told(self, replica: Replica, server: str, state: str, sessions: int | None = None) -> None:
        if self._observer is not None:
            self._observer(replica, BalancerView("haproxy", f"{self._backend}/{server}", state, sessions))

    async def attach(self, replicas: Sequence[Replica]) -> None:
        try:
            states = parse_servers_state(await self._api.execute(f"show servers state {self._backend}"))
        except (PlatformError, ValueError) as exc:
            where = f"HAProxy backend {self._backend} at {self._api.address}"
            raise BalancerUnavailable(f"{where}: {exc}") from exc
        try:
            found = match_servers(
                replicas, [(s.name, s.addr, s.port) for s in states], self._mode, self._container_port
            )
        except UnreachableReplica as exc:
            raise InvalidOption(f"HAProxy balancer: {exc}") from exc
        if replicas and not found.servers:
            raise BalancerUnavailable(self._mismatch(replicas, states))
        for replica in replicas:
            if replica.id not in found.servers:
                log.warning("no server of HAProxy backend %s points at %s", self._backend, replica.name)
        self._servers = dict(found.servers)
        self._container_port = found.container_port
        self._published_host = found.published_host
        carried = set(found.servers.values())
        self._spare_slots = [s.name for s in states if s.in_maintenance and s.name not in carried]
        strays = [s.name for s in states if not s.in_maintenance and s.name not in carried]
        if strays:  # e.g. left by an interrupted rollout: they get traffic, and rollover leaves them be
            log.warning(
                "servers of HAProxy backend %s in rotation carry none of the replicas: %s",
                self._backend,
                ", ".join(strays),
            )

    def _mismatch(self, replicas: Sequence[Replica], states: Sequence[ServerState]) -> str:
        servers = ", ".join(f"{s.name}={s.addr}:{s.port}" for s in states) or "none"
        names = ", ".join(r.name for r in replicas)
        return (
            f"no server of HAProxy backend {self._backend} points at any of {names} (servers: {servers});"
            " check the address mode"
        )

    async def admit(self, replica: Replica) -> None:
        endpoint = self._endpoint(replica)
        async with self._slot_lock:
            server = self._servers.get(replica.id)
            if server is None and self._spare_slots:
                server = self._spare_slots.pop(0)
                try:
                    await self._point(server, endpoint)
                except PlatformError:
                    self._spare_slots.insert(0, server)
                    raise
            elif server is None:
                server = await self._add_dynamic_server(replica, endpoint)
            else:  # admitted again (an undrain, a rollback): it may have moved
                await self._point(server, endpoint)
            self._servers[replica.id] = server
        await self._set_state(server, "ready")
        self._told(replica, server, "ready")

    def _endpoint(self, replica: Replica) -> Endpoint:
        try:
            return endpoint_for(replica, self._mode, self._container_port, self._published_host)
        except UnreachableReplica as exc:
            raise PlatformError(f"HAProxy balancer cannot admit {replica.name}: {exc}") from exc

    async def _add_dynamic_server(self, replica: Replica, endpoint: Endpoint) -> str:
        server = dynamic_server_name(replica)
        if server in self._servers.values() or server == DYNAMIC_PREFIX:
            raise PlatformError(f"replica id {replica.id!r} gives no server name of its own ({server})")
        # New dynamic servers start in maintenance: nothing reaches it before _set_state(ready).
        reply = await self._api.execute(f"add server {self._backend}/{server} {endpoint}")
        if "New server registered" in reply:
            return server
        if "Already exists" in reply:  # left over from an interrupted rollout: take it over
            await self._point(server, endpoint)
            return server
        if "dynamic load balancing" in reply:
            raise PlatformError(
                f"HAProxy backend {self._backend} has no spare slot and its balance algorithm allows no"
                " dynamic servers: declare spares, e.g. 'server-template spare 1-4 127.0.0.1:1 disabled'"
            )
        raise PlatformError(f"HAProxy refused to add {self._backend}/{server}: {reply.strip()}")

    async def _point(self, server: str, endpoint: Endpoint) -> None:
        command = f"set server {self._backend}/{server} addr {endpoint.host} port {endpoint.port}"
        reply = await self._api.execute(command)
        if not reply.startswith(("IP changed", "no need to change")):
            raise PlatformError(f"HAProxy refused {command!r}: {reply.strip()}")

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        server = self._servers.get(replica.id)
        if server is None:  # no server carries it: this balancer sends it nothing to drain
            return DrainResult(sessions_left=0, waited_s=0.0)
        clock = self._clock or loop_clock()
        started = clock()
        await self._set_state(server, "drain")
        sessions = await self._wait_for_sessions_to_end(replica, server, deadline=started + timeout, clock=clock)
        await self._set_state(server, "maint")
        self._told(replica, server, "maint", sessions)
        return DrainResult(sessions_left=sessions, waited_s=clock() - started)

    async def _wait_for_sessions_to_end(self, replica: Replica, server: str, deadline: float, clock: Clock) -> int:
        """Sessions left on ``server`` when they reached 0 or the deadline passed; each new count is
        told (the first one too), so a live view shows the open connections as they go.

        Polling is unavoidable here, and only here: HAProxy has no event stream for session
        counts, so the runtime API is asked every ``poll_interval`` (15 ms by default; a local
        socket answers in well under a millisecond).
        """
        told: int | None = None
        while True:
            sessions = await self._sessions(server)
            if sessions != told:
                self._told(replica, server, "drain", sessions)
                told = sessions
            remaining = deadline - clock()
            if sessions == 0 or remaining <= 0:
                return sessions
            await asyncio.sleep(min(self._poll_interval, remaining))

    async def _sessions(self, server: str) -> int:
        # Every proxy's servers (-1 4 -1), not 'show stat NAME': NAME finds the first proxy so
        # named, which is the frontend when both are called e.g. "web" (its rows have no servers).
        reply = await self._api.execute("show stat -1 4 -1")
        try:
            sessions = parse_sessions(reply, self._backend, server)
        except ValueError as exc:
            raise PlatformError(f"HAProxy 'show stat' for backend {self._backend}: {exc}") from exc
        if sessions is None:
            raise PlatformError(f"server {self._backend}/{server} vanished from HAProxy while draining")
        return sessions

    async def forget(self, replica: Replica) -> None:
        server = self._servers.pop(replica.id, None)
        if server is None:
            return
        await self._set_state(server, "maint")  # a no-op after drain; not every removal was drained
        if server.startswith(DYNAMIC_PREFIX) and await self._delete(server):
            return
        self._spare_slots.append(server)

    async def _delete(self, server: str) -> bool:
        """Delete a dynamic server; False when it keeps connections past the budget.

        HAProxy refuses while idle or active connections remain. The server is then left in
        maintenance, which is harmless, and becomes a spare slot for the next admit.
        """
        clock = self._clock or loop_clock()
        deadline = clock() + self._delete_budget
        while True:
            reply = await self._api.execute(f"del server {self._backend}/{server}")
            if "Server deleted" in reply:
                return True
            if "still has connections" not in reply:
                raise PlatformError(f"HAProxy refused to delete {self._backend}/{server}: {reply.strip()}")
            if clock() >= deadline:
                log.warning("kept %s/%s as a spare slot: %s", self._backend, server, reply.strip())
                return False
            await asyncio.sleep(self._poll_interval)  # no event says when connections are gone

    async def _set_state(self, server: str, state: str) -> None:
        command = f"set server {self._backend}/{server} state {state}"
        reply = await self._api.execute(command)
        if reply.strip():  # HAProxy answers success with an empty line
            raise PlatformError(f"HAProxy refused {command!r}: {reply.strip()}")

    async def close(self) -> None:
        """Nothing to release: every command uses a connection of its own."""
