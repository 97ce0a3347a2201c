"""Podman's Docker-compatible API read as Docker's: the translations, on data a real Podman 4.3.1
reported (trimmed to the fields that matter)."""

from __future__ import annotations

from typing import Any

from rollover.backends.docker.clone import clone_request
from rollover.backends.docker.inspect import fixed_host_ports, stop_timeout_s
from rollover.dialect import (
    docker_shaped_event,
    docker_shaped_inspect,
    is_podman_version,
    parse_port_range,
    podman_event_filters,
)

EPHEMERAL = (32768, 60999)


def podman_inspect(**host_config: Any) -> dict[str, Any]:
    return {
        "Id": "d1f5c42b6234b55cae383f049e12c8933663817136d710e3968426bd796c8a16",
        "Config": {
            "Hostname": "d1f5c42b6234",
            "Env": ["PATH=/bin", "TERM=xterm", "container=podman", "APP_VERSION=v1", "HOSTNAME=d1f5c42b6234"],
            "Cmd": [],
            "Image": "localhost/rpod-test/app:v1",
            "StopTimeout": 0,
            "Labels": {"app": "pm"},
        },
        "HostConfig": {
            "NetworkMode": "bridge",
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "42081"}]},
            "Ulimits": [{"Name": "RLIMIT_NOFILE", "Hard": 16384, "Soft": 16384},
                        {"Name": "RLIMIT_NPROC", "Hard": 16384, "Soft": 16384}],
            "Init": True,
            **host_config,
        },
        "NetworkSettings": {
            "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "42081"}]},
            "Networks": {"podman": {"Aliases": ["d1f5c42b6234"], "NetworkID": "podman", "IPAddress": "10.88.0.3"}},
        },
    }


def test_podman_is_recognised_by_its_version_components() -> None:
    assert is_podman_version({"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]})
    assert not is_podman_version({"Components": [{"Name": "Engine", "Version": "20.10.24"}]})
    assert not is_podman_version({})


def test_ulimits_take_the_names_create_accepts() -> None:
    shaped = docker_shaped_inspect(podman_inspect(), EPHEMERAL)
    assert [limit["Name"] for limit in shaped["HostConfig"]["Ulimits"]] == ["nofile", "nproc"]
    assert shaped["HostConfig"]["Ulimits"][0]["Soft"] == 16384


def test_a_port_podman_picked_stays_random_and_a_fixed_one_stays_fixed() -> None:
    random_port = docker_shaped_inspect(podman_inspect(), EPHEMERAL)
    assert random_port["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert fixed_host_ports(random_port) == ()
    # What the container really got is still reported (a balancer reaches it there).
    assert random_port["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"] == "42081"
    fixed = podman_inspect(PortBindings={"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18999"}]})
    assert fixed_host_ports(docker_shaped_inspect(fixed, EPHEMERAL)) == ("127.0.0.1:18999->8080/tcp",)


def test_the_engine_made_environment_and_a_missing_stop_timeout_are_not_copied() -> None:
    shaped = docker_shaped_inspect(podman_inspect(), EPHEMERAL)
    assert shaped["Config"]["Env"] == ["PATH=/bin", "APP_VERSION=v1"]
    assert shaped["Config"]["Cmd"] is None
    assert stop_timeout_s(shaped) == 10  # Docker's default, not 0 (a kill with no grace period)
    kept = podman_inspect()
    kept["Config"]["StopTimeout"] = 3
    assert stop_timeout_s(docker_shaped_inspect(kept, EPHEMERAL)) == 3


def test_a_clone_lands_on_podmans_default_network_by_name() -> None:
    request = clone_request(docker_shaped_inspect(podman_inspect(), EPHEMERAL), image="localhost/rpod-test/app:v2")
    assert request.body["HostConfig"]["NetworkMode"] == "podman"
    assert request.body["NetworkingConfig"] == {"EndpointsConfig": {"podman": {}}}  # the short-id alias is its own
    assert request.extra_networks == ()


def test_the_original_is_left_as_it_was() -> None:
    original = podman_inspect()
    docker_shaped_inspect(original, EPHEMERAL)
    assert original["HostConfig"]["Ulimits"][0]["Name"] == "RLIMIT_NOFILE"


def test_events_say_what_docker_would_and_health_status_is_dropped() -> None:
    died = {"Action": "die", "status": "die", "Actor": {"ID": "abc", "Attributes": {"containerExitCode": "137"}}}
    assert docker_shaped_event(died)["Actor"]["Attributes"]["exitCode"] == "137"  # type: ignore[index]
    removed = docker_shaped_event({"Action": "remove", "status": "remove", "Actor": {"ID": "abc"}})
    assert removed is not None and removed["Action"] == "destroy"
    # Podman's carries the status from before its run ("starting" on a run that found it healthy).
    assert docker_shaped_event({"Action": "health_status", "HealthStatus": "starting", "Actor": {"ID": "a"}}) is None
    assert podman_event_filters({"event": ["start", "destroy"]})["event"] == ["start", "destroy", "remove"]
    assert podman_event_filters({"type": ["container"]}) == {"type": ["container"]}


def test_the_port_range_file_reads() -> None:
    assert parse_port_range("32768\t60999\n") == (32768, 60999)


def test_an_anonymous_volume_is_reported_as_docker_reports_it_and_a_clone_takes_it_over() -> None:
    volume = "60c77d7b50c19523f49c50d0ae2004c20583dcdaf49ecaa0045a4ad89128912c"
    inspect = podman_inspect(Binds=[f"{volume}:/data:rw,rprivate,nosuid,nodev,rbind",
                                    "proj_shared:/shared:rw,rprivate,nosuid,nodev,rbind"])
    inspect["Mounts"] = [{"Type": "volume", "Name": volume, "Destination": "/data", "RW": True},
                         {"Type": "volume", "Name": "proj_shared", "Destination": "/shared", "RW": True}]
    shaped = docker_shaped_inspect(inspect, EPHEMERAL)
    assert shaped["HostConfig"]["Binds"] == ["proj_shared:/shared:rw,rprivate,nosuid,nodev,rbind"]
    assert shaped["Config"]["Volumes"] == {"/data": {}}
    fresh = clone_request(shaped, image="localhost/rpod-test/app:v2")
    assert fresh.body["Volumes"] == {"/data": {}} and not fresh.body["HostConfig"].get("Mounts")
    taken_over = clone_request(shaped, image="localhost/rpod-test/app:v2", volumes_from=shaped)
    assert taken_over.inherited_volumes == ("/data",)
    assert taken_over.body["HostConfig"]["Mounts"][0]["Source"] == volume
