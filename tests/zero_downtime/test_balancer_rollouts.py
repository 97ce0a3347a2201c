"""The zero-downtime proof through Caddy and through Traefik: rolling 6 real replicas under steady load,
written once and run per balancer (HAProxy's proof, with its extra cases, is test_haproxy_rollout.py).

Caddy: each test starts ``web`` (6 replicas of app:v1 on the project's network) and Caddy in front
of it (one route, ``@id`` web, one upstream per replica at its network IP; Caddy in a sandbox's
network namespace with ``net.ipv4.tcp_migrate_req=1``, as rollover's README asks of a Caddy host:
see ``tests.support.fronts``), and rollover runs with ``--balancer caddy:ADMIN_URL:web
--balancer-address network:...``.

Traefik: ``web`` carries Traefik's labels and a compose healthcheck that also fails while the drain
marker /tmp/rollover-drain is non-empty; Traefik runs on the host with its Docker provider,
constrained to this test's containers by a label, and rollover runs with ``--balancer
traefik:API_URL:SERVICE``. A Traefik drain waits for the replica's healthcheck to fail (interval
0.5 s x 3 retries) and for Traefik to drop it, so each stop-first wave costs about 2 s more than
through HAProxy.

Each switches the compose file to v2 and runs ``rollover redeploy`` as a process, with its own
probe at 200 requests/s through the balancer, beside the independent client. Every order and step
(three cells in the suite, all six in bench/balancer_matrix.py) must give 0 failed requests
(clients and the balancer's access log), every replica on v2, the
balancer's upstreams or servers exactly the v2 replicas (nothing left parked), and only v2 answers
once the last replacement was up and the last old replica drained.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.zero_downtime import prove_rollout, suite_cells

pytestmark = pytest.mark.engine

# Three cells in the suite, one per way a wave can go (HAProxy's proof runs all six, and
# `python -m bench.balancer_matrix caddy traefik` these): one replica at a time start-first, stop-first two
# at a time (each wave takes capacity away), and half the service at once.
SUITE_MATRIX = {"start-first-step-1", "stop-first-step-2", "start-first-step-half"}


@pytest.mark.parametrize("fronted_service", ["caddy_service", "traefik_service"], ids=["caddy", "traefik"])
@pytest.mark.parametrize(("order", "step"), suite_cells(SUITE_MATRIX))
def test_rollout_through_the_balancer_loses_no_request(
    order: str, step: str, fronted_service: str, request: pytest.FixtureRequest, docker_client: Any,
    app_images: dict[str, str],
) -> None:
    project, front = request.getfixturevalue(fronted_service)
    prove_rollout(order, step, project, front, docker_client, app_images)
