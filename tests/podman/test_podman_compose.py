"""A Compose project run against Podman's socket with Compose v2, rolled by rollover (order auto:
start-first, since each replica's host port is random; stop-first is the selector tests')."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.podman.conftest import PodmanProject
from tests.support.engine import APP_V2, service_containers
from tests.support.podman import PodmanService
from tests.support.zero_downtime import RANDOM_LOOPBACK_PORT, REPLICAS, run_rollover

pytestmark = pytest.mark.podman


def data_volumes(podman: PodmanService, project: PodmanProject) -> set[str]:
    """The anonymous volumes at /data of the running replicas: the data each one holds."""
    volumes = set()
    for container in service_containers(podman.client, project.name):
        container.reload()
        if container.status == "running":
            volumes |= {m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == "/data"}
    return volumes


def test_a_compose_project_on_podman_rolls_to_v2_keeping_its_data(
    podman: PodmanService, podman_images: dict[str, str],
    start_project: Callable[..., PodmanProject], app_images: dict[str, str],
) -> None:
    project = start_project(ports=[RANDOM_LOOPBACK_PORT], volumes=True)
    project.remember_volumes()
    before = data_volumes(podman, project)
    assert len(before) == REPLICAS
    project.write_version(APP_V2)
    run = asyncio.run(run_rollover(["-H", podman.host, "redeploy", "web", "--project", project.name,
                                    "--step", "2", "--output", "json"], timeout=240))
    project.remember_volumes()
    assert run.exit_code == 0, run.describe()
    assert run.summary["replaced"] == REPLICAS
    assert next(e for e in run.events if e["event"] == "plan")["order"] == "start-first"
    running: list[Any] = [c for c in service_containers(podman.client, project.name) if c.status == "running"]
    assert len(running) == REPLICAS
    assert {c.image.id for c in running} == {app_images[APP_V2]}
    assert all(c.attrs["State"]["Health"]["Status"] == "healthy" for c in running)
    # Each replacement took its predecessor's /data over, as `docker compose up` would.
    assert data_volumes(podman, project) == before
    # Compose lists the replacements as the service's containers. (Whether it would recreate them
    # says nothing here: on Podman 4.3.1 Compose 2.40 would recreate even the containers it has just
    # made itself.)
    listed = project.compose("ps", "--format", "{{.Name}} {{.State}}").split()
    assert sorted(listed[0::2]) == sorted(c.name for c in running) and set(listed[1::2]) == {"running"}
