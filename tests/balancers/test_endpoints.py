"""Pure address resolution and runtime-API parsing: tables, no sockets."""

from __future__ import annotations

import pytest

from rollover.balancers.endpoints import (
    AddressMode,
    Endpoint,
    UnreachableReplica,
    endpoint_for,
    match_servers,
    published_bindings,
)
from rollover.balancers.haproxy_api import RuntimeApi, checked_name, parse_servers_state, parse_sessions
from rollover.core.model import Replica


def _replica(*details: tuple[str, str], id: str = "c0ffee") -> Replica:
    return Replica(id=id, name=f"web-{id}", details=details)


ONE_PUBLISHED = _replica(("ip.shop", "172.18.0.5"), ("published.8080/tcp", "0.0.0.0:32768"))
TWO_PUBLISHED = _replica(("published.8080/tcp", "127.0.0.1:32768"), ("published.9090/tcp", "127.0.0.1:32769"))
ONE_NETWORK = _replica(("ip.shop", "172.18.0.5"))
TWO_NETWORKS = _replica(("ip.shop", "172.18.0.5"), ("ip.admin", "10.1.0.5"))


@pytest.mark.parametrize(
    ("replica", "mode", "port", "published_host", "expected"),
    [
        (ONE_PUBLISHED, "auto", None, None, "127.0.0.1:32768"),
        (ONE_PUBLISHED, "auto", None, "10.0.0.7", "10.0.0.7:32768"),
        (ONE_PUBLISHED, "network:shop", 8080, None, "172.18.0.5:8080"),
        (TWO_PUBLISHED, "published", 9090, None, "127.0.0.1:32769"),
        (ONE_NETWORK, "auto", 8080, None, "172.18.0.5:8080"),
        (TWO_NETWORKS, "network:admin", 8080, None, "10.1.0.5:8080"),
    ],
    ids=[
        "auto-one-binding-on-all-interfaces",
        "auto-learned-host",
        "network-mode",
        "published-picks-the-port",
        "auto-one-network",
        "network-among-several",
    ],
)
def test_endpoint_for(replica: Replica, mode: str, port: int | None, published_host: str | None, expected: str) -> None:
    assert str(endpoint_for(replica, AddressMode.parse(mode), port, published_host)) == expected


@pytest.mark.parametrize(
    ("replica", "mode", "port", "message"),
    [
        (TWO_NETWORKS, "auto", 8080, "networks: admin, shop"),
        (TWO_PUBLISHED, "published", None, "publishes 8080, 9090"),
        (TWO_PUBLISHED, "auto", 9090, "networks: none"),  # two bindings: auto wants a network
        (ONE_NETWORK, "auto", None, "container port .* is unknown"),
        (ONE_NETWORK, "network:other", 8080, "no address on network other"),
        (_replica(("ip.shop", "not-an-ip")), "auto", 80, "does not appear to be an IPv4 or IPv6"),
    ],
    ids=["ambiguous-network", "ambiguous-binding", "auto-two-bindings", "unknown-port", "missing-network", "bad-ip"],
)
def test_endpoint_for_says_why_it_cannot(replica: Replica, mode: str, port: int | None, message: str) -> None:
    with pytest.raises(UnreachableReplica, match=message):
        endpoint_for(replica, AddressMode.parse(mode), port, None)


def test_the_network_parameter_picks_among_several_in_auto_mode() -> None:
    assert endpoint_for(TWO_NETWORKS, AddressMode.parse("auto", "admin"), 80, None) == Endpoint("10.1.0.5", 80)


def test_bindings_keep_tcp_and_prefer_ipv4() -> None:
    replica = _replica(
        ("published.80/tcp", ":::32768"),
        ("published.80/tcp", "0.0.0.0:32768"),
        ("published.53/udp", "0.0.0.0:32769"),
    )
    assert [(b.container_port, b.host, b.host_port) for b in published_bindings(replica)] == [(80, "0.0.0.0", 32768)]


@pytest.mark.parametrize("text", ["", "network", "published:x", "dns", "auto:x"])
def test_address_mode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        AddressMode.parse(text)


def test_match_learns_the_container_port_and_the_published_host() -> None:
    first, second = _replica(("ip.shop", "172.18.0.5"), id="a1"), _replica(("ip.shop", "172.18.0.6"), id="b2")
    servers = [("web1", "172.18.0.5", 8080), ("web2", "172.18.0.6", 8080), ("spare", "127.0.0.1", 1)]
    found = match_servers([first, second], servers, AddressMode.parse("auto"), None)
    assert found.servers == {"a1": "web1", "b2": "web2"} and found.container_port == 8080

    found = match_servers([ONE_PUBLISHED], [("w", "10.0.0.7", 32768)], AddressMode.parse("auto"), None)
    assert found.servers == {"c0ffee": "w"}
    assert (found.container_port, found.published_host) == (8080, "10.0.0.7")


def test_match_leaves_out_a_replica_no_server_points_at() -> None:
    found = match_servers([ONE_NETWORK], [("web1", "172.18.0.9", 8080)], AddressMode.parse("auto"), None)
    assert found.servers == {} and found.container_port is None


def test_endpoints_print_for_the_runtime_api() -> None:
    assert str(Endpoint("::1", 80)) == "[::1]:80"
    with pytest.raises(ValueError):
        Endpoint("127.0.0.1;del", 80)
    with pytest.raises(ValueError):
        Endpoint("127.0.0.1", 0)


@pytest.mark.parametrize("name", ["web 1", "a;b", "a\nb", "", "x/y"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        checked_name("server", name)


def test_parse_servers_state_and_sessions() -> None:
    state = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight"
        " srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health"
        " srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n"
        "3 app 1 s1 127.0.0.1 2 0 1 1 1 1 0 2 0 0 0 0 - 18081 -\n"
        "3 app 2 s2 127.0.0.1 0 5 1 1 1 1 0 0 8 0 0 0 - 18082 -\n\n"
    )
    s1, s2 = parse_servers_state(state)
    assert (s1.name, s1.port, s1.in_maintenance, s2.in_maintenance) == ("s1", 18081, False, True)
    with pytest.raises(ValueError, match="Can't find backend"):
        parse_servers_state("Can't find backend.\n")

    # Every proxy's servers: another backend's s1 is not ours.
    stat = "# pxname,svname,qcur,qmax,scur\nother,s1,0,0,9\napp,s1,1,0,2\napp,s2,0,0,0\n\n"
    sessions = [parse_sessions(stat, "app", server) for server in ("s1", "s2", "s3")]
    assert sessions == [3, 0, None]


def test_runtime_api_addresses() -> None:
    RuntimeApi("tcp:127.0.0.1:9999")
    RuntimeApi("/run/haproxy/admin.sock")
    for bad in ("tcp:nohost", "tcp::1", ""):
        with pytest.raises(ValueError):
            RuntimeApi(bad)
