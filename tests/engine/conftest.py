"""Fixtures for tests against the real Docker Engine and Compose v2 (no mocks, no skips); the engine
itself and the app images (``docker_client``, ``app_images``) come from tests/support/engine_fixtures.py.

Everything a test creates is named ``rtest-docker-...`` (other suites share this engine) and is
removed by name when the test ends, pass or fail. The one exception is anonymous volumes, which
have engine-chosen names: the fixtures record those names and remove them explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support.engine import (
    APP_BROKEN,
    APP_V1,
    APP_V2,
    BUILD_ENV,
    ComposeProject,
    app_image_context,
    run,
    unique_name,
)
from tests.support.faults import APP_EXITS, Faults, known_images


@pytest.fixture
def compose_project(
    docker_client: Any, app_images: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ComposeProject]]:
    """Factory: write a compose file for ``web`` on an image, ``up -d --wait`` it, tear it down after."""
    made: list[ComposeProject] = []

    def start(image: str = APP_V1, name: str | None = None, **options: Any) -> ComposeProject:
        project = ComposeProject(name or unique_name("proj"), tmp_path / f"p{len(made)}", docker_client)
        project.directory.mkdir()
        made.append(project)
        project.write(image, **options)
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        project.remember_volumes()
        return project

    yield start
    for project in made:
        project.tear_down()


# -- the fault tests' service and images (test_faults, test_interrupts) --------------------------------


@pytest.fixture(scope="session")
def exits_image(docker_client: Any, app_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[str]:
    """rtest-fault/app:exits-<session>: the test app (FROM scratch + the host's busybox, same healthcheck) whose
    entrypoint exits 1 at once. Removed afterwards: no other suite uses it."""
    context = app_image_context(tmp_path_factory.mktemp("rtest-fault-exits-image"))
    (context / "entrypoint.sh").write_text('#!/bin/sh\necho "rtest-fault: exiting at once" >&2\nexit 1\n')
    run("docker", "build", "-q", "--build-arg", "VERSION=exits", "-t", APP_EXITS, str(context), env=BUILD_ENV)
    yield APP_EXITS
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(APP_EXITS, force=True)


@pytest.fixture
def images(docker_client: Any, app_images: dict[str, str], exits_image: str) -> dict[str, str]:
    """image id -> tag of every image the fault tests run."""
    return known_images(docker_client, APP_V1, APP_V2, APP_BROKEN, exits_image)


@pytest.fixture
def faults(docker_client: Any, images: dict[str, str], tmp_path: Path) -> Iterator[Faults]:
    """Compose projects behind HAProxy and rollovers on the shared engine, removed afterwards."""
    made = Faults(docker_client, tmp_path)
    try:
        yield made
    finally:
        made.tear_down()
