"""DockerBackend against the real engine and Compose v2: no mocks.

Each test builds its own project (or plain containers) named rtest-docker-..., drives the backend
the way the controller does, and checks the result with the engine and the compose CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rollover.backends.docker import backend as docker_backend
from rollover.backends.docker.backend import DockerBackend
from rollover.backends.docker.events import action_of, container_of, replica_event
from rollover.core.model import Order, Replica, ReplicaDown, ReplicaEvent, ReplicaUp
from rollover.engine import Engine
from rollover.errors import EngineUnavailable, ImageNotFound, Locked, ServiceNotFound, Unsupported
from tests.support.engine import (
    APP_BROKEN,
    APP_V1,
    APP_V2,
    ComposeProject,
    remove_containers,
    remove_volumes,
    run,
    unique_name,
)

pytestmark = pytest.mark.engine

MakeProject = Callable[..., ComposeProject]


@asynccontextmanager
async def connected(service: str = "web", **options: Any) -> AsyncIterator[DockerBackend]:
    backend = DockerBackend(service, clock=asyncio.get_running_loop().time, **options)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


class EventLog:
    """Collects a backend's events in the background so tests can wait for the ones they expect."""

    def __init__(self, events: AsyncIterator[ReplicaEvent]) -> None:
        self.seen: list[ReplicaEvent] = []
        self._changed = asyncio.Event()
        self._pump = asyncio.create_task(self._collect(events))

    async def _collect(self, events: AsyncIterator[ReplicaEvent]) -> None:
        try:
            async for event in events:
                self.seen.append(event)
                self._changed.set()
        finally:
            self._changed.set()

    def up(self) -> set[str]:
        return {event.replica_id for event in self.seen if isinstance(event, ReplicaUp)}

    def down(self, replica_id: str) -> list[str]:
        return [e.reason for e in self.seen if isinstance(e, ReplicaDown) and e.replica_id == replica_id]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                if self._pump.done():
                    self._pump.result()
                    raise AssertionError("the event stream ended")
                self._changed.clear()
                await self._changed.wait()

    async def wait_up(self, ids: Iterable[str], timeout_s: float = 30) -> None:
        wanted = set(ids)
        await self.wait_until(lambda: wanted <= self.up(), timeout_s)

    async def stop(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


def served_version(replica: Replica, timeout_s: float = 10) -> str:
    """GET /version.txt from the replica's own address (containers this test made)."""
    address = next(value for key, value in replica.details if key.startswith("ip."))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/version.txt", timeout=2) as response:
                return str(response.read().decode().strip())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def ids_of(containers: Iterable[Any]) -> set[str]:
    return {str(container.id) for container in containers}


# -- observation ---------------------------------------------------------------------------------


def test_snapshot_lists_running_replicas_with_their_healthcheck(
    compose_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = compose_project(APP_V1, replicas=4)
    monkeypatch.chdir(project.directory)  # no project given: found like `docker compose` finds it

    async def scenario() -> Any:
        async with connected() as backend:
            return await backend.snapshot()

    snapshot = asyncio.run(scenario())
    assert snapshot.platform == "compose"
    assert snapshot.description == f"compose project {project.name}, service web"
    assert {replica.id for replica in snapshot.replicas} == ids_of(project.containers())
    for replica in snapshot.replicas:
        assert replica.has_healthcheck and replica.running
        assert replica.image_ref == APP_V1 and replica.image.startswith("sha256:")
        assert replica.health_budget_s == pytest.approx(0.5 * 4 + 2)
        assert replica.fixed_host_ports == ()
        assert dict(replica.details)[f"ip.{project.name}_default"]
    assert [dict(r.details)["compose.number"] for r in snapshot.replicas] == ["1", "2", "3", "4"]


def test_events_report_this_services_replicas_only(compose_project: MakeProject, docker_client: Any) -> None:
    project = compose_project(APP_V1, replicas=2)
    stranger_name = unique_name("stranger")
    stranger_labels = {
        "com.docker.compose.project": unique_name("other"),
        "com.docker.compose.service": "web",
        "com.docker.compose.oneoff": "False",
    }

    async def scenario() -> tuple[EventLog, str]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            stranger = docker_client.containers.run(APP_V1, name=stranger_name, labels=stranger_labels, detach=True)
            ours = snapshot.replicas[0].id
            await asyncio.to_thread(docker_client.api.restart, ours, timeout=5)
            await log.wait_up({ours})
            await asyncio.to_thread(_wait_healthy, docker_client, stranger.id)
            await asyncio.sleep(0.3)  # room for a stray event to show up
            await log.stop()
            return log, ours

    try:
        log, ours = asyncio.run(scenario())
    finally:
        remove_containers(docker_client, [stranger_name])
    assert log.down(ours) == ["exited with code 0"]
    assert {event.replica_id for event in log.seen} == {ours}


def _wait_healthy(client: Any, container_id: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while client.api.inspect_container(container_id)["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, f"{container_id[:12]} never became healthy"
        time.sleep(0.1)


# -- compose rollouts ----------------------------------------------------------------------------


def test_start_first_replacements_come_from_compose_and_survive_compose_up(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=4)

    async def scenario() -> list[Replica]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            project.write(APP_V2, replicas=4)
            await backend.prepare(snapshot)
            first, *rest = snapshot.replicas
            [replacement] = await backend.redeploy([first], Order.START_FIRST)
            assert len(project.containers()) == 5  # start-first: the old one is still there
            await log.wait_up({replacement.id})
            # Acknowledged once created: its address is known once it runs.
            replacement = await backend.refresh(replacement)
            assert await asyncio.to_thread(served_version, replacement) == "v2"
            assert replacement.id[:12] in project.compose("ps", "--format", "{{.ID}}")
            # Retiring while the next wave is created: Compose must not count the container being
            # removed and make one replacement too many.
            _, later = await asyncio.gather(backend.retire(first), backend.redeploy(rest, Order.START_FIRST))
            await log.wait_up(replica.id for replica in later)
            for old in rest:
                await backend.retire(old)
            await log.wait_until(lambda: all("removed" in log.down(old.id) for old in snapshot.replicas))
            await log.stop()
            assert log.down(first.id) == ["exited with code 0", "removed"]
            return [replacement, *later]

    replacements = asyncio.run(scenario())
    assert ids_of(project.containers()) == {replica.id for replica in replacements}
    assert set(project.compose("ps", "-q", "--no-trunc").split()) == {replica.id for replica in replacements}
    said = project.compose("up", "-d")
    assert "Recreate" not in said and "Creat" not in said, said
    assert ids_of(project.containers()) == {replica.id for replica in replacements}


def test_stop_first_replaces_in_place_of_the_old_ones(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=2)

    async def scenario() -> list[Replica]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            project.write(APP_V2, replicas=2)
            await backend.prepare(snapshot)
            replacements = await backend.redeploy(snapshot.replicas, Order.STOP_FIRST)
            # stop-first: the old ones are gone before the replacements exist
            assert ids_of(project.containers()) == {replica.id for replica in replacements}
            await log.wait_up(replica.id for replica in replacements)
            await log.stop()
            assert all(log.down(old.id) == ["exited with code 0", "removed"] for old in snapshot.replicas)
            return replacements

    replacements = asyncio.run(scenario())
    assert [served_version(replica) for replica in replacements] == ["v2", "v2"]
    said = project.compose("up", "-d")
    assert "Recreate" not in said and "Creat" not in said, said
    assert ids_of(project.containers()) == {replica.id for replica in replacements}


def test_named_and_anonymous_volume_data_survives_both_orders(compose_project: MakeProject, docker_client: Any) -> None:
    project = compose_project(APP_V1, replicas=2, volumes=True)
    for container in project.containers():
        container.exec_run(["sh", "-c", f"echo {container.name} > /data/owner && echo kept > /shared/note"])
    owner_of = {str(c.id): c.name for c in project.containers()}

    async def scenario() -> tuple[dict[str, str], list[Replica]]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            project.write(APP_V2, replicas=2, volumes=True)
            await backend.prepare(snapshot)
            started_first = await backend.redeploy(snapshot.replicas, Order.START_FIRST)
            await log.wait_up(replica.id for replica in started_first)
            for old in snapshot.replicas:
                await backend.retire(old)
            handed = {new.id: owner_of[old.id] for old, new in zip(snapshot.replicas, started_first, strict=True)}
            stopped_first = await backend.redeploy(started_first, Order.STOP_FIRST)
            await log.wait_up(replica.id for replica in stopped_first)
            await log.stop()
            owners = {new.id: handed[old.id] for old, new in zip(started_first, stopped_first, strict=True)}
            return owners, stopped_first

    try:
        owners, final = asyncio.run(scenario())
    finally:
        project.remember_volumes()
    assert len(project.volumes) == 3  # the named volume and the two original anonymous ones, nothing new
    for replica in final:
        container = docker_client.containers.get(replica.id)
        assert container.exec_run(["cat", "/data/owner"]).output.decode().strip() == owners[replica.id]
        assert container.exec_run(["cat", "/shared/note"]).output.decode().strip() == "kept"
    said = project.compose("up", "-d")
    assert "Recreate" not in said and "Creat" not in said, said


def test_restore_puts_the_original_image_back(compose_project: MakeProject, app_images: dict[str, str]) -> None:
    project = compose_project(APP_V1, replicas=1)

    async def scenario() -> tuple[Replica, Replica]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            project.write(APP_V2, replicas=1)
            [original] = snapshot.replicas
            [replacement] = await backend.redeploy([original], Order.START_FIRST)
            await log.wait_up({replacement.id})
            await backend.retire(original)
            restored = await backend.restore(replacement, original, Order.START_FIRST)
            await log.wait_up({restored.id})
            await backend.retire(replacement)
            await log.stop()
            return original, restored

    original, restored = asyncio.run(scenario())
    assert restored.image == app_images[APP_V1] and restored.image_ref == APP_V1
    assert restored.name == original.name
    assert served_version(restored) == "v1"
    assert ids_of(project.containers()) == {restored.id}
    assert restored.id[:12] in project.compose("ps", "--format", "{{.ID}}")


def test_restore_is_idempotent_across_an_outage(
    compose_project: MakeProject, app_images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon goes away just after the restore created its container (stop-first: the replaced
    replica is stopped, and goes only once the restored one runs on its volumes), so neither the
    start nor _create's cleanup reach it. The retry
    finishes that work: the half-made container goes, one restored replica runs; a third call (its
    answer lost) returns that same replica."""
    project = compose_project(APP_V1, replicas=1)
    outage = {"starts_to_fail": 1, "on": False}
    real_start, real_remove = Engine.start, Engine.remove

    async def start(self: Engine, container_id: str) -> None:
        if outage["starts_to_fail"]:  # the first start the restore sends: the daemon is gone from here on
            outage["starts_to_fail"], outage["on"] = 0, True
        if outage["on"]:
            raise EngineUnavailable("the daemon went away (simulated)")
        await real_start(self, container_id)

    async def remove(self: Engine, container_id: str, *, force: bool, volumes: bool) -> None:
        if outage["on"]:
            raise EngineUnavailable("the daemon went away (simulated)")
        await real_remove(self, container_id, force=force, volumes=volumes)

    async def scenario() -> tuple[Replica, Replica, list[str]]:
        async with connected(project=project.name) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            project.write(APP_V2, replicas=1)
            [original] = snapshot.replicas
            [replacement] = await backend.redeploy([original], Order.STOP_FIRST)
            await log.wait_up({replacement.id})
            monkeypatch.setattr(Engine, "start", start)
            monkeypatch.setattr(Engine, "remove", remove)
            with pytest.raises(EngineUnavailable):
                await backend.restore(replacement, original, Order.STOP_FIRST)
            half_made = [c.attrs["State"]["Status"] for c in project.containers()]
            outage["on"] = False  # the daemon is back
            restored = await backend.restore(replacement, original, Order.STOP_FIRST)
            await log.wait_up({restored.id})
            again = await backend.restore(replacement, original, Order.STOP_FIRST)
            await log.stop()
            assert again.id == restored.id
            return original, restored, half_made

    original, restored, half_made = asyncio.run(scenario())
    # What the first attempt left: made, never started, beside the replaced one (stopped, its
    # volumes still mounted: never a moment when nothing mounts them).
    assert sorted(half_made) == ["created", "exited"]
    assert ids_of(project.containers()) == {restored.id}  # one restored replica, nothing half-made left
    assert restored.name == original.name and restored.image == app_images[APP_V1]
    assert served_version(restored) == "v1"


def test_failed_replacement_turns_unhealthy_and_is_discarded(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=1)

    async def scenario() -> tuple[Replica, Replica, EventLog]:
        async with connected(project=project.name, image=APP_BROKEN) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            await backend.prepare(snapshot)
            [old] = snapshot.replicas
            [broken] = await backend.redeploy([old], Order.START_FIRST)
            assert broken.image_ref == APP_BROKEN
            await log.wait_until(lambda: "unhealthy" in log.down(broken.id))
            await backend.discard(broken)
            await log.wait_until(lambda: "removed" in log.down(broken.id))
            await log.stop()
            return old, broken, log

    old, broken, log = asyncio.run(scenario())
    assert ids_of(project.containers()) == {old.id}
    assert broken.id not in log.up()


# -- refusals before anything is touched -----------------------------------------------------------


def test_lock_conflict_names_the_holder(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=1)

    async def scenario() -> None:
        async with connected(project=project.name) as first, connected(project=project.name) as second:
            await first.snapshot()
            await second.snapshot()
            await first.acquire_lock("alice@ci-7")
            with pytest.raises(Locked, match=r"rollout of web already running: held by alice@ci-7 since 20"):
                await second.acquire_lock("bob@laptop")
            await first.release_lock()
            await second.acquire_lock("bob@laptop")
            await second.release_lock()

    asyncio.run(scenario())


def test_unknown_project_is_service_not_found(docker_client: Any) -> None:
    missing = unique_name("missing")

    async def scenario() -> None:
        async with connected(project=missing) as backend:
            await backend.snapshot()

    with pytest.raises(ServiceNotFound, match=f"compose project {missing} has no running replicas of service web"):
        asyncio.run(scenario())


def test_no_compose_project_here_is_service_not_found(
    docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ServiceNotFound, match="no compose project given and none found"):
        asyncio.run(connected().__aenter__())


def test_missing_image_is_image_not_found(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=1)
    missing = f"{unique_name('missing')}/app:nope"

    async def scenario() -> None:
        async with connected(project=project.name, image=missing) as backend:
            await backend.prepare(await backend.snapshot())

    with pytest.raises(ImageNotFound, match=re.escape(f"image {missing} is not present locally and cannot be pulled")):
        asyncio.run(scenario())


def test_container_name_is_unsupported(compose_project: MakeProject) -> None:
    project = compose_project(APP_V1, replicas=1, container_name=unique_name("fixed"))

    async def scenario() -> None:
        async with connected(project=project.name) as backend:
            await backend.prepare(await backend.snapshot())

    with pytest.raises(Unsupported, match="sets container_name"):
        asyncio.run(scenario())


def test_unreachable_engine_is_engine_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    socket = "unix:///nonexistent/rtest-docker.sock"
    with pytest.raises(EngineUnavailable, match=re.escape(f"cannot reach the Docker daemon at {socket}: ")):
        asyncio.run(connected(project="x", docker_host=socket).__aenter__())
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(EngineUnavailable, match=re.escape("cannot reach the Docker daemon at tcp://127.0.0.1:9: ")):
        asyncio.run(connected(project="x").__aenter__())


# -- plain containers, by label ------------------------------------------------------------------


@pytest.fixture
def labelled_containers(docker_client: Any, app_images: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """Two `docker run` containers on their own network and named volume, without healthcheck."""
    name = unique_name("sel")
    labels = {"rtest.selector": name}
    run("docker", "network", "create", name)
    try:
        for number in (1, 2):
            run(
                "docker", "run", "-d", "--name", f"{name}-{number}", "--label", f"rtest.selector={name}",
                "--network", name, "--network-alias", "app", "-e", "GREETING=hi", "-v", f"{name}:/shared",
                "--no-healthcheck", "--stop-timeout", "3", APP_V1,
            )  # fmt: skip
        yield labels, name
    finally:
        made = docker_client.containers.list(all=True, filters={"label": f"rtest.selector={name}"})
        selector_hash = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:12]
        remove_containers(docker_client, [c.name for c in made] + [f"rollover-lock-sel-{selector_hash}"])
        remove_volumes(docker_client, {name})
        run("docker", "network", "rm", name)


def test_selector_service_redeploys_by_cloning(
    labelled_containers: tuple[dict[str, str], str], docker_client: Any, app_images: dict[str, str]
) -> None:
    labels, network = labelled_containers

    async def scenario() -> tuple[Replica, Replica]:
        async with connected(selector=labels, image=APP_V2) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            assert snapshot.platform == "docker" and len(snapshot.replicas) == 2
            assert not any(replica.has_healthcheck for replica in snapshot.replicas)
            await backend.prepare(snapshot)
            await backend.acquire_lock("tester")
            first, second = snapshot.replicas
            [beside] = await backend.redeploy([first], Order.START_FIRST)
            assert beside.name.startswith(f"{first.name}-rollover-")
            await log.wait_up({beside.id})  # no healthcheck: up when it starts
            beside = await backend.refresh(beside)  # acknowledged once created: running by now
            await backend.retire(first)
            [in_place] = await backend.redeploy([second], Order.STOP_FIRST)
            assert in_place.name == second.name
            await log.wait_up({in_place.id})
            assert await asyncio.to_thread(served_version, in_place) == "v2"
            restored = await backend.restore(in_place, second, Order.STOP_FIRST)
            await log.wait_up({restored.id})
            await backend.release_lock()
            await log.stop()
            return beside, restored

    beside, restored = asyncio.run(scenario())
    renamed = docker_client.containers.get(beside.id)
    assert renamed.name == f"{network}-1"  # took the old name once the old container was gone
    config = renamed.attrs["Config"]
    assert "APP_VERSION=v2" in config["Env"] and "GREETING=hi" in config["Env"]  # image default vs user's
    assert config["Healthcheck"]["Test"] == ["NONE"]
    assert "app" in renamed.attrs["NetworkSettings"]["Networks"][network]["Aliases"]
    assert [m["Name"] for m in renamed.attrs["Mounts"]] == [network]
    assert served_version(beside) == "v2"
    assert restored.image == app_images[APP_V1] and restored.name == f"{network}-2"
    assert "APP_VERSION=v1" in docker_client.containers.get(restored.id).attrs["Config"]["Env"]
    assert served_version(restored) == "v1"


def test_a_replacement_the_engine_stayed_silent_about_is_seen_up_by_a_later_look(
    labelled_containers: tuple[dict[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine drops events for a subscriber that falls behind, with no sign on the stream.
    Here every event of the replacement is lost on the way: rollover must still see it up (by
    looking at it again, rechecks.py), not wait out its health budget and roll back."""
    labels, _ = labelled_containers
    dropped: list[str] = []
    originals: set[str] = set()

    def lossy(raw: dict[str, Any], at: float, has_check: bool) -> ReplicaEvent | None:
        if container_of(raw) not in originals:
            dropped.append(action_of(raw))
            return None
        return replica_event(raw, at, has_check)

    monkeypatch.setattr(docker_backend, "replica_event", lossy)

    async def scenario() -> None:
        async with connected(selector=labels, image=APP_V2) as backend:
            log = EventLog(backend.events())
            snapshot = await backend.snapshot()
            originals.update(replica.id for replica in snapshot.replicas)
            await backend.prepare(snapshot)
            await backend.acquire_lock("tester")
            [beside] = await backend.redeploy(snapshot.replicas[:1], Order.START_FIRST)
            await log.wait_up({beside.id}, timeout_s=30)
            await backend.release_lock()
            await log.stop()

    asyncio.run(scenario())
    assert "start" in dropped  # the engine did send it: it was lost on the way, and seen anyway
