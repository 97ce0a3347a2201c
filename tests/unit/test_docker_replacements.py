"""The Docker backend's two ways of making replacements, and the workshop they share, without an engine.

A stand-in engine keeps containers in a dict: enough to see which strategy a scope gets, which
image checks a prepare makes, where a selector clone is made and under which name, and that a
start-first clone takes its target's name once the target is retired. What Compose itself makes
is for the engine tests (tests/engine/test_docker_backend.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from rollover.backends.docker.replacements import ComposeReplacements, SelectorReplacements, replacements_for
from rollover.backends.docker.scope import ServiceScope
from rollover.backends.docker.workshop import Workshop
from rollover.core.model import Order, Replica, ServiceSnapshot
from rollover.errors import ImageNotFound, PlatformError

T = TypeVar("T")
Inspect = dict[str, Any]

SELECTOR = ServiceScope("web", selector={"app": "web"})
COMPOSE = ServiceScope("web", project="shop")
IMAGES = {"app:v1": {"Id": "sha256:v1", "Config": {}}, "app:v2": {"Id": "sha256:v2", "Config": {}}}


class StandInEngine:
    """The Engine methods the strategies and the workshop call, over containers kept in a dict."""

    def __init__(self, images: dict[str, Inspect], pullable: frozenset[str] = frozenset()) -> None:
        self.images = dict(images)
        self.pullable = pullable
        self.containers: dict[str, Inspect] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def add(self, name: str, image_ref: str, labels: dict[str, str]) -> Replica:
        container_id = f"{next(self._ids):064x}"
        self.containers[container_id] = {
            "Id": container_id, "Name": f"/{name}", "Image": self.images[image_ref]["Id"],
            "Config": {"Image": image_ref, "Labels": labels}, "HostConfig": {"NetworkMode": "default"},
            "State": {"Running": True, "Status": "running"},
        }
        return Replica(container_id, name, image_ref=image_ref)

    def names(self) -> list[str]:
        return sorted(str(inspect["Name"]).lstrip("/") for inspect in self.containers.values())

    async def inspect_image(self, ref: str) -> Inspect | None:
        return self.images.get(ref)

    async def pull(self, ref: str) -> None:
        self.calls.append(("pull", ref))
        if ref not in self.pullable:
            raise PlatformError(f"pull access denied for {ref}")
        self.images[ref] = {"Id": f"sha256:{ref}", "Config": {}}

    async def inspect_container(self, id_or_name: str) -> Inspect | None:
        return next((inspect for container_id, inspect in self.containers.items()
                     if id_or_name in (container_id, str(inspect["Name"]).lstrip("/"))), None)

    async def create_container(self, body: Inspect, name: str) -> str | None:
        if name in self.names():
            return None
        container_id = f"{next(self._ids):064x}"
        config = {key: value for key, value in body.items() if key not in ("HostConfig", "NetworkingConfig")}
        self.containers[container_id] = {
            "Id": container_id, "Name": f"/{name}", "Image": self.images[config["Image"]]["Id"], "Config": config,
            "HostConfig": body["HostConfig"], "State": {"Running": False, "Status": "created"},
        }
        self.calls.append(("create", name))
        return container_id

    async def start(self, container_id: str) -> None:
        self.calls.append(("start", str(self.containers[container_id]["Name"]).lstrip("/")))
        self.containers[container_id]["State"] = {"Running": True, "Status": "running"}

    async def stop(self, container_id: str, timeout_s: int) -> None:
        self.containers[container_id]["State"] = {"Running": False, "Status": "exited"}

    async def remove(self, container_id: str, *, force: bool, volumes: bool) -> None:
        self.calls.append(("remove", str(self.containers.pop(container_id)["Name"]).lstrip("/")))

    async def rename(self, container_id: str, name: str) -> None:
        self.containers[container_id]["Name"] = f"/{name}"


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


def selector_site(images: dict[str, Inspect] = IMAGES, *, image: str | None = "app:v2", pull: bool = False,
                  pullable: frozenset[str] = frozenset()) -> tuple[StandInEngine, Workshop, SelectorReplacements]:
    engine = StandInEngine(images, pullable)
    workshop = Workshop(engine)  # type: ignore[arg-type]  # the stand-in has the methods used
    return engine, workshop, SelectorReplacements(workshop, image=image, pull=pull)


@pytest.mark.parametrize(("scope", "strategy"), [(COMPOSE, ComposeReplacements), (SELECTOR, SelectorReplacements)],
                         ids=["compose-project", "label-selector"])
def test_the_scope_chooses_the_way_replacements_are_made(scope: ServiceScope, strategy: type) -> None:
    chosen = replacements_for(scope, Workshop(), image=None, pull=False, docker_host=None)
    assert isinstance(chosen, strategy)


@pytest.mark.parametrize(("images", "pull", "pullable", "pulled"), [
    (IMAGES, False, frozenset(), []),
    ({"app:v1": IMAGES["app:v1"]}, False, frozenset({"app:v2"}), ["app:v2"]),
    (IMAGES, True, frozenset({"app:v2"}), ["app:v2"]),
], ids=["present-no-pull", "absent-pulled", "pull-asked"])
def test_a_selector_prepare_pulls_only_what_is_missing_or_asked_for(
    images: dict[str, Inspect], pull: bool, pullable: frozenset[str], pulled: list[str],
) -> None:
    engine, _, replacements = selector_site(images, pull=pull, pullable=pullable)
    run(replacements.prepare(SELECTOR, ServiceSnapshot("web", "docker", ())))
    assert [ref for call, ref in engine.calls if call == "pull"] == pulled


def test_a_selector_prepare_without_the_image_anywhere_is_image_not_found() -> None:
    _, _, replacements = selector_site({"app:v1": IMAGES["app:v1"]})
    with pytest.raises(ImageNotFound, match="image app:v2 is not present locally and cannot be pulled"):
        run(replacements.prepare(SELECTOR, ServiceSnapshot("web", "docker", ())))


def test_a_selector_prepare_checks_every_replicas_own_image_when_none_is_given() -> None:
    engine, _, replacements = selector_site({}, image=None, pullable=frozenset({"app:v1", "app:v3"}))
    snapshot = ServiceSnapshot("web", "docker", (Replica("a", "web-1", image_ref="app:v3"),
                                                 Replica("b", "web-2", image_ref="app:v1")))
    run(replacements.prepare(SELECTOR, snapshot))
    assert engine.calls == [("pull", "app:v1"), ("pull", "app:v3")]


def test_a_start_first_clone_is_made_beside_its_target_and_takes_its_name_on_retire() -> None:
    engine, workshop, replacements = selector_site()
    target = engine.add("web-1", "app:v1", {"app": "web"})

    async def scenario() -> Replica:
        [new] = await replacements.replace(SELECTOR, [target], Order.START_FIRST)
        assert new.running and new.image_ref == "app:v2" and new.name.startswith("web-1-rollover-")
        assert sorted(engine.names()) == sorted(["web-1", new.name])
        await engine.remove(target.id, force=True, volumes=False)  # what retire() does first
        await workshop.hand_name_over(target.id)
        return new

    new = run(scenario())
    assert engine.names() == ["web-1"] and engine.containers[new.id]["Name"] == "/web-1"


def test_a_stop_first_clone_takes_the_place_and_the_name_of_its_target_once_it_runs() -> None:
    # The (stopped) target goes only after its clone, mounting its volumes, has started: a kill in
    # between leaves both, never neither (see leftovers.py).
    engine, workshop, replacements = selector_site()
    target = engine.add("web-1", "app:v1", {"app": "web"})
    [new] = run(replacements.replace(SELECTOR, [target], Order.STOP_FIRST))
    [(_, temporary)] = [call for call in engine.calls if call[0] == "create"]
    assert temporary.startswith("web-1-rollover-")
    assert engine.calls == [("create", temporary), ("start", temporary), ("remove", "web-1")]
    assert new.name == "web-1" and new.id != target.id and engine.names() == ["web-1"]
    run(workshop.hand_name_over(target.id))  # nothing was waiting for its name
    assert engine.names() == ["web-1"]


def test_a_selector_refill_is_cloned_from_the_last_snapshot_under_a_name_of_its_own() -> None:
    engine, _, replacements = selector_site()
    source = engine.add("web-1", "app:v1", {"app": "web"})
    made = run(replacements.refill(SELECTOR, 2, (source.id,)))
    assert len(made) == 2 and all(replica.name.startswith("web-") and replica.running for replica in made)
    assert len(set(engine.names())) == 3


def test_a_selector_refill_before_any_snapshot_is_refused() -> None:
    _, _, replacements = selector_site()
    with pytest.raises(PlatformError, match="take a snapshot first"):
        run(replacements.refill(SELECTOR, 1, ()))


def test_a_compose_prepare_before_any_snapshot_is_refused_before_compose_runs() -> None:
    replacements = ComposeReplacements(Workshop(), image=None, pull=False, docker_host=None)
    with pytest.raises(PlatformError, match="take a snapshot first: it finds the compose project's files"):
        run(replacements.prepare(COMPOSE, ServiceSnapshot("web", "compose", ())))


def test_a_container_removed_unstarted_is_internal_and_its_events_are_not_the_services() -> None:
    engine, workshop, _ = selector_site()
    made = engine.add("web-1-half-made", "app:v1", {"app": "web"})
    run(workshop.remove_unstarted(made.id))
    assert workshop.is_internal(made.id) and not workshop.is_internal("another")
    assert engine.names() == []


def test_a_removed_replacement_no_longer_waits_for_a_name() -> None:
    engine, workshop, _ = selector_site()
    old, new = engine.add("web-1", "app:v1", {}), engine.add("web-1-rollover-abc123", "app:v2", {})
    workshop.rename_on_retire(old.id, new.id, "web-1")
    workshop.drop_renames_to([new.id])
    run(workshop.hand_name_over(old.id))
    assert engine.names() == ["web-1", "web-1-rollover-abc123"]
