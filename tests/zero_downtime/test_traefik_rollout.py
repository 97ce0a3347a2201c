"""The zero-downtime proof through Traefik: rolling 6 real replicas under steady load.

Each test starts ``web`` (6 replicas of app:v1 on the project's network, with Traefik's labels and
a compose healthcheck that also fails while the drain marker /tmp/rollover-drain is non-empty)
and Traefik on the host with its Docker provider, constrained to this test's containers by a
label, switches the compose file to v2 and runs ``rollover redeploy --balancer
traefik:API_URL:SERVICE`` as a process, with its own probe at 200 requests/s through Traefik,
beside the independent client.

Every order and step must give 0 failed requests (clients and Traefik's access log), every
replica on v2, Traefik's servers exactly the v2 replicas, and only v2 answers once the last
replacement was up and the last old replica drained. A Traefik drain waits for the replica's
healthcheck to fail (interval 0.5 s x 3 retries) and for Traefik to drop it, so each stop-first
wave costs about 2 s more than through HAProxy.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fronts import TraefikFront
from tests.support.zero_downtime import MATRIX, ZdProject, prove_rollout

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("order", "step"), MATRIX)
def test_rollout_through_traefik_loses_no_request(
    order: str, step: str, traefik_service: tuple[ZdProject, TraefikFront], docker_client: Any,
    app_images: dict[str, str],
) -> None:
    prove_rollout(order, step, *traefik_service, docker_client, app_images)
