"""Build the parts of a rollout from validated option values: backend, balancers, hooks, probe.

Everything here validates before it builds, so a bad value is an InvalidOption (exit 2) raised
before any platform is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from rollover.backends.base import Backend
from rollover.balancers.base import Balancer
from rollover.clock import Clock
from rollover.errors import InvalidOption

if TYPE_CHECKING:
    from rollover.probe.open_loop import Probe

BALANCER_KINDS = ("haproxy", "traefik", "caddy", "nginx")


class Platform(StrEnum):
    AUTO = "auto"
    DOCKER = "docker"
    SWARM = "swarm"
    PODMAN = "podman"


@dataclass(frozen=True)
class BackendChoice:
    service: str
    platform: Platform = Platform.AUTO
    project: str | None = None
    selector: dict[str, str] | None = None
    image: str | None = None
    pull: bool = False
    swarm_nodes: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None


async def make_backend(choice: BackendChoice, clock: Clock) -> Backend:
    """The backend for the service: Swarm when asked, or (auto) when neither a project nor a
    selector was given and the engine is a swarm manager that has a service of that name. Podman
    (asked for, or recognised by auto from the engine's /version) is the Docker backend: the
    engine client reads Podman's dialect as Docker's, and the backend runs the healthchecks
    Podman does not run by itself."""
    if choice.platform is Platform.SWARM and (choice.project or choice.selector):
        raise InvalidOption("--project and --selector are for Compose and containers, not Swarm services")

    podman = choice.platform is Platform.PODMAN  # Podman has no Swarm: a Compose service or a selector
    if choice.platform is Platform.SWARM or (
        choice.platform is Platform.AUTO and not choice.project and not choice.selector
        and await _is_swarm_service(choice.service)
    ):
        from rollover.backends.swarm.backend import SwarmBackend

        return SwarmBackend(choice.service, image=choice.image, pull=choice.pull, clock=clock,
                            node_hosts=choice.swarm_nodes, replacement_timeout_s=choice.timeout_s)
    from rollover.backends.docker.backend import DockerBackend

    return DockerBackend(choice.service, project=choice.project, selector=choice.selector, image=choice.image,
                         pull=choice.pull, clock=clock, podman=podman)


async def _is_swarm_service(service: str) -> bool:
    from rollover.backends.swarm.service import is_swarm_service

    return await is_swarm_service(None, service)


@dataclass(frozen=True)
class BalancerSpec:
    """``KIND:ADDRESS:NAME``; the address may hold colons itself (tcp:HOST:PORT, http://host:port).

    'haproxy:/run/haproxy/admin.sock:web' -> haproxy, '/run/haproxy/admin.sock', backend 'web'
    'traefik:http://127.0.0.1:8081:web@docker' -> traefik, 'http://127.0.0.1:8081', service 'web@docker'
    'nginx:/etc/nginx/rollover/web.conf:web' -> nginx, '/etc/nginx/rollover/web.conf', upstream 'web'
    """

    kind: str
    address: str
    name: str

    @classmethod
    def parse(cls, text: str) -> BalancerSpec:
        kind, _, rest = text.partition(":")
        address, _, name = rest.rpartition(":")
        if kind not in BALANCER_KINDS or not address or not name:
            raise InvalidOption(
                f"balancer {text!r}: expected haproxy:SOCKET:BACKEND, traefik:API_URL:SERVICE,"
                " caddy:ADMIN_URL:ROUTE_ID or nginx:UPSTREAM_FILE:UPSTREAM"
            )
        return cls(kind, address, name)


@dataclass(frozen=True)
class TrafficOptions:
    balancers: tuple[BalancerSpec, ...] = ()
    address_mode: str = "auto"
    port: int | None = None
    drain_timeout_s: float = 30.0
    pre_stop: tuple[str, ...] | None = None
    post_start: tuple[str, ...] | None = None
    probe_url: str | None = None
    probe_rate: float = 50.0
    max_probe_failures: int | None = None
    nginx_master: str = "pid:/run/nginx.pid"


def make_balancer(options: TrafficOptions, clock: Clock) -> Balancer | None:
    """One balancer, a chain of several, or None: then the controller uses no admission phase."""
    parts: list[Balancer] = [_one_balancer(spec, options, clock) for spec in options.balancers]
    if options.pre_stop or options.post_start:
        from rollover.balancers.hooks import CommandHooks

        parts.append(CommandHooks(options.pre_stop, options.post_start))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    from rollover.balancers.chain import BalancerChain

    return BalancerChain(parts)


def _one_balancer(spec: BalancerSpec, options: TrafficOptions, clock: Clock) -> Balancer:
    mode, _, network = options.address_mode.partition(":")
    if spec.kind == "haproxy":
        from rollover.balancers.haproxy import HAProxyBalancer

        return HAProxyBalancer(spec.address, spec.name, address_mode=mode, network=network or None,
                               port=options.port, clock=clock)
    if spec.kind == "caddy":
        from rollover.balancers.caddy import CaddyBalancer

        return CaddyBalancer(spec.address, spec.name, address_mode=mode, network=network or None,
                             port=options.port, clock=clock)
    if spec.kind == "nginx":
        from rollover.balancers.nginx import NginxBalancer

        return NginxBalancer(spec.address, spec.name, master=options.nginx_master, address_mode=mode,
                             network=network or None, port=options.port, clock=clock)
    from rollover.balancers.traefik import TraefikBalancer

    return TraefikBalancer(spec.address, spec.name, network=network or None, clock=clock)


def check_probe_url(url: str | None) -> str | None:
    if url is None:
        return None
    import httpx  # here, not at the top: a rollout without a probe never needs it (0.1 s of CPU)

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidOption(f"probe URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidOption(f"probe URL {url!r}: expected http://HOST[:PORT]/PATH or https://...")
    return url


def make_probe(options: TrafficOptions, clock: Clock) -> Probe | None:
    if options.probe_url is None:
        return None
    from rollover.probe.open_loop import Probe

    return Probe(options.probe_url, rate=options.probe_rate, clock=clock)


def parse_hook(text: str | None, what: str) -> tuple[str, ...] | None:
    """An argument list, split like a shell would but never run through one (see hooks.py)."""
    if text is None:
        return None
    from rollover.balancers.hooks import parse_hook as split_hook

    try:
        return tuple(split_hook(text))
    except InvalidOption as exc:
        raise InvalidOption(f"{what}: {exc}") from None


def parse_nginx_master(text: str) -> str:
    """``pid:PIDFILE`` or ``container:NAME``, checked (InvalidOption otherwise)."""
    from rollover.balancers.nginx_master import MasterSpec

    return str(MasterSpec.parse(text))


def parse_balancers(values: Sequence[str]) -> tuple[BalancerSpec, ...]:
    return tuple(BalancerSpec.parse(value) for raw in values for value in raw.split() if value)
