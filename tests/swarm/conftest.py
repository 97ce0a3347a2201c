"""Real Docker Swarms for the Swarm backend tests: their own dockerd daemons in network namespaces.

The main daemon (/var/run/docker.sock) is never put into swarm mode: ``scripts/swarm-cluster.sh``
starts one dockerd per node in a namespace of its own, joins them into a swarm and tears all of
it down again, also when a test fails. A single-node and a three-node swarm use the same names
(rsw-n1..), so they never run at the same time: each is scoped to one test class.

The app image is the project's test app (tests/images/app: busybox httpd on 8080, a healthcheck
every 0.5 s, TERM trapped), built FROM scratch against node 1 and loaded into every other node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import app_image_context
from tests.support.swarm import ServiceFactory, SwarmCluster, running_cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "swarm: needs root, network namespaces and dockerd (own swarm daemons)")


@pytest.fixture(scope="session")
def app_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return app_image_context(tmp_path_factory.mktemp("rsw-app-image"))


@pytest.fixture(scope="class")
def single_node_swarm(app_context: Path) -> Iterator[SwarmCluster]:
    with running_cluster(1, app_context) as cluster:
        yield cluster


@pytest.fixture(scope="class")
def three_node_swarm(app_context: Path) -> Iterator[SwarmCluster]:
    with running_cluster(3, app_context) as cluster:
        yield cluster


@pytest.fixture
def make_service(request: pytest.FixtureRequest) -> Iterator[ServiceFactory]:
    cluster_fixture = "three_node_swarm" if "three_node_swarm" in request.fixturenames else "single_node_swarm"
    factory = ServiceFactory(request.getfixturevalue(cluster_fixture))
    yield factory
    factory.remove_all()
