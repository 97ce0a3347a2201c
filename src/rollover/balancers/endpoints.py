"""Where a balancer reaches a replica: pure reading of ``Replica.details`` into ``host:port``.

A backend records per replica ("ip.<network>", "172.18.0.5") for each network it is on and
("published.<port>/<proto>", "<hostip>:<hostport>") for each published binding. Which of those a
balancer must use is the address mode:

    published        the published binding of the service's container port
    network:<name>   the replica's IP on that network, with the container port
    auto             published when the replica has exactly one published tcp binding,
                     else its IP on its only network (or on ``network`` when it has several)

The container port is not always written anywhere: it can be given, or learned at attach from the
balancer's own servers (see ``match_servers``): a server at 172.18.0.5:8080 that matches a
replica's IP teaches that the service listens on 8080.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rollover.core.model import Replica

_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})
_LOOPBACK = "127.0.0.1"


class UnreachableReplica(ValueError):
    """The replica's details do not say how to reach it in the chosen address mode."""


@dataclass(frozen=True)
class Endpoint:
    """An IP literal and a port, checked, so it is safe to write into a runtime-API line."""

    host: str
    port: int

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # ValueError on anything but an IP literal
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PublishedBinding:
    container_port: int
    host: str  # "" when published on every interface
    host_port: int


@dataclass(frozen=True)
class AddressMode:
    kind: Literal["auto", "published", "network"]
    network: str | None = None  # the network "network" mode uses, or auto's pick among several

    @classmethod
    def parse(cls, text: str, network: str | None = None) -> AddressMode:
        """Read "auto", "published" or "network:<name>" ("network" alone takes ``network``)."""
        kind, _, name = text.partition(":")
        if text == "auto":
            return cls("auto", network)
        if text == "published":
            return cls("published", network)
        if kind == "network" and (name or network):
            return cls("network", name or network)
        raise ValueError(f"address mode {text!r}: expected auto, published or network:<name>")


def published_bindings(replica: Replica) -> list[PublishedBinding]:
    """The replica's published tcp bindings, one per container port (IPv4 preferred)."""
    by_port: dict[int, PublishedBinding] = {}
    for key, value in replica.details:
        if not key.startswith("published."):
            continue
        port_text, _, proto = key.removeprefix("published.").partition("/")
        host, _, host_port = value.rpartition(":")
        if proto not in ("tcp", "") or not port_text.isdigit() or not host_port.isdigit():
            continue
        binding = PublishedBinding(int(port_text), host.strip("[]"), int(host_port))
        known = by_port.get(binding.container_port)
        if known is None or (":" in known.host and ":" not in binding.host):
            by_port[binding.container_port] = binding
    return list(by_port.values())


def network_addresses(replica: Replica) -> dict[str, str]:
    return {key.removeprefix("ip."): ip for key, ip in replica.details if key.startswith("ip.") and ip}


def _concrete_kind(replica: Replica, mode: AddressMode) -> Literal["published", "network"]:
    if mode.kind != "auto":
        return mode.kind
    return "published" if len(published_bindings(replica)) == 1 else "network"


def _network_ip(replica: Replica, mode: AddressMode) -> str:
    addresses = network_addresses(replica)
    if mode.network is not None:
        if mode.network not in addresses:
            raise UnreachableReplica(f"replica {replica.name} has no address on network {mode.network}")
        return addresses[mode.network]
    if len(addresses) != 1:
        names = ", ".join(sorted(addresses)) or "none"
        raise UnreachableReplica(
            f"replica {replica.name} is on networks: {names}; choose one with address mode network:<name>"
        )
    return next(iter(addresses.values()))


def _binding(replica: Replica, container_port: int | None) -> PublishedBinding:
    bindings = published_bindings(replica)
    chosen = [b for b in bindings if container_port is None or b.container_port == container_port]
    if len(chosen) != 1:
        ports = ", ".join(str(b.container_port) for b in bindings) or "none"
        wanted = f"port {container_port}" if container_port else "exactly one published tcp port"
        raise UnreachableReplica(f"replica {replica.name} publishes {ports}; the balancer needs {wanted}")
    return chosen[0]


def endpoint_for(
    replica: Replica, mode: AddressMode, container_port: int | None, published_host: str | None
) -> Endpoint:
    """Where the balancer must send a replica's traffic.

    ``published_host`` is the address that reaches ports published on every interface (learned
    from the balancer's servers; loopback when nothing taught otherwise).
    """
    try:
        if _concrete_kind(replica, mode) == "published":
            binding = _binding(replica, container_port)
            host = binding.host if binding.host not in _UNSPECIFIED_HOSTS else published_host or _LOOPBACK
            return Endpoint(host, binding.host_port)
        if container_port is None:
            raise UnreachableReplica(f"the container port of {replica.name} is unknown: give the port")
        return Endpoint(_network_ip(replica, mode), container_port)
    except ValueError as exc:  # also a malformed IP or port in the details
        raise UnreachableReplica(str(exc)) from exc


@dataclass(frozen=True)
class _Candidate:
    """A way a replica may already appear among the balancer's servers."""

    host: str | None  # None: any address (published on every interface)
    port: int | None  # None: any port (the container port is not known yet)
    container_port: int | None  # the service's container port, if this candidate matches


def _candidates(replica: Replica, mode: AddressMode, container_port: int | None) -> list[_Candidate]:
    if _concrete_kind(replica, mode) == "published":
        bindings = published_bindings(replica)
        if container_port is not None:
            bindings = [b for b in bindings if b.container_port == container_port]
        return [
            _Candidate(None if b.host in _UNSPECIFIED_HOSTS else b.host, b.host_port, b.container_port)
            for b in bindings
        ]
    return [_Candidate(_network_ip(replica, mode), container_port, container_port)]


@dataclass(frozen=True)
class ServerMatch:
    """Which server carries which replica, and what the matches taught about addresses."""

    servers: dict[str, str]  # replica id -> server name
    container_port: int | None
    published_host: str | None


def match_servers(
    replicas: Iterable[Replica],
    servers: Sequence[tuple[str, str, int]],
    mode: AddressMode,
    container_port: int | None,
) -> ServerMatch:
    """Map replicas to the servers (name, addr, port) that point at them.

    Two replicas at 172.18.0.5 and .6 on network "shop", servers web1 172.18.0.5:8080 and web2
    172.18.0.6:8080, port not given -> {replica1: web1, replica2: web2}, container port 8080.
    A replica no server points at is simply absent: it gets no traffic from this balancer.
    """
    matched: dict[str, str] = {}
    published_host: str | None = None
    for replica in replicas:
        for candidate in _candidates(replica, mode, container_port):
            server = next((s for s in servers if _fits(candidate, s) and s[0] not in matched.values()), None)
            if server is None:
                continue
            matched[replica.id] = server[0]
            container_port = candidate.container_port or server[2]
            if candidate.host is None:
                published_host = server[1]
            break
    return ServerMatch(matched, container_port, published_host)


def _fits(candidate: _Candidate, server: tuple[str, str, int]) -> bool:
    _, addr, port = server
    return (candidate.host is None or candidate.host == addr) and candidate.port in (None, port)
