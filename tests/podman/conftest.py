"""Fixtures for the tests against a real Podman (Debian's 4.3.1) through its Docker-compatible API.

One ``podman system service`` per session, on a socket of its own (tests/support/podman.py); the
main dockerd is never touched but for ``docker save`` of the test app's images. Everything a test
creates on Podman is named ``rpod-...`` and removed by name at the end, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.podman import PodmanService, load_app_images, podman_service


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    with podman_service() as service:
        yield service


@pytest.fixture(scope="session")
def podman_images(podman: PodmanService, docker_client: Any, app_images: dict[str, str]) -> dict[str, str]:
    """rpod-test/app:{v1,v2,broken} in Podman's storage: name -> image id (without sha256:)."""
    return load_app_images(podman, docker_client, app_images)
