"""The Docker backend's pure parts (event meaning, inspect reading, clone requests, compose
commands) and its event feed, on plain values: no engine needed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollover.backends.docker.clone import (
    clone_request,
    inherit_anonymous_volumes,
    with_fresh_anonymous_volumes,
    without_image_defaults,
)
from rollover.backends.docker.compose import ComposeProject, scale_up_command
from rollover.backends.docker.events import EventFeed, replica_event
from rollover.backends.docker.inspect import fixed_host_ports, health_budget_s
from rollover.backends.lease import LockRecord, stale_lock
from rollover.core.model import Replica, ReplicaDown, ReplicaUp
from rollover.core.recovery import made_by
from rollover.errors import PlatformError


def raw(action: str, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": "c1", "Attributes": attributes}}


@pytest.mark.parametrize(
    ("event", "has_healthcheck", "meaning"),
    [
        (raw("health_status: healthy"), True, ReplicaUp("c1", 5.0)),
        (raw("health_status: unhealthy"), True, ReplicaDown("c1", 5.0, "unhealthy")),
        (raw("health_status: starting"), True, None),
        (raw("start"), False, ReplicaUp("c1", 5.0)),
        (raw("start"), True, None),
        (raw("die", exitCode="137"), True, ReplicaDown("c1", 5.0, "exited with code 137")),
        (raw("destroy"), True, ReplicaDown("c1", 5.0, "removed", gone=True)),
        (raw("exec_start: wget -q -O- http://127.0.0.1:8080/"), True, None),
        (raw("kill", signal="15"), True, None),
    ],
    ids=["healthy", "unhealthy", "starting", "start-unchecked", "start-checked", "die", "destroy", "exec", "kill"],
)
def test_replica_event_meaning(event: dict[str, Any], has_healthcheck: bool, meaning: object) -> None:
    assert replica_event(event, 5.0, has_healthcheck) == meaning


@pytest.mark.parametrize(
    ("check", "budget"),
    [
        (None, None),
        ({"Test": ["NONE"]}, None),
        ({"Test": ["CMD", "true"]}, 0 + 30 * 4 + 30),  # engine defaults: 30 s, 30 s, 3 retries
        ({"Test": ["CMD", "true"], "Interval": 500_000_000, "Timeout": 2_000_000_000, "Retries": 3}, 4.0),
        ({"Test": ["CMD", "true"], "Interval": 10**9, "Retries": 1, "StartPeriod": 5 * 10**9}, 5 + 2 + 30),
    ],
    ids=["none", "disabled", "defaults", "test-image", "start-period"],
)
def test_health_budget(check: dict[str, Any] | None, budget: float | None) -> None:
    assert health_budget_s({"Healthcheck": check}) == budget


def test_only_fixed_host_ports_count() -> None:
    bindings = {
        "8080/tcp": [{"HostIp": "", "HostPort": ""}],
        "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9090"}],
        "53/udp": [{"HostIp": "", "HostPort": "0"}],
    }
    assert fixed_host_ports({"HostConfig": {"PortBindings": bindings}}) == ("127.0.0.1:9090->9090/tcp",)


def test_a_new_images_defaults_replace_the_old_ones() -> None:
    image = {
        "Env": ["PATH=/bin", "APP_VERSION=v1"],
        "Entrypoint": ["/bin/sh", "/entrypoint.sh"],
        "Cmd": None,
        "Labels": {"org.version": "1"},
        "ExposedPorts": {"8080/tcp": {}, "9000/tcp": {}},
        "WorkingDir": "/",
    }
    container = {
        "Env": ["PATH=/bin", "APP_VERSION=v1", "GREETING=hi"],
        "Entrypoint": ["/bin/sh", "/entrypoint.sh"],
        "Cmd": ["--verbose"],
        "Labels": {"org.version": "1", "team": "shop"},
        "ExposedPorts": {"8080/tcp": {}, "9000/tcp": {}},
        "WorkingDir": "/",
        "User": "app",
    }
    cleaned = without_image_defaults(container, image, published_ports={"9000/tcp"})
    assert cleaned["Env"] == ["GREETING=hi"]
    assert cleaned["Entrypoint"] is None and cleaned["Cmd"] == ["--verbose"]
    assert cleaned["Labels"] == {"team": "shop"}
    assert cleaned["ExposedPorts"] == {"9000/tcp": {}}  # published: kept even though the image exposes it
    assert "WorkingDir" not in cleaned and cleaned["User"] == "app"


def test_a_user_entrypoint_keeps_an_equal_cmd() -> None:
    image = {"Entrypoint": ["/a"], "Cmd": ["serve"]}
    cleaned = without_image_defaults({"Entrypoint": ["/b"], "Cmd": ["serve"]}, image, published_ports=set())
    assert cleaned["Entrypoint"] == ["/b"] and cleaned["Cmd"] == ["serve"]


def test_anonymous_volume_paths_take_over_the_predecessors_volumes() -> None:
    config: dict[str, Any] = {"Volumes": {"/cache": {}}}
    host_config: dict[str, Any] = {
        "Binds": ["shop_shared:/shared:rw"],
        "Mounts": [{"Type": "volume", "Target": "/data"}, {"Type": "tmpfs", "Target": "/run"}],
    }
    previous = {
        "Mounts": [
            {"Type": "volume", "Name": "anon-data", "Destination": "/data", "RW": True},
            {"Type": "volume", "Name": "anon-cache", "Destination": "/cache", "RW": False},
            {"Type": "volume", "Name": "shop_shared", "Destination": "/shared", "RW": True},
            {"Type": "volume", "Name": "gone-from-definition", "Destination": "/old", "RW": True},
        ]
    }
    inherited = inherit_anonymous_volumes(config, host_config, previous, image_volumes=["/data/"])
    assert inherited == ["/cache", "/data"]
    assert host_config["Mounts"] == [
        {"Type": "tmpfs", "Target": "/run"},
        {"Type": "volume", "Source": "anon-cache", "Target": "/cache", "ReadOnly": True},
        {"Type": "volume", "Source": "anon-data", "Target": "/data", "ReadOnly": False},
    ]
    assert host_config["Binds"] == ["shop_shared:/shared:rw"] and config["Volumes"] is None


def test_clone_drops_what_the_engine_made_for_the_old_container() -> None:
    source = {
        "Id": "0123456789abcdef",
        "Config": {"Hostname": "0123456789ab", "Image": "app:v1", "Labels": {"rollover.image-ref": "app:v0"}},
        "HostConfig": {"NetworkMode": "shop", "Links": ["/db:/web-1/database"]},
        "NetworkSettings": {
            "Networks": {
                "shop": {"Aliases": ["web", "0123456789ab"], "IPAddress": "172.18.0.3", "NetworkID": "n1"},
                "admin": {"Aliases": ["0123456789ab"], "IPAMConfig": {"IPv4Address": "10.0.0.9"}},
            }
        },
    }
    request = clone_request(source, image="app:v2")
    assert "Hostname" not in request.body and request.body["Image"] == "app:v2"
    assert request.body["Labels"] is None
    assert request.body["HostConfig"]["Links"] == ["db:database"]
    assert request.body["NetworkingConfig"] == {"EndpointsConfig": {"shop": {"Aliases": ["web"]}}}
    assert request.extra_networks == (("admin", {"IPAMConfig": {"IPv4Address": "10.0.0.9"}}),)


def test_a_clone_drops_a_rollbacks_own_labels() -> None:
    labels = {"rollover.image-ref": "app:v0", "rollover.restored-from": "f" * 64, "team": "shop"}
    request = clone_request({"Id": "0123456789abcdef", "Config": {"Image": "app:v1", "Labels": labels}}, image="app:v2")
    assert request.body["Labels"] == {"team": "shop"}  # they described the source container, not its clone


def test_a_refill_gets_fresh_anonymous_volumes_and_keeps_named_ones() -> None:
    taken_over = "a1" * 32  # an anonymous volume a rollout mounted by name on the source
    source = {
        "Id": "0123456789abcdef",
        "Config": {"Image": "app:v1"},
        "HostConfig": {"Mounts": [
            {"Type": "volume", "Source": taken_over, "Target": "/data", "ReadOnly": False},
            {"Type": "volume", "Source": "shop_shared", "Target": "/shared"},
            {"Type": "bind", "Source": "/srv/conf", "Target": "/conf"},
        ]},
    }
    request = with_fresh_anonymous_volumes(clone_request(source, image="app:v2"))
    assert request.body["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Target": "/data", "ReadOnly": False},  # no source: the engine makes a fresh one
        {"Type": "volume", "Source": "shop_shared", "Target": "/shared"},
        {"Type": "bind", "Source": "/srv/conf", "Target": "/conf"},
    ]


def test_a_lock_records_when_its_rollout_began_to_the_microsecond() -> None:
    # A replica made at 10:00:00.4 is no replacement of a rollout that began at 10:00:00.7.
    began = datetime(2026, 11, 26, 10, 0, 0, 700_000, tzinfo=UTC)
    record = LockRecord("ci pid 7", began, began + timedelta(hours=1), replicas=3)
    taken_over = stale_lock(record.labels(), "its holder is gone")
    assert taken_over.since == began.timestamp() and taken_over.replicas == 3
    before = Replica("web-3", "web-3", created_at=began.timestamp() - 0.3)
    assert not made_by(before, taken_over)


def test_compose_project_from_labels_skips_our_override_files() -> None:
    override = "/tmp/rollover-image-override-shop-web-1.json"
    labels = {
        "com.docker.compose.project.config_files": f"/srv/shop/compose.yaml,{override}",
        "com.docker.compose.project.working_dir": "/srv/shop",
    }
    project = ComposeProject.from_labels("shop", labels)
    assert scale_up_command(project, "web", 8, pull=False) == [
        "compose", "-p", "shop", "-f", "/srv/shop/compose.yaml", "--project-directory", "/srv/shop",
        "up", "--no-start", "--no-deps", "--no-recreate", "--pull", "missing", "--scale", "web=8", "web",
    ]  # fmt: skip


def breaking_stream() -> Iterator[dict[str, Any]]:
    yield raw("start")
    raise ConnectionResetError("daemon went away")


def test_event_feed_stamps_arrivals_and_reports_a_broken_stream() -> None:
    async def scenario() -> tuple[tuple[float, dict[str, Any]] | None, str]:
        feed = EventFeed(breaking_stream(), clock=lambda: 42.0)
        first = await feed.next()
        with pytest.raises(PlatformError, match="event stream broke: daemon went away") as broke:
            await asyncio.wait_for(feed.next(), 5)
        return first, str(broke.value)

    first, _ = asyncio.run(scenario())
    assert first == (42.0, raw("start"))


def test_a_closed_event_feed_just_ends() -> None:
    async def scenario() -> None:
        feed = EventFeed(iter([]), clock=lambda: 0.0)
        feed.close()
        assert await asyncio.wait_for(feed.next(), 5) is None

    asyncio.run(scenario())
