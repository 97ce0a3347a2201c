"""The nginx balancer's pure parts: the upstream block read and written, the master's command line
read back from its title, its workers told apart by generation, and the balancer spec."""

from __future__ import annotations

import pytest

from rollover.assembly import BalancerSpec, parse_nginx_master
from rollover.balancers.nginx_conf import MARK, Server, UpstreamFileError, parse_upstream_file
from rollover.balancers.nginx_master import Process, master_command, workers_of
from rollover.errors import InvalidOption

FILE = """\
# the operator's own comment, kept
upstream api { server 10.0.0.9:80; }
upstream web {
    # the app
    keepalive 16;
    server 172.18.0.5:8080;
    server 172.18.0.6:8080 max_fails=0;
    server 172.18.0.9:8080; # added by rollover
}
map $x $y { default 1; }
"""


def test_the_block_is_rewritten_and_everything_around_it_kept() -> None:
    parsed = parse_upstream_file(FILE, "web")
    assert parsed.directives == ("keepalive 16;",)
    assert parsed.servers == (Server("172.18.0.5:8080"), Server("172.18.0.6:8080", "max_fails=0"),
                              Server("172.18.0.9:8080", added=True))
    kept, added = parsed.servers[1], Server("172.18.0.7:8080", added=True)
    text = parsed.with_servers([kept, added]).render()
    assert text == FILE.replace(
        "    # the app\n    keepalive 16;\n    server 172.18.0.5:8080;\n    server 172.18.0.6:8080 max_fails=0;\n"
        "    server 172.18.0.9:8080; # added by rollover\n",
        f"    keepalive 16;\n    server 172.18.0.6:8080 max_fails=0;\n    server 172.18.0.7:8080; {MARK}\n",
    )
    assert parse_upstream_file(text, "web").servers == (kept, added)  # read back as written


def test_an_empty_server_list_is_one_server_down_and_reads_back_empty() -> None:
    empty = parse_upstream_file(FILE, "web").with_servers([]).render()
    assert "server 127.0.0.1:1 down;" in empty
    assert parse_upstream_file(empty, "web").servers == ()


@pytest.mark.parametrize(
    ("address", "host_port"),
    [("172.18.0.5:8080", ("172.18.0.5", 8080)), ("10.0.0.1", ("10.0.0.1", 80)), ("[::1]:81", ("::1", 81)),
     ("[::1]", ("::1", 80)), ("unix:/run/app.sock", None), ("app.internal:80", None), ("app", None)],
)
def test_only_ip_literals_can_match_a_replica(address: str, host_port: tuple[str, int] | None) -> None:
    assert Server(address).host_port == host_port


@pytest.mark.parametrize(
    ("text", "message"),
    [("upstream api { server a; }", "no 'upstream web"), ("upstream web { server a:1; ", "unbalanced '{'"),
     ("upstream web { server a:1 }", "does not end with ';'"), ("}", "unbalanced '}'"),
     ("upstream web { server a:1; if ($x) { } }", "a block inside"), ('upstream web { "x; }', "unterminated")],
)
def test_what_cannot_be_read_is_named(text: str, message: str) -> None:
    with pytest.raises(UpstreamFileError, match=message):
        parse_upstream_file(text, "web")


@pytest.mark.parametrize(
    ("title", "command"),
    [
        ("nginx: master process /usr/sbin/nginx", ["/usr/sbin/nginx"]),
        ("nginx: master process nginx -c /srv/nginx.conf -p /srv/", ["nginx", "-c", "/srv/nginx.conf", "-p", "/srv/"]),
        ("nginx: master process /usr/sbin/nginx -g daemon off; pid /x.pid; -c /y.conf",
         ["/usr/sbin/nginx", "-g", "daemon off; pid /x.pid;", "-c", "/y.conf"]),
    ],
)
def test_nginx_t_reads_what_the_master_was_started_with(title: str, command: list[str]) -> None:
    assert master_command(title) == command


def test_workers_and_their_generation_from_the_process_table() -> None:
    table = [Process(10, 1, "nginx: master process nginx"), Process(11, 10, "nginx: worker process"),
             Process(12, 10, "nginx: worker process is shutting down"), Process(13, 10, "nginx: cache manager process"),
             Process(14, 99, "nginx: worker process")]
    assert workers_of(10, table) == {11: False, 12: True}


def test_the_spec_and_the_master_are_checked() -> None:
    assert BalancerSpec.parse("nginx:/etc/nginx/rollover/web.conf:web") == BalancerSpec(
        "nginx", "/etc/nginx/rollover/web.conf", "web")
    assert parse_nginx_master("container:edge") == "container:edge"
    with pytest.raises(InvalidOption, match="pid:PIDFILE or container:NAME"):
        parse_nginx_master("pid:")
