"""Fixtures for tests against the real Docker Engine and Compose v2 (no mocks, no skips).

Everything a test creates is named ``rtest-docker-...`` (other suites share this engine) and is
removed by name when the test ends, pass or fail. The one exception is anonymous volumes, which
have engine-chosen names: the fixtures record those names and remove them explicitly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_support import APP_BROKEN, APP_V1, APP_V2, BUSYBOX, IMAGES_DIR, ComposeProject, run, unique_name


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The engine these tests need: no engine is a failure (CI starts one), never a skip."""
    client = docker.from_env()
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def app_images(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """rollover-test/app:{v1,v2,broken}, built FROM scratch with the host's busybox-static.

    The images are shared by every engine suite and are cheap to rebuild (layer cache), so they
    are left in place rather than removed under another suite's feet.
    """
    context = tmp_path_factory.mktemp("rtest-docker-app-image")
    for source in IMAGES_DIR.iterdir():
        shutil.copy(source, context / source.name)
    shutil.copy(BUSYBOX, context / "busybox")  # never committed: copied from the host at build time
    variants = {
        APP_V1: ["--build-arg", "VERSION=v1"],
        APP_V2: ["--build-arg", "VERSION=v2"],
        APP_BROKEN: ["--build-arg", "VERSION=broken", "--build-arg", "HEALTH_FILE=missing.txt"],
    }
    env = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    for tag, build_args in variants.items():
        run("docker", "build", "-q", *build_args, "-t", tag, str(context), env=env)
    return {tag: str(docker_client.images.get(tag).id) for tag in variants}


@pytest.fixture
def compose_project(
    docker_client: Any, app_images: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ComposeProject]]:
    """Factory: write a compose file for ``web`` on an image, ``up -d --wait`` it, tear it down after."""
    made: list[ComposeProject] = []

    def start(image: str = APP_V1, **options: Any) -> ComposeProject:
        project = ComposeProject(unique_name("proj"), tmp_path / f"p{len(made)}", docker_client)
        project.directory.mkdir()
        made.append(project)
        project.write(image, **options)
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        project.remember_volumes()
        return project

    yield start
    for project in made:
        project.tear_down()
