"""The real Docker Engine and the test app's images, as fixtures for every suite that needs them
(tests/engine, tests/zero_downtime): a pytest plugin loaded by the root conftest's ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support.engine import build_app_images


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
    return build_app_images(docker_client, tmp_path_factory.mktemp("rtest-docker-app-image"))

