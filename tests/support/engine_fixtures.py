"""The real Docker Engine and the test app's images, as fixtures for every suite that needs them
(tests/engine, tests/zero_downtime): a pytest plugin loaded by the root conftest's ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support.engine import APP_BROKEN, APP_V1, APP_V2, BUILD_ENV, app_image_context, run


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
    context = app_image_context(tmp_path_factory.mktemp("rtest-docker-app-image"))
    variants = {
        APP_V1: ["--build-arg", "VERSION=v1"],
        APP_V2: ["--build-arg", "VERSION=v2"],
        APP_BROKEN: ["--build-arg", "VERSION=broken", "--build-arg", "HEALTH_FILE=missing.txt"],
    }
    for tag, build_args in variants.items():
        run("docker", "build", "-q", *build_args, "-t", tag, str(context), env=BUILD_ENV)
    return {tag: str(docker_client.images.get(tag).id) for tag in variants}

