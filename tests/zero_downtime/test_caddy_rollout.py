"""The zero-downtime proof through Caddy: rolling 6 real replicas under steady load.

Each test starts ``web`` (6 replicas of app:v1 on the project's network) and Caddy in front of it
(one route, ``@id`` web, one upstream per replica at its network IP; Caddy in a sandbox's network
namespace with ``net.ipv4.tcp_migrate_req=1``, as rollover's README asks of a Caddy host: see
``tests.support.fronts``), switches the compose file to v2 and runs ``rollover redeploy --balancer
caddy:ADMIN_URL:web --balancer-address network:...`` as a process, with its own probe at 200
requests/s through Caddy, beside the independent client.

Every order and step must give 0 failed requests (clients and Caddy's access log), every
replica on v2, the route's upstreams exactly the v2 replicas (nothing left parked), and only v2
answers once the last replacement was up and the last old replica drained.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fronts import CaddyFront
from tests.support.zero_downtime import MATRIX, ZdProject, prove_rollout

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("order", "step"), MATRIX)
def test_rollout_through_caddy_loses_no_request(
    order: str, step: str, caddy_service: tuple[ZdProject, CaddyFront], docker_client: Any,
    app_images: dict[str, str],
) -> None:
    prove_rollout(order, step, *caddy_service, docker_client, app_images)
