"""`rollover up` behind HAProxy, configured in the compose file alone (x-rollover): two services
roll in one run, each drained and admitted through its own HAProxy, and neither rollover's probe
nor HAProxy's own log sees a failed request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import APP_V1, APP_V2
from tests.support.haproxy_front import HAProxy
from tests.support.project_up import PATIENT_HEALTHCHECK, up_project

pytestmark = pytest.mark.engine


def _servers(project: Any, service: str) -> list[tuple[str, str, int]]:
    servers = []
    for container in project.containers(service):
        [binding] = [b for b in container.attrs["NetworkSettings"]["Ports"]["8080/tcp"] if b["HostIp"] == "127.0.0.1"]
        servers.append((container.name.rsplit("-", 2)[-2] + container.name.rsplit("-", 1)[-1], "127.0.0.1",
                        int(binding["HostPort"])))
    return servers


def test_two_services_roll_behind_haproxy_with_no_failed_request(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    def service(**extra: Any) -> dict[str, Any]:
        return {"image": APP_V1, "init": True, "stop_grace_period": "5s", "ports": ["127.0.0.1::8080"],
                "healthcheck": PATIENT_HEALTHCHECK,
                "deploy": {"replicas": 2, "update_config": {"parallelism": 1, "order": "start-first"}}, **extra}

    services = {"api": service(), "web": service(depends_on={"api": {"condition": "service_healthy"}})}
    with up_project(docker_client, tmp_path / "p", services) as project:
        assert (first := project.up()).code == 0, first
        fronts: dict[str, HAProxy] = {}
        try:
            for name in services:
                directory = tmp_path / f"haproxy-{name}"
                directory.mkdir()
                fronts[name] = HAProxy(directory, _servers(project, name))
                services[name]["image"] = APP_V2
                services[name]["x-rollover"] = {
                    "balancer": fronts[name].spec, "balancer_address": "published",
                    "probe": fronts[name].url, "probe_rate": 50, "max_probe_failures": 0,
                }
            project.write()

            rolled = project.up()
            summaries = {event["service"]: event for event in rolled.events if event["event"] == "summary"}
            said = f"{summaries}; " + "; ".join(f"{name}: {front.describe()}" for name, front in fronts.items())
            for front in fronts.values():
                # The balancer's own account first: it does not depend on any client's CPU share
                # (the probe's timeout is 2 s; a machine loaded far past its cores times out there).
                front.assert_clean()
            assert rolled.code == 0, said
            assert rolled.results() == {"api": "completed", "web": "completed"}, rolled.summary
            for name, front in fronts.items():
                probe = summaries[name]["probe"]
                assert probe["sent"] > 0 and probe["failed"] == 0, summaries[name]
                assert set(probe["answers"]) <= {"v1", "v2"}, probe
                assert len(front.routed()) == 2, front.describe()
                assert {container.attrs["Image"] for container in project.containers(name)} == {
                    app_images[APP_V2]}
        finally:
            for front in fronts.values():
                front.stop()
