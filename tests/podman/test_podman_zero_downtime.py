"""The zero-downtime proof once on Podman: 6 replicas of a Compose service on Podman's socket
behind a real HAProxy (each replica on a random 127.0.0.1 port), rolled to v2 start-first, one at a time, under
200 requests/s from rollover's probe plus an independent client: 0 failed requests, every replica
on v2, HAProxy sending to exactly those (tests/support/zero_downtime.py's proof, unchanged)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.podman.conftest import PodmanProject
from tests.support.engine import haproxy_servers
from tests.support.haproxy_front import HAProxy
from tests.support.podman import PodmanService
from tests.support.zero_downtime import RANDOM_LOOPBACK_PORT, prove_rollout

pytestmark = pytest.mark.podman


def test_a_rollout_on_podman_through_haproxy_loses_no_request(
    podman: PodmanService, start_project: Callable[..., PodmanProject], app_images: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = start_project(ports=[RANDOM_LOOPBACK_PORT])
    monkeypatch.setenv("DOCKER_HOST", podman.host)  # the rollover process talks to Podman
    # A short directory of its own: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="rpod-haproxy-") as workdir:
        proxy = HAProxy(Path(workdir), haproxy_servers(podman.client, project.name))
        try:
            run = prove_rollout("start-first", "1", project, proxy, podman.client, app_images)
        finally:
            proxy.stop()
    assert "on Podman" in _plan(run.events)["where"]


def _plan(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(event for event in events if event["event"] == "plan")
