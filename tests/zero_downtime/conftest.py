"""Fixtures for the zero-downtime proof: a 6-replica Compose service and a real balancer in front of
it - HAProxy (replicas on random loopback ports), Caddy or Traefik (replicas reached on the
project's network). Names are ``rtest-zd-...``; everything is removed by name at the end, pass or
fail.

The engine's fixtures (``docker_client``, ``app_images``) come from tests/support/engine_fixtures.py,
loaded for every suite by the root conftest.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.support.engine import APP_V1, ComposeProject, haproxy_servers, remove_containers, service_containers
from tests.support.fronts import (
    CADDY,
    TRAEFIK,
    CaddyFront,
    TraefikFront,
    network_addresses,
    project_network,
    traefik_compose_options,
)
from tests.support.haproxy_front import HAProxy
from tests.support.local_haproxy import HAPROXY
from tests.support.zero_downtime import RANDOM_LOOPBACK_PORT, REPLICAS, ZdProject, zd_name


def _sweep(client: Any, project: str) -> None:
    """Whatever of the project is left (containers rollover made included), by name and label."""
    names = [c.id for c in service_containers(client, project)]
    names += [c.id for c in client.containers.list(all=True, filters={"name": project})]
    remove_containers(client, [*names, f"rollover-lock-{project}-web"])
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_network(project_network(project))


@pytest.fixture
def start_service(
    docker_client: Any, app_images: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ZdProject]]:
    """Factory: ``web``, 6 replicas of app:v1 (healthcheck every 0.5 s) with these compose options,
    up and healthy; the project is ``name`` (``rtest-zd-proj-...`` when not given)."""
    made: list[ZdProject] = []

    def start(*, name: str | None = None, **options: Any) -> ZdProject:
        project = ZdProject(name or zd_name("proj"), tmp_path / f"project{len(made)}", docker_client,
                            options=options)
        made.append(project)
        project.directory.mkdir()
        project.write_version(APP_V1)
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        return project

    try:
        yield start
    finally:
        for project in made:
            try:
                project.tear_down()
            finally:
                _sweep(docker_client, project.name)


@pytest.fixture
def service(start_service: Callable[..., ZdProject]) -> ZdProject:
    """``web`` with each replica on a random 127.0.0.1 port (for HAProxy)."""
    return start_service(ports=[RANDOM_LOOPBACK_PORT])


@contextlib.contextmanager
def _running(front: CaddyFront | TraefikFront, start: Callable[[], None]) -> Iterator[None]:
    """Start the balancer; stop it (and remove what it made) at the end, however far it got."""
    try:
        start()
        yield
    finally:
        front.stop()


@pytest.fixture
def caddy_service(
    start_service: Callable[..., ZdProject], docker_client: Any, tmp_path: Path
) -> Iterator[tuple[ZdProject, CaddyFront]]:
    """``web`` (no published port) and Caddy in front of it, one upstream per replica."""
    if not Path(CADDY).exists():
        pytest.fail("caddy is not installed: scripts/setup installs it (a skip would hide it in CI)")
    project = start_service()
    network = project_network(project.name)
    front = CaddyFront(docker_client, network, zd_name("caddy"), tmp_path / "caddy")
    with _running(front, lambda: front.start(APP_V1, network_addresses(docker_client, project.name, network))):
        yield project, front


@pytest.fixture
def traefik_service(
    start_service: Callable[..., ZdProject], docker_client: Any, tmp_path: Path
) -> Iterator[tuple[ZdProject, TraefikFront]]:
    """``web`` with Traefik's labels and the drain-marker healthcheck, and Traefik routing to it."""
    if not Path(TRAEFIK).exists():
        pytest.fail("traefik is not installed: scripts/setup installs it (a skip would hide it in CI)")
    site = zd_name("site").removeprefix("rtest-zd-site-")
    project = start_service(**traefik_compose_options(site))
    network = project_network(project.name)
    front = TraefikFront(network, site, tmp_path / "traefik")
    with _running(front, lambda: front.start(network_addresses(docker_client, project.name, network))):
        yield project, front


@pytest.fixture
def haproxy_for(docker_client: Any) -> Iterator[Callable[..., HAProxy]]:
    """Factory: a real HAProxy whose backend ``web`` has one server per current replica."""
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: scripts/setup installs it (a skip would hide it in CI)")
    started: list[HAProxy] = []
    # A short directory of its own: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="rtest-zd-haproxy-") as workdir:

        def launch(project: ComposeProject, *, check: bool = False) -> HAProxy:
            servers = haproxy_servers(docker_client, project.name)
            assert len(servers) == REPLICAS, servers
            directory = Path(workdir) / str(len(started))
            directory.mkdir()
            proxy = HAProxy(directory, servers, check=check)
            started.append(proxy)
            return proxy

        try:
            yield launch
        finally:
            for proxy in started:
                with contextlib.suppress(Exception):
                    proxy.stop()
