"""Fixtures for the zero-downtime proof: a 6-replica Compose service on random loopback ports and a
real HAProxy in front of it. Names are ``rtest-zd-...``; everything is removed by name at the end,
pass or fail.

The engine suite's fixtures (``docker_client``, ``app_images``) and helpers (``engine_support``)
are reused as they are: tests/engine is put on the import path and its conftest loaded by file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ENGINE_DIR = Path(__file__).resolve().parent.parent / "engine"
if str(ENGINE_DIR) not in sys.path:
    sys.path.insert(0, str(ENGINE_DIR))

from engine_support import APP_V1, ComposeProject, remove_containers  # noqa: E402
from zd_support import (  # noqa: E402
    RANDOM_LOOPBACK_PORT,
    REPLICAS,
    HAProxy,
    published_ports,
    service_containers,
    zd_name,
)

from local_haproxy import HAPROXY  # noqa: E402


def _engine_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("rtest_zd_engine_conftest", ENGINE_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine = _engine_conftest()
docker_client = _engine.docker_client  # the engine these tests need (no engine: a failure, never a skip)
app_images = _engine.app_images  # rollover-test/app:{v1,v2,broken}, built from the host's busybox


def _sweep(client: Any, project: str) -> None:
    """Whatever of the project is left (containers rollover made included), by name and label."""
    names = [c.id for c in service_containers(client, project)]
    names += [c.id for c in client.containers.list(all=True, filters={"name": project})]
    remove_containers(client, [*names, f"rollover-lock-{project}-web"])


@pytest.fixture
def service(docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> Iterator[ComposeProject]:
    """``web``: 6 replicas of app:v1 (healthcheck every 0.5 s), each on a random 127.0.0.1 port."""
    project = ComposeProject(zd_name("proj"), tmp_path / "project", docker_client)
    project.directory.mkdir()
    try:
        project.write(APP_V1, replicas=REPLICAS, ports=[RANDOM_LOOPBACK_PORT])
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        yield project
    finally:
        try:
            project.tear_down()
        finally:
            _sweep(docker_client, project.name)


@pytest.fixture
def haproxy_for(docker_client: Any) -> Iterator[Callable[..., HAProxy]]:
    """Factory: a real HAProxy whose backend ``web`` has one server per current replica."""
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: scripts/setup installs it (a skip would hide it in CI)")
    started: list[HAProxy] = []
    # A short directory of its own: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="rtest-zd-haproxy-") as workdir:

        def launch(project: ComposeProject, *, check: bool = False) -> HAProxy:
            ports = published_ports(docker_client, project.name)
            assert len(ports) == REPLICAS, ports
            servers: Sequence[tuple[str, int]] = [
                (f"web{name.rsplit('-', 1)[-1]}", port) for name, port in sorted(ports.items())
            ]
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
