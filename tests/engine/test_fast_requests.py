"""Fast redeploy requests (issue 13), on the real engine and Compose v2: a request is acknowledged once
the engine has created the replacement, the start follows on its own, and Compose replacements after
the rollout's first are made through the Engine API as copies of the one Compose made.

What a user would check, never timings (those are in bench/): Compose agrees afterwards on a service
with networks, aliases, named and anonymous volumes, an env file and labels; a replacement that cannot
start after it was acknowledged fails the rollout (exit 1, rolled back); a create the daemon refuses is
a failed request; replacements made and never started by a killed rollout are cleaned up by the next.
Everything is named ``rtest-docker-...`` and removed by name afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from rollover.backends.docker.backend import DockerBackend
from rollover.core.model import Order
from rollover.errors import PlatformError
from tests.engine.test_redeploy_cli import (
    assert_compose_owns_exactly,
    ids_of,
    rollover,
    service_containers,
)
from tests.support.engine import APP_V1, APP_V2, ComposeProject, remove_containers, run, unique_name

pytestmark = pytest.mark.engine

REPLICAS = 3  # step 2: the template and a copy in the first wave, a copy in the second


def rich_compose_file(project: str, image: str, *, entrypoint: str | None = None) -> str:
    """``web`` with two networks (an alias on one), a named and an anonymous volume, an env file
    and labels: everything Compose puts on a container that a copy could get wrong."""
    extra = f"    entrypoint: [\"{entrypoint}\"]\n" if entrypoint else ""
    return textwrap.dedent(f"""\
        name: {project}
        services:
          web:
            image: {image}
            init: true
            stop_grace_period: 5s
            deploy:
              replicas: {REPLICAS}
            env_file: [app.env]
            labels:
              shop.team: "checkout"
            networks:
              front:
                aliases: [shop-web]
              default: {{}}
            volumes:
              - shared:/shared
              - /data
        """) + extra + textwrap.dedent("""\
        networks:
          front: {}
        volumes:
          shared: {}
        """)


@pytest.fixture
def rich_project(docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> Iterator[ComposeProject]:
    project = ComposeProject(unique_name("fast"), tmp_path / "rich", docker_client)
    project.directory.mkdir()
    (project.directory / "app.env").write_text("SHOP_REGION=eu-1\n")
    project.file.write_text(rich_compose_file(project.name, APP_V1))
    try:
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        project.remember_volumes()
        yield project
    finally:
        project.tear_down()


def kinds_at(outcome: Any, kind: str) -> float:
    """When the first event of ``kind`` was reported."""
    return min(event["t"] for event in outcome.events if event["event"] == kind)


def write_marker(container: Any) -> str:
    """A file only this replica's anonymous volume holds; its content."""
    marker = f"data-of-{container.name}"
    run("docker", "exec", container.id, "sh", "-c", f"echo {marker} > /data/marker")
    return marker


def read_marker(container: Any) -> str:
    return run("docker", "exec", container.id, "cat", "/data/marker").strip()


def test_compose_agrees_with_replacements_made_through_the_engine(
    rich_project: ComposeProject, app_images: dict[str, str]
) -> None:
    project = rich_project
    markers = {write_marker(container) for container in service_containers(project)}
    project.file.write_text(rich_compose_file(project.name, APP_V2))

    outcome = rollover("redeploy", "web", "--project", project.name, "--step", "2", "--output", "json",
                       cwd=project.directory)

    assert outcome.code == 0, str(outcome)
    assert outcome.summary["replaced"] == REPLICAS, str(outcome)
    containers = service_containers(project)
    assert len(containers) == REPLICAS
    # Every replica kept its data: the anonymous volumes were handed over, one each.
    assert {read_marker(container) for container in containers} == markers
    for container in containers:
        attrs = container.attrs
        assert attrs["Image"] == app_images[APP_V2], container.name
        assert "SHOP_REGION=eu-1" in attrs["Config"]["Env"], container.name
        assert attrs["Config"]["Labels"]["shop.team"] == "checkout", container.name
        networks = attrs["NetworkSettings"]["Networks"]
        front = networks[f"{project.name}_front"]["Aliases"]
        assert {container.name, "web", "shop-web"} <= set(front), (container.name, front)
        assert {container.name, "web"} <= set(networks[f"{project.name}_default"]["Aliases"]), container.name
        assert any(m["Type"] == "volume" and m["Name"] == f"{project.name}_shared" for m in attrs["Mounts"])
    for container in containers:  # Compose's numbering: each its own number, named after it
        number = container.attrs["Config"]["Labels"]["com.docker.compose.container-number"]
        assert container.name == f"{project.name}-web-{number}"
    assert_compose_owns_exactly(project, ids_of(containers))


def test_a_replacement_that_cannot_start_after_its_acknowledgement_is_rolled_back(
    rich_project: ComposeProject, app_images: dict[str, str]
) -> None:
    """Compose creates it (the request is acknowledged), the engine refuses to start it: exit 1,
    the service is back on v1 with every replica's data, and nothing of the failed version is left."""
    project = rich_project
    originals = service_containers(project)
    markers = {write_marker(container) for container in originals}
    project.file.write_text(rich_compose_file(project.name, APP_V2, entrypoint="/no/such/entrypoint"))

    outcome = rollover("redeploy", "web", "--project", project.name, "--step", "2", "--output", "json",
                       cwd=project.directory)

    assert outcome.code == 1, str(outcome)
    kinds = [event["event"] for event in outcome.events]
    assert "acknowledged" in kinds, str(outcome)
    # The engine reports the refused start as the container's death (exit 127), or rollover does
    # ("could not start"), whichever comes first.
    failed = [event for event in outcome.events if event["event"] == "failed"]
    assert failed and all(event["t"] > kinds_at(outcome, "acknowledged") for event in failed), str(outcome)
    assert outcome.summary["result"] == "rolled-back", str(outcome)
    after = service_containers(project)
    assert len(after) == REPLICAS, [c.name for c in after]
    assert all(c.attrs["State"]["Status"] == "running" and c.attrs["Image"] == app_images[APP_V1] for c in after)
    assert {read_marker(container) for container in after} == markers
    project.remember_volumes()


@pytest.fixture
def bound_selector(docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Two labelled containers bind-mounting a host directory; yields (label value, that directory)."""
    label, source = unique_name("bind"), tmp_path / "bound"
    source.mkdir()
    names = [f"{label}-{n}" for n in (1, 2)]
    try:
        for name in names:
            docker_client.containers.run(APP_V1, name=name, detach=True, init=True, labels={"rtest.app": label},
                                         mounts=[docker.types.Mount("/bound", str(source), type="bind")])
        yield label, source
    finally:
        made = docker_client.containers.list(all=True, filters={"label": f"rtest.app={label}"})
        remove_containers(docker_client, [*names, *(c.name for c in made)])


def test_a_create_the_daemon_refuses_is_a_failed_request(
    bound_selector: tuple[str, Path], docker_client: Any
) -> None:
    """The bind source is gone: the engine refuses every clone's create. The rollout fails (exit 1)
    and leaves the service exactly as it was."""
    label, source = bound_selector
    before = {c.id for c in docker_client.containers.list(filters={"label": f"rtest.app={label}"})}
    shutil.rmtree(source)

    outcome = rollover("redeploy", "web", "--selector", f"rtest.app={label}", "--image", APP_V2,
                       "--output", "json", cwd=source.parent)

    assert outcome.code == 1, str(outcome)
    failed = [event for event in outcome.events if event["event"] == "failed"]
    assert failed and "bind" in str(failed[0]).lower(), str(outcome)
    assert "acknowledged" not in [event["event"] for event in outcome.events], str(outcome)
    after = docker_client.containers.list(all=True, filters={"label": f"rtest.app={label}"})
    assert {c.id for c in after} == before and all(c.status == "running" for c in after)


KILLED_AFTER_CREATE = """
import asyncio, os, signal, sys
from rollover.backends.docker.backend import DockerBackend
from rollover.core.model import Order

async def main() -> None:
    backend = DockerBackend("web", project=sys.argv[1], clock=asyncio.get_running_loop().time)
    await backend.connect()
    backend.events()
    snapshot = await backend.snapshot()
    await backend.prepare(snapshot)
    await backend.acquire_lock("rtest killed after create", replicas=len(snapshot.replicas))
    backend._start_later = lambda container_id: None  # killed before any start went out
    made = await backend.redeploy(snapshot.replicas[:2], Order.START_FIRST)
    print(" ".join(replica.id for replica in made), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_replacements_made_and_never_started_by_a_killed_rollout_are_cleaned_up(
    rich_project: ComposeProject, app_images: dict[str, str]
) -> None:
    project = rich_project
    project.file.write_text(rich_compose_file(project.name, APP_V2))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_CREATE, project.name], capture_output=True,
                            text=True, timeout=120, check=False, cwd=project.directory)
    assert killed.returncode == -9, killed.stderr
    unstarted = set(killed.stdout.split())
    assert len(unstarted) == 2
    project.remember_volumes()

    outcome = rollover("redeploy", "web", "--project", project.name, "--step", "2", "--output", "json",
                       cwd=project.directory)

    assert outcome.code == 0, str(outcome)
    assert "took_over_lock" in [event["event"] for event in outcome.events], str(outcome)
    after = service_containers(project)
    assert len(after) == REPLICAS and not unstarted & ids_of(after), [c.name for c in after]
    assert all(c.attrs["Image"] == app_images[APP_V2] for c in after)
    assert_compose_owns_exactly(project, ids_of(after))



async def _request_whose_answer_is_lost(project: str) -> None:
    """Take the lock, send one start-first request for two replicas whose second create the daemon
    carries out but never answers (it went down mid-request), then release the lock."""
    backend = DockerBackend("web", project=project, clock=asyncio.get_running_loop().time)
    await backend.connect()
    try:
        snapshot = await backend.snapshot()
        await backend.prepare(snapshot)
        await backend.acquire_lock("rtest lost answer", replicas=len(snapshot.replicas))
        engine = backend._workshop.connected()
        carried_out = engine.create_container

        async def answer_lost(body: dict[str, Any], name: str) -> str | None:
            await carried_out(body, name)
            raise PlatformError("cannot reach the Docker daemon: the connection was closed")

        engine.create_container = answer_lost  # type: ignore[method-assign]
        with pytest.raises(PlatformError):
            await backend.redeploy(snapshot.replicas[:2], Order.START_FIRST)
        engine.create_container = carried_out  # type: ignore[method-assign]
        await backend.release_lock()
    finally:
        await backend.close()


def test_a_request_the_daemon_carried_out_but_never_answered_leaves_nothing_behind(
    rich_project: ComposeProject,
) -> None:
    """The first replacement is Compose's template, the second a copy whose create the daemon made
    and never answered: the request failed, and neither may stay behind once the lock goes (Compose
    would count them, and start them, in its next scale-up)."""
    project = rich_project
    before = ids_of(service_containers(project))
    project.file.write_text(rich_compose_file(project.name, APP_V2))

    asyncio.run(_request_whose_answer_is_lost(project.name))

    after = service_containers(project)
    assert ids_of(after) == before, [(c.name, c.status) for c in after]
    assert all(c.status == "running" for c in after)
    assert set(project.compose("ps", "--all", "-q", "--no-trunc").split()) == before
