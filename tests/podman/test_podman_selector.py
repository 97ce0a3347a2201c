"""Label-selected containers on a real Podman, rolled through its Docker-compatible API.

Each test starts 4 replicas of rpod-test/app:v1 as the issue's user did (``--init``, a random
127.0.0.1 host port each, the image's healthcheck every 0.5 s), runs ``rollover -H <podman>
redeploy`` as a process and checks what a user would: the exit code, the images, names, ports and
health of what runs afterwards, and that no original was lost when a rollout failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollover.backends.docker.backend import DockerBackend
from rollover.core.model import Order, ReplicaUp
from tests.support.podman import RPOD_BROKEN, RPOD_V1, RPOD_V2, PodmanService, rpod_name
from tests.support.swarm import EventLog
from tests.support.zero_downtime import RolloverRun, run_rollover

pytestmark = pytest.mark.podman

REPLICAS = 4


@dataclass
class SelectorService:
    name: str
    originals: dict[str, str]  # container name -> id

    @property
    def label(self) -> str:
        return f"rpod.service={self.name}"

    def args(self, *extra: str) -> list[str]:
        return ["redeploy", self.name, "--selector", self.label, "--output", "json", *extra]


def containers(podman: PodmanService, service: SelectorService) -> list[dict[str, Any]]:
    """Inspect data of every container carrying the service's label, running or not."""
    found = podman.client.api.containers(all=True, filters={"label": service.label})
    return [podman.client.api.inspect_container(summary["Id"]) for summary in found]


@pytest.fixture
def start_replicas(podman: PodmanService, podman_images: dict[str, str]) -> Iterator[Callable[..., SelectorService]]:
    """Factory: REPLICAS running containers of app:v1 labelled ``rpod.service=<name>``; extra
    host-config options (e.g. a seccomp profile) apply to each. Removed by label at the end."""
    made: list[SelectorService] = []

    def start(**host_options: Any) -> SelectorService:
        service = SelectorService(rpod_name("sel"), {})
        made.append(service)
        api = podman.client.api
        for number in range(1, REPLICAS + 1):
            host_config = api.create_host_config(init=True, port_bindings={8080: ("127.0.0.1", None)},
                                                 **host_options)
            created = api.create_container(RPOD_V1, name=f"{service.name}-{number}", ports=[8080],
                                           labels={"rpod.service": service.name}, host_config=host_config)
            api.start(created["Id"])
            service.originals[f"{service.name}-{number}"] = created["Id"]
        return service

    yield start
    for service in made:
        podman.remove_containers([c["Id"] for c in containers(podman, service)])


def roll(podman: PodmanService, service: SelectorService, *extra: str) -> RolloverRun:
    return asyncio.run(run_rollover(["-H", podman.host, *service.args(*extra)], timeout=240))


def plan_of(run: RolloverRun) -> dict[str, Any]:
    return next(event for event in run.events if event["event"] == "plan")


def assert_all_on(podman: PodmanService, service: SelectorService, image_id: str) -> list[dict[str, Any]]:
    running = containers(podman, service)
    assert sorted(c["Name"].lstrip("/") for c in running) == sorted(service.originals)
    assert all(c["State"]["Running"] for c in running), [(c["Name"], c["State"]["Status"]) for c in running]
    assert {c["Image"].removeprefix("sha256:") for c in running} == {image_id}
    return running


@pytest.mark.parametrize("order", ["auto", "stop-first"])
def test_four_replicas_roll_to_v2_healthy(
    order: str, podman: PodmanService, podman_images: dict[str, str], start_replicas: Callable[..., SelectorService]
) -> None:
    """auto must pick start-first: each replica's host port was random (Podman reports the port it
    picked as if it had been asked for). Every replacement is up only once healthy, and Podman
    ran no healthcheck by itself: rollover ran them."""
    service = start_replicas()
    # auto recognises Podman by its /version; --platform podman insists on it.
    platform = "podman" if order == "stop-first" else "auto"
    run = roll(podman, service, "--image", RPOD_V2, "--order", order, "--step", "2" if order == "stop-first" else "1",
               "--platform", platform)
    assert run.exit_code == 0, run.describe()
    assert plan_of(run)["order"] == ("stop-first" if order == "stop-first" else "start-first"), plan_of(run)
    assert run.summary["replaced"] == REPLICAS
    assert plan_of(run)["where"].endswith("on Podman"), plan_of(run)
    running = assert_all_on(podman, service, podman_images[RPOD_V2])
    for container in running:
        health = container["State"]["Health"]
        assert health["Status"] == "healthy" and health["Log"], (container["Name"], health)
        assert container["Id"] not in service.originals.values()
        assert container["HostConfig"]["Init"] is True
    # Random host ports stay random: each replacement got one of its own.
    ports = [c["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"] for c in running]
    assert len(set(ports)) == REPLICAS, ports


def test_a_failing_image_is_rolled_back_with_every_original_running(
    podman: PodmanService, podman_images: dict[str, str], start_replicas: Callable[..., SelectorService]
) -> None:
    """app:broken never turns healthy (its healthcheck fetches a missing file): the first
    replacement is found unhealthy by the checks rollover runs, and the rollout rolls back."""
    service = start_replicas()
    run = roll(podman, service, "--image", RPOD_BROKEN, "--timeout", "20")
    assert run.exit_code == 1, run.describe()
    assert run.summary["result"] == "rolled-back", run.summary
    assert run.summary["reason"] == "replacement unhealthy", run.summary
    running = assert_all_on(podman, service, podman_images[RPOD_V1])
    assert {c["Id"] for c in running} == set(service.originals.values())


def test_a_create_podman_refuses_under_stop_first_leaves_every_original_running(
    podman: PodmanService, podman_images: dict[str, str], start_replicas: Callable[..., SelectorService],
    tmp_path: Path,
) -> None:
    """The replicas' seccomp profile is gone from the host: Podman refuses to create their
    replacements ("opening seccomp profile failed"). Stop-first had stopped two originals by then;
    both are started again, none is removed."""
    profile = tmp_path / "seccomp.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    service = start_replicas(security_opt=[f"seccomp={profile}"])
    profile.unlink()
    run = roll(podman, service, "--image", RPOD_V2, "--order", "stop-first", "--step", "2")
    assert run.exit_code == 1, run.describe()
    assert "seccomp" in run.stdout, run.describe()
    running = assert_all_on(podman, service, podman_images[RPOD_V1])
    assert {c["Id"] for c in running} == set(service.originals.values())


def test_an_image_podman_does_not_have_touches_nothing(
    podman: PodmanService, podman_images: dict[str, str], start_replicas: Callable[..., SelectorService]
) -> None:
    service = start_replicas()
    run = roll(podman, service, "--image", "rpod-test/app:nowhere", "--order", "stop-first")
    assert run.exit_code == 2, run.describe()
    assert "rpod-test/app:nowhere" in run.stderr, run.describe()
    running = assert_all_on(podman, service, podman_images[RPOD_V1])
    assert {c["Id"] for c in running} == set(service.originals.values())


def test_platform_podman_refuses_an_engine_that_is_not_podman(docker_client: Any) -> None:
    """Against the main dockerd: one line, exit 2, before anything is looked at."""
    run = asyncio.run(run_rollover(["-H", "unix:///var/run/docker.sock", "redeploy", "rpod-none", "--selector",
                                    "rpod.service=rpod-none", "--platform", "podman"], timeout=60))
    assert run.exit_code == 2, run.describe()
    assert run.stderr.strip() == ("error: InvalidOption: --platform podman: the engine at"
                                  " unix:///var/run/docker.sock is not Podman"), run.describe()


def test_a_replacement_whose_start_event_was_lost_is_still_health_checked(
    podman: PodmanService, podman_images: dict[str, str], start_replicas: Callable[..., SelectorService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Podman runs no healthcheck here; rollover runs it from the container's start on. A start
    event lost on the way (a loaded engine, a stream reconnecting) must not leave a replacement
    unchecked until its health budget runs out: rollover's own start of it begins the checks too.
    (The CI run that found it: 'replacement not up within 14s', no check ever run.)"""
    service = start_replicas()
    heard_actions: list[str] = []
    forward = DockerBackend._run_healthchecks

    async def start_event_lost(self: DockerBackend, container_id: str, action: str, has_check: bool) -> None:
        heard_actions.append(action)
        if action != "start":
            await forward(self, container_id, action, has_check)

    monkeypatch.setattr(DockerBackend, "_run_healthchecks", start_event_lost)

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        backend = DockerBackend(service.name, selector={"rpod.service": service.name}, image=RPOD_V2,
                                docker_host=podman.host, clock=loop.time, podman=True)
        await backend.connect()
        log = EventLog(backend.events())
        try:
            snapshot = await backend.snapshot()
            await backend.prepare(snapshot)
            await backend.acquire_lock("tester")
            [made] = await backend.redeploy(snapshot.replicas[:1], Order.START_FIRST)
            await log.wait_for(ReplicaUp, made.id, timeout_s=30)
            await backend.release_lock()
            return made.id
        finally:
            log.close()
            await backend.close()

    made_id = asyncio.run(scenario())
    assert "start" in heard_actions  # the event came, and was dropped: the checks began elsewhere
    made = podman.client.api.inspect_container(made_id)
    assert made["State"]["Health"]["Status"] == "healthy"
