"""Caddy 2 as the balancer in front of a service, steered through its admin API.

The service is one ``reverse_proxy`` handler inside a route the user tags with an ``@id``; its
upstreams follow the replicas as HAProxy's servers do: found by address at attach, appended at
admit, taken out at drain. Each step is one rewrite of the route's handler list
(``PATCH /id/<route_id>/handle``), i.e. one Caddy config reload: admit 1, drain 2.

Draining needs the in-flight count of an upstream Caddy no longer routes to, and Caddy 2.6
drops an upstream's entry from ``/reverse_proxy/upstreams`` (its ``num_requests``) as soon as
no handler of the current config names that address, while its requests are still running.
So a drained upstream is *parked*: moved into a second ``reverse_proxy`` handler appended to the
same route (``@id`` ``<route_id>-rollover-parked``). A handler after a ``reverse_proxy`` never
runs (the proxy answers and does not call the next one), so a parked upstream gets no request,
yet stays in Caddy's upstream pool, where the requests it still serves are counted. Once they
reach 0 (or the timeout passes) it is taken out, with the parking handler once that is empty:
the route is left as the user wrote it.

A config reload is graceful for requests being proxied, but Caddy binds a fresh SO_REUSEPORT
listener on each reload and closes the old one, and Linux resets the connections still queued on
a closing listener unless ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+) moves them to the new one.
Measured with Caddy 2.6.2 at ~200 new connections/s over 120 reloads: 1-9 requests lost without
it, none with it. Set it on the host that runs Caddy (``sysctl -w net.ipv4.tcp_migrate_req=1``).
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from rollover.balancers.base import DrainResult
from rollover.balancers.endpoints import AddressMode, UnreachableReplica, endpoint_for, match_servers
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica
from rollover.errors import BalancerUnavailable, InvalidOption, PlatformError

_ROUTE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PARKED_SUFFIX = "-rollover-parked"
EDIT_ATTEMPTS = 5


def split_dial(dial: str) -> tuple[str, int] | None:
    """'172.18.0.5:8080' -> ('172.18.0.5', 8080); '[::1]:80' -> ('::1', 80); None if it has no port."""
    host, _, port = dial.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class CaddyAdmin:
    """The admin-API calls the balancer makes; every failure leaves as a PlatformError.

    Caddy restarts its admin endpoint on every config change, so a kept-alive connection goes
    stale: each call opens a connection of its own. A connection that fails before the request
    left is retried; a change whose answer was lost is reported (False) so the caller re-reads.
    """

    def __init__(self, admin_url: str, timeout: float, attempts: int = 5) -> None:
        self.url = admin_url.rstrip("/")
        self._attempts = attempts
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def get(self, path: str) -> Any:
        """The decoded value at ``path``; None when there is nothing there (404)."""
        response = await self._send("GET", path, None, retry_lost_answers=True)
        if response is None or response.status_code == 404:
            return None
        return response.json()

    async def change(self, method: str, path: str, body: object = None) -> bool:
        """Apply a change: True when Caddy confirmed it, False when its answer was lost."""
        return await self._send(method, path, body, retry_lost_answers=False) is not None

    async def _send(self, method: str, path: str, body: object, *, retry_lost_answers: bool) -> httpx.Response | None:
        for attempt in range(self._attempts):
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.ConnectError as exc:  # nothing was sent: always safe to try again
                failure: httpx.HTTPError = exc
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if not retry_lost_answers:
                    return None
                failure = exc
            except httpx.HTTPError as exc:
                raise PlatformError(f"Caddy admin API at {self.url}: {exc or type(exc).__name__}") from exc
            else:
                if response.status_code >= 300 and not (method == "GET" and response.status_code == 404):
                    raise PlatformError(f"Caddy refused {method} {path}: {_caddy_error(response)}")
                return response
            await asyncio.sleep(0.01 * (attempt + 1))  # the admin endpoint is being restarted
        raise PlatformError(f"Caddy admin API at {self.url}: {failure or type(failure).__name__}") from failure

    async def in_flight(self, dial: str) -> int:
        """Requests Caddy is proxying to ``dial`` now (0 when no handler names it)."""
        pool = await self.get("/reverse_proxy/upstreams") or []
        return sum(int(entry.get("num_requests", 0)) for entry in pool if entry.get("address") == dial)

    async def close(self) -> None:
        await self._http.aclose()


def _caddy_error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text)).strip()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"


class CaddyBalancer:
    def __init__(
        self,
        admin_url: str,
        route_id: str,
        *,
        address_mode: str = "auto",
        network: str | None = None,
        port: int | None = None,
        clock: Clock | None = None,
        poll_interval: float = 0.015,
        api_timeout: float = 5.0,
        settle_s: float = 0.5,
    ) -> None:
        """``port`` is the container port the service listens on; when None it is learned at
        attach from the upstreams that point at the current replicas."""
        if not _ROUTE_ID.fullmatch(route_id):
            raise InvalidOption(f"Caddy balancer: route id {route_id!r} (letters, digits, '.', '_', '-')")
        try:
            self._mode = AddressMode.parse(address_mode, network)
            scheme = httpx.URL(admin_url).scheme
        except (ValueError, httpx.InvalidURL) as exc:
            raise InvalidOption(f"Caddy balancer: {exc}") from exc
        if scheme not in ("http", "https"):
            raise InvalidOption(f"Caddy balancer: admin URL {admin_url!r}: expected http://HOST:PORT")
        self._api = CaddyAdmin(admin_url, api_timeout)
        self._handlers_path = f"/id/{route_id}/handle"
        self._route = RouteEdits(route_id + PARKED_SUFFIX)
        self._container_port = port
        self._published_host: str | None = None
        self._clock = clock
        self._poll_interval = poll_interval
        # A request Caddy accepted under the config before the park picks its upstream from that
        # config, maybe after the park's reload returned; until it has picked, no count shows it.
        # So a drain ends on a 0 only once ``settle_s`` has passed since the park. Measured on a
        # 2-core machine (tests/zero_downtime/test_balancer_rollouts.py -k caddy, start-first, 200 requests/s,
        # with the probe moved out of rollover's loop so the controller drained at full speed):
        # without it, 1-28 requests per rollout went to a replica after it stopped (502,
        # "connection refused"); with 0.5 s, none in 12 rollouts run alone, yet 14-16 in two
        # rollouts of a fully loaded run. The window narrows this race; it does not close it.
        self._settle_s = settle_s
        self._dials: dict[str, str] = {}  # replica id -> its upstream's dial address
        self._edit_lock = asyncio.Lock()  # each edit reads the route, then writes it back whole

    async def attach(self, replicas: Sequence[Replica]) -> None:
        try:
            handlers = await self._api.get(self._handlers_path)
        except PlatformError as exc:
            raise BalancerUnavailable(str(exc)) from exc
        route = self._handlers_path.split("/")[2]
        if not isinstance(handlers, list):
            raise BalancerUnavailable(f"Caddy at {self._api.url} has no route with @id {route!r}")
        proxies = [n for n, h in enumerate(handlers) if isinstance(h, dict) and h.get("handler") == "reverse_proxy"]
        if not proxies:
            raise BalancerUnavailable(f"Caddy route {route!r} has no reverse_proxy handler")
        self._route.proxy_index = proxies[0]
        dials = dials_of(handlers[proxies[0]])
        servers = [(dial, *address) for dial in dials if (address := split_dial(dial)) is not None]
        try:
            found = match_servers(replicas, servers, self._mode, self._container_port)
        except UnreachableReplica as exc:
            raise InvalidOption(f"Caddy balancer: {exc}") from exc
        if replicas and not found.servers:
            names = ", ".join(r.name for r in replicas)
            raise BalancerUnavailable(
                f"no upstream of Caddy route {route!r} points at any of {names}"
                f" (upstreams: {', '.join(dials) or 'none'}); check the address mode"
            )
        self._dials = dict(found.servers)
        self._container_port = found.container_port
        self._published_host = found.published_host

    async def admit(self, replica: Replica) -> None:
        try:
            dial = str(endpoint_for(replica, self._mode, self._container_port, self._published_host))
        except UnreachableReplica as exc:
            raise PlatformError(f"Caddy balancer cannot admit {replica.name}: {exc}") from exc
        await self._edit(lambda handlers: self._route.admitted(handlers, dial))  # also back from parking
        self._dials[replica.id] = dial

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        dial = self._dials.get(replica.id)
        if dial is None:  # no upstream carries it: Caddy sends it nothing to drain
            return DrainResult(sessions_left=0, waited_s=0.0)
        clock = self._clock or loop_clock()
        started = clock()
        await self._edit(lambda handlers: self._route.parked(handlers, dial))  # no new request from here on
        parked_at = clock()
        requests_left = await self._wait_for_requests_to_end(dial, quiet_from=parked_at + self._settle_s,
                                                             deadline=started + timeout, clock=clock)
        await self._edit(lambda handlers: self._route.removed(handlers, dial))
        return DrainResult(sessions_left=requests_left, waited_s=clock() - started)

    async def _wait_for_requests_to_end(self, dial: str, quiet_from: float, deadline: float, clock: Clock) -> int:
        """Requests left on ``dial`` when they were 0 at ``quiet_from`` or later, or the deadline passed.

        Polling is the only way: Caddy has no event stream for its upstreams' request counts, so
        the admin API is asked every ``poll_interval`` (15 ms by default; a local answer takes
        about a millisecond). A 0 before ``quiet_from`` does not end the wait (see ``settle_s``).
        """
        while True:
            requests = await self._api.in_flight(dial)
            remaining = deadline - clock()
            if (requests == 0 and clock() >= quiet_from) or remaining <= 0:
                return requests
            await asyncio.sleep(min(self._poll_interval, remaining))

    async def forget(self, replica: Replica) -> None:
        """Take its upstream out wherever it still is (a discarded replacement was never drained)."""
        dial = self._dials.pop(replica.id, None)
        if dial is not None:
            await self._edit(lambda handlers: self._route.removed(handlers, dial))

    async def close(self) -> None:
        await self._api.close()

    async def _edit(self, change: Callable[[list[Any]], list[Any]]) -> None:
        """Rewrite the route's handlers in one config change (one Caddy reload), then read them
        back: Caddy restarts its admin endpoint on each change, and an answer lost that way is
        settled by reading what Caddy has. Each change is idempotent, so a repeat is harmless."""
        async with self._edit_lock:
            for _ in range(EDIT_ATTEMPTS):
                handlers = await self._api.get(self._handlers_path)
                if not isinstance(handlers, list):
                    raise PlatformError(f"Caddy route {self._handlers_path.split('/')[2]!r} vanished")
                wanted = change(copy.deepcopy(handlers))
                if wanted == handlers:
                    return
                await self._api.change("PATCH", self._handlers_path, wanted)
        raise PlatformError(f"Caddy did not keep the change to {self._handlers_path} after {EDIT_ATTEMPTS} tries")


class RouteEdits:
    """Pure edits of a route's handler list: where each upstream goes, and the parking handler."""

    def __init__(self, parked_id: str) -> None:
        self.parked_id = parked_id
        self.proxy_index = 0  # which handler of the route is the service's reverse_proxy

    def admitted(self, handlers: list[Any], dial: str) -> list[Any]:
        handlers = self.removed(handlers, dial)
        handlers[self.proxy_index].setdefault("upstreams", []).append({"dial": dial})
        return handlers

    def parked(self, handlers: list[Any], dial: str) -> list[Any]:
        handlers = self.removed(handlers, dial)
        parking = next((h for h in handlers if h.get("@id") == self.parked_id), None)
        if parking is None:  # after the proxy, which never calls the next handler: it gets no request
            parking = {"@id": self.parked_id, "handler": "reverse_proxy", "upstreams": []}
            handlers.append(parking)
        parking["upstreams"].append({"dial": dial})
        return handlers

    def removed(self, handlers: list[Any], dial: str) -> list[Any]:
        """Without ``dial`` in the proxy or the parking handler, and without the parking handler
        once it is empty (other handlers of the route are the user's and left alone)."""
        for index, handler in enumerate(handlers):
            if index == self.proxy_index or handler.get("@id") == self.parked_id:
                handler["upstreams"] = [u for u in handler.get("upstreams") or [] if u.get("dial") != dial]
        return [h for h in handlers if h.get("@id") != self.parked_id or h["upstreams"]]


def dials_of(handler: object) -> list[str]:
    if not isinstance(handler, dict):
        return []
    return [str(u.get("dial", "")) for u in handler.get("upstreams") or [] if isinstance(u, dict)]
