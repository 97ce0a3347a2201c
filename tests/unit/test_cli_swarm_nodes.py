"""--swarm-nodes: the CLI parses NODE=DOCKER_HOST pairs before any daemon is touched."""

from __future__ import annotations

import pytest

from rollover.cli import parse_node_hosts
from rollover.errors import InvalidOption


def test_node_hosts_come_as_node_equals_docker_host() -> None:
    assert parse_node_hosts(" n2=unix:///run/n2.sock, n3=tcp://10.0.0.3:2376,") == {
        "n2": "unix:///run/n2.sock", "n3": "tcp://10.0.0.3:2376"}


def test_no_node_hosts_is_an_empty_map() -> None:
    assert parse_node_hosts("") == {}


@pytest.mark.parametrize("text", ["n4", "=tcp://10.0.0.4:2376", "n4=10.0.0.4:2376"],
                         ids=["no-host", "no-node", "host-without-scheme"])
def test_a_malformed_pair_is_an_invalid_option(text: str) -> None:
    with pytest.raises(InvalidOption, match="expected NODE=DOCKER_HOST"):
        parse_node_hosts(text)
