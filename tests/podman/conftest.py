"""Fixtures for the tests against a real Podman (Debian's 4.3.1) through its Docker-compatible API.

One ``podman system service`` per session, on a socket of its own (tests/support/podman.py); the
main dockerd is never touched but for ``docker save`` of the test app's images. Everything a test
creates on Podman is named ``rpod-...`` and removed by name at the end, pass or fail.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import APP_V1, published_ports, service_containers
from tests.support.fronts import wait_until
from tests.support.podman import PODMAN_IMAGES, PodmanService, load_app_images, podman_service, rpod_name
from tests.support.zero_downtime import REPLICAS, ZdProject


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    with podman_service() as service:
        yield service


@pytest.fixture(scope="session")
def podman_images(podman: PodmanService, docker_client: Any, app_images: dict[str, str]) -> dict[str, str]:
    """rpod-test/app:{v1,v2,broken} in Podman's storage: name -> image id (without sha256:)."""
    return load_app_images(podman, docker_client, app_images)


@dataclass
class PodmanProject(ZdProject):
    """A Compose project (Compose v2, DOCKER_HOST at Podman's socket) on the rpod images."""

    def write_version(self, image: str) -> None:
        super().write_version(PODMAN_IMAGES.get(image, image))


@pytest.fixture
def start_project(podman: PodmanService, podman_images: dict[str, str],
                  tmp_path: Path) -> Iterator[Callable[..., PodmanProject]]:
    """Factory: ``web``, REPLICAS replicas of app:v1 with these compose options, up on Podman and
    answering HTTP on each published port (Podman runs no healthcheck by itself, so Compose's
    ``--wait`` would wait for ever). Torn down by name at the end, its volumes too."""
    made: list[PodmanProject] = []

    def start(**options: Any) -> PodmanProject:
        project = PodmanProject(rpod_name("proj"), tmp_path / f"project{len(made)}", podman.client,
                                env=podman.env(), options=options)
        made.append(project)
        project.directory.mkdir()
        project.write_version(APP_V1)
        project.compose("up", "-d")
        wait_until(lambda: _all_answer(podman, project), 60, f"{REPLICAS} replicas of {project.name} answering")
        return project

    yield start
    for project in made:
        try:
            project.tear_down()
        finally:
            podman.remove_containers([c.id for c in service_containers(podman.client, project.name)])


def _all_answer(podman: PodmanService, project: PodmanProject) -> bool:
    ports = published_ports(podman.client, project.name)
    if len(ports) != REPLICAS:
        return False
    for port in ports.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/version.txt", timeout=2) as answer:
                answer.read()
        except OSError:
            return False
    return True
