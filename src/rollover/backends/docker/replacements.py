"""The two ways a Docker backend makes replacements, chosen once when the backend is built.

- ``ComposeReplacements``: Compose itself makes them (``up --no-start --no-recreate --scale``, see
  compose.py), so they are exactly what ``docker compose up`` would make from the current files;
  each then takes over its predecessor's anonymous volumes, and rollover starts it.
- ``SelectorReplacements``: a clone of the target's recorded definition on the rollout's image
  (clone.py), made beside the target (start-first) or in its place (stop-first).

Both run under the workshop's ``mutations`` lock (see backend.py's rules) and leave nothing
half-made behind. The scope is passed with each call: a Compose project named by neither flag is
only known once the backend connected.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Protocol

from rollover.backends.docker.clone import CloneRequest, clone_request, with_fresh_anonymous_volumes
from rollover.backends.docker.compose import (
    ComposeProject,
    docker_cli_env,
    image_override_file,
    run_docker,
    scale_up_command,
    service_definition,
)
from rollover.backends.docker.inspect import container_name, image_ref_of, labels_of
from rollover.backends.docker.scope import ServiceScope, replica_order
from rollover.backends.docker.workshop import Workshop
from rollover.core.model import Order, Replica, ServiceSnapshot
from rollover.engine import Inspect
from rollover.errors import ImageNotFound, PlatformError, RolloverError, Unsupported


class Replacements(Protocol):
    """How a service's replacements are made; the targets of a stop-first replace are stopped already."""

    async def prepare(self, scope: ServiceScope, snapshot: ServiceSnapshot) -> None:
        """Before anything is touched: fail now if no replacement could be made (no image)."""

    async def replace(self, scope: ServiceScope, targets: Sequence[Replica], order: Order) -> list[Replica]:
        """One started replacement per target, in the targets' order."""

    async def refill(self, scope: ServiceScope, count: int, snapshot_ids: Sequence[str]) -> list[Replica]:
        """``count`` started replicas replacing nothing (a dead rollout removed replicas it never
        replaced); ``snapshot_ids``: the replicas the last snapshot found. They get fresh anonymous
        volumes: the removed replicas' volumes are still on the engine, but nothing records which
        replica had which."""


def replacements_for(scope: ServiceScope, workshop: Workshop, *, image: str | None, pull: bool,
                     docker_host: str | None, compose_project: ComposeProject | None = None) -> Replacements:
    """Compose's way for a Compose service, cloning for a label-selected one."""
    if scope.is_compose:
        return ComposeReplacements(workshop, image=image, pull=pull, docker_host=docker_host,
                                   project=compose_project)
    return SelectorReplacements(workshop, image=image, pull=pull)


async def ensure_image(workshop: Workshop, ref: str, pull: bool) -> None:
    """The image is on the engine (pulled when asked, or when it is not there); else ImageNotFound."""
    engine = workshop.connected()
    if not pull and await engine.inspect_image(ref) is not None:
        return
    try:
        await engine.pull(ref)
    except (PlatformError, ImageNotFound) as exc:
        local = "" if pull else " is not present locally and"
        raise ImageNotFound(f"image {ref}{local} cannot be pulled: {exc}") from exc


class ComposeReplacements:
    """Replacements made by Compose, as ``docker compose up --scale`` would make them."""

    def __init__(self, workshop: Workshop, *, image: str | None, pull: bool, docker_host: str | None,
                 project: ComposeProject | None = None) -> None:
        self._workshop = workshop
        self._image = image
        self._pull = pull
        self._docker_host = docker_host
        self._given_project = project  # `rollover up`: the files it loaded, which may differ from the labels'

    async def prepare(self, scope: ServiceScope, snapshot: ServiceSnapshot) -> None:
        service = scope.service
        definition = await service_definition(self._project(scope), service, self._cli_env())
        if definition.get("container_name"):
            raise Unsupported(
                f"service {service} sets container_name {definition['container_name']!r}: Compose "
                "cannot run a second container of it, so it cannot be rolled without downtime"
            )
        image = self._image or definition.get("image") or f"{scope.project}-{service}"
        # Compose builds a missing image of a service with a build section by itself.
        if self._image or "build" not in definition:
            await ensure_image(self._workshop, str(image), self._pull)

    async def replace(self, scope: ServiceScope, targets: Sequence[Replica], order: Order) -> list[Replica]:
        workshop = self._workshop
        engine = workshop.connected()
        predecessors = [await workshop.definition_of(target) for target in targets]
        async with stop_first_revives(workshop, targets, order):
            async with workshop.mutations:
                # A stop-first target is still there, stopped: Compose counts it as one of the service's.
                before = set(await engine.list_container_ids(scope.labels()))
                fresh = await self._create(scope, len(before) + len(targets), before)
                if len(fresh) != len(targets):
                    raise PlatformError(f"compose made {len(fresh)} containers for {len(targets)} replacements")
                made = [await self._take_over_volumes(new, old) for new, old in zip(fresh, predecessors, strict=True)]
            started = await workshop.start_fresh(made)
        if order is Order.STOP_FIRST:
            await workshop.remove_replaced([target.id for target in targets])
        return started

    async def refill(self, scope: ServiceScope, count: int, snapshot_ids: Sequence[str]) -> list[Replica]:
        workshop = self._workshop
        async with workshop.mutations:
            before = set(await workshop.connected().list_container_ids(scope.labels()))
            fresh = await self._create(scope, len(before) + count, before)
        return await workshop.start_fresh([str(inspect["Id"]) for inspect in fresh])

    async def _create(self, scope: ServiceScope, count: int, before: set[str]) -> list[Inspect]:
        """Have Compose create (not start) the service's containers up to ``count``; the new ones.

        Not starting them keeps ``up`` from also starting the service's stopped containers (a
        stop-first target waiting for its removal) and lets volumes be handed over first.
        """
        project, engine, service = self._project(scope), self._workshop.connected(), scope.service
        override = image_override_file(project.name, service, self._image) if self._image else None
        try:
            with override or nullcontext() as override_path:
                command = scale_up_command(project, service, count, pull=self._pull, override_file=override_path)
                await run_docker(command, env=self._cli_env())
        except RolloverError:
            for container_id in await self._made_since(scope, before):
                await engine.remove(container_id, force=True, volumes=True)  # half a scale-up, unknown to all
            raise
        made = await self._made_since(scope, before)
        return sorted([await self._workshop.inspect(container_id) for container_id in made], key=replica_order)

    async def _made_since(self, scope: ServiceScope, before: set[str]) -> list[str]:
        listed = await self._workshop.connected().list_container_ids(scope.labels())
        return [container_id for container_id in listed if container_id not in before]

    async def _take_over_volumes(self, fresh: Inspect, predecessor: Inspect) -> str:
        """Re-create Compose's (unstarted) container with the predecessor's anonymous volumes.

        Compose gives a scaled-up container fresh anonymous volumes; only its recreate path hands
        the old ones over. Everything else (labels, config hash, networks) stays Compose's own.
        """
        request = clone_request(fresh, image=fresh["Config"]["Image"], volumes_from=predecessor)
        if not request.inherited_volumes:
            return str(fresh["Id"])
        await self._workshop.remove_unstarted(str(fresh["Id"]))  # its volumes are empty
        return await self._workshop.create(request, container_name(fresh))

    def _project(self, scope: ServiceScope) -> ComposeProject:
        """The project's files: as given, else as Compose recorded them on the service's containers."""
        if self._given_project is not None:
            return self._given_project
        recorded = self._workshop.any_definition()
        if recorded is None:
            raise PlatformError("take a snapshot first: it finds the compose project's files")
        return ComposeProject.from_labels(str(scope.project), labels_of(recorded))

    def _cli_env(self) -> Mapping[str, str]:
        return docker_cli_env(self._docker_host)


class SelectorReplacements:
    """Replacements cloned from a replica's recorded definition on the rollout's image."""

    def __init__(self, workshop: Workshop, *, image: str | None, pull: bool) -> None:
        self._workshop = workshop
        self._image = image
        self._pull = pull

    async def prepare(self, scope: ServiceScope, snapshot: ServiceSnapshot) -> None:
        refs = {self._image} if self._image else {replica.image_ref for replica in snapshot.replicas}
        for ref in sorted(refs):
            await ensure_image(self._workshop, ref, self._pull)

    async def replace(self, scope: ServiceScope, targets: Sequence[Replica], order: Order) -> list[Replica]:
        replaced = []
        for target in targets:
            old = await self._workshop.definition_of(target)
            replaced.append(await self._replace_with(await self._on_target_image(old, volumes_from=old), target, order))
        return replaced

    async def refill(self, scope: ServiceScope, count: int, snapshot_ids: Sequence[str]) -> list[Replica]:
        workshop = self._workshop
        if not snapshot_ids:
            raise PlatformError("take a snapshot first: a refill is cloned from one of the service's replicas")
        source = workshop.recorded(snapshot_ids[0]) or await workshop.inspect(snapshot_ids[0])
        request = with_fresh_anonymous_volumes(await self._on_target_image(source, volumes_from=None))
        made = []
        for _ in range(count):
            async with workshop.mutations:
                # Nothing recorded the name of the replica it stands in for.
                made.append(await workshop.create(request, f"{scope.service}-{secrets.token_hex(3)}"))
        return await workshop.start_fresh(made)

    async def _on_target_image(self, old: Inspect, *, volumes_from: Inspect | None) -> CloneRequest:
        """A clone of ``old`` on the image the rollout rolls to (its own reference, freshly resolved,
        unless --image says otherwise), minus what came from old's image."""
        engine = self._workshop.connected()
        ref = self._image or image_ref_of(old)
        old_image, new_image = await engine.inspect_image(str(old["Image"])), await engine.inspect_image(ref)
        if new_image is None:
            raise ImageNotFound(f"image {ref} is not present on the engine")
        return clone_request(
            old,
            image=ref,
            old_image_config=(old_image or {}).get("Config") or {},
            new_image_volumes=(new_image.get("Config") or {}).get("Volumes") or {},
            volumes_from=volumes_from,
        )

    async def _replace_with(self, request: CloneRequest, target: Replica, order: Order) -> Replica:
        """Create the clone beside the target and start it; the target (stopped, under stop-first)
        keeps its name until it is removed: by retire() under start-first, here under stop-first,
        once the clone runs on its volumes. The clone then takes the name over."""
        workshop = self._workshop
        async with stop_first_revives(workshop, [target], order):
            async with workshop.mutations:
                new_id = await workshop.create(request, f"{target.name}-rollover-{secrets.token_hex(3)}")
            workshop.rename_on_retire(target.id, new_id, target.name)
            [replacement] = await workshop.start_fresh([new_id])
        if order is Order.STOP_FIRST:
            await workshop.remove_replaced([target.id])
            replacement = await workshop.replica(new_id)  # under its new name
        return replacement


@asynccontextmanager
async def stop_first_revives(workshop: Workshop, targets: Sequence[Replica], order: Order) -> AsyncIterator[None]:
    """Under stop-first, a replacement that cannot be made or started leaves its (stopped) target
    as it was: started again, on its own volumes, before the error goes on."""
    try:
        yield
    except RolloverError:
        if order is Order.STOP_FIRST:
            await workshop.revive(targets)
        raise
