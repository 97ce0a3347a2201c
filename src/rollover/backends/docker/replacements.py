"""The two ways a Docker backend makes replacements, chosen once when the backend is built.

- ``ComposeReplacements``: exactly what ``docker compose up --scale`` would make from the current
  files. Compose itself makes the rollout's first one (``up --no-start --no-recreate --scale``,
  compose.py) once the lock is held (``ready``); every other one is a numbered copy of it made
  through the Engine API (compose_clone.py), so a request costs a create, not a Compose run. Each
  takes over its predecessor's anonymous volumes.
- ``SelectorReplacements``: a clone of the target's recorded definition on the rollout's image
  (clone.py), made beside the target (start-first) or in its place (stop-first).

``make`` only creates (the engine accepted the replacement: the request is acknowledged) and the
caller starts them; ``replace`` creates and starts, and is what stop-first and rollbacks use.
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
from rollover.backends.docker.compose_clone import compose_number, copy_of_template
from rollover.backends.docker.inspect import container_name, image_ref_of, labels_of, replica_from_inspect
from rollover.backends.docker.scope import ServiceScope, replica_order
from rollover.backends.docker.workshop import Workshop
from rollover.core.model import Order, Replica, ServiceSnapshot
from rollover.engine import Inspect
from rollover.errors import ImageNotFound, NameTaken, PlatformError, RolloverError, Unsupported


class Replacements(Protocol):
    """How a service's replacements are made; the targets of a stop-first replace are stopped already."""

    async def prepare(self, scope: ServiceScope, snapshot: ServiceSnapshot) -> None:
        """Before anything is touched: fail now if no replacement could be made (no image)."""

    async def ready(self, scope: ServiceScope) -> None:
        """Once the lock is held: the rollout's one-time work (Compose renders its template here),
        so that each request after it is a few Engine API calls."""

    async def make(self, scope: ServiceScope, targets: Sequence[Replica]) -> list[Replica]:
        """One created (not started) start-first replacement per target, in the targets' order:
        the engine accepted it. Whoever calls this starts them (``Workshop.start``)."""

    async def replace(self, scope: ServiceScope, targets: Sequence[Replica], order: Order) -> list[Replica]:
        """One started replacement per target, in the targets' order."""

    async def refill(self, scope: ServiceScope, count: int, snapshot_ids: Sequence[str]) -> list[Replica]:
        """``count`` started replicas replacing nothing (a dead rollout removed replicas it never
        replaced); ``snapshot_ids``: the replicas the last snapshot found. They get fresh anonymous
        volumes: the removed replicas' volumes are still on the engine, but nothing records which
        replica had which."""

    async def tidy(self, scope: ServiceScope) -> None:
        """Before the lock goes: remove what ``ready`` made and no request used."""


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
    """Replacements exactly as ``docker compose up --scale`` would make them: Compose makes the
    rollout's first one (the template, in ``ready``), the Engine API makes every other one as a
    numbered copy of it (compose_clone.py), so a request costs a create, not a Compose run."""

    def __init__(self, workshop: Workshop, *, image: str | None, pull: bool, docker_host: str | None,
                 project: ComposeProject | None = None) -> None:
        self._workshop = workshop
        self._image = image
        self._pull = pull
        self._docker_host = docker_host
        self._given_project = project  # `rollover up`: the files it loaded, which may differ from the labels'
        self._template: Inspect | None = None  # as Compose made it, before any volume was handed over
        self._spare: str | None = None  # the template itself, while no request has used it
        self._next_number = 0

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

    async def ready(self, scope: ServiceScope) -> None:
        if self._template is None:
            async with self._workshop.mutations:
                await self._render(scope)

    async def make(self, scope: ServiceScope, targets: Sequence[Replica]) -> list[Replica]:
        workshop = self._workshop
        predecessors = [await workshop.definition_of(target) for target in targets]
        async with workshop.mutations:
            made = [await self._made_like_compose(scope, predecessor) for predecessor in predecessors]
        return [replica_from_inspect(self._recorded(container_id)) for container_id in made]

    async def replace(self, scope: ServiceScope, targets: Sequence[Replica], order: Order) -> list[Replica]:
        workshop = self._workshop
        predecessors = [await workshop.definition_of(target) for target in targets]
        async with stop_first_revives(workshop, targets, order):
            async with workshop.mutations:
                made = [await self._made_like_compose(scope, predecessor) for predecessor in predecessors]
            started = await workshop.start_fresh(made)
        if order is Order.STOP_FIRST:
            await workshop.remove_replaced([target.id for target in targets])
        return started

    async def refill(self, scope: ServiceScope, count: int, snapshot_ids: Sequence[str]) -> list[Replica]:
        async with self._workshop.mutations:
            made = [await self._made_like_compose(scope, None) for _ in range(count)]
        return await self._workshop.start_fresh(made)

    async def tidy(self, scope: ServiceScope) -> None:
        if self._spare is not None:
            async with self._workshop.mutations:
                await self._workshop.remove_unstarted(self._spare)
            self._spare = None

    async def _made_like_compose(self, scope: ServiceScope, predecessor: Inspect | None) -> str:
        """One container as Compose would make it, on ``predecessor``'s anonymous volumes (None:
        fresh ones); under ``mutations``. The first is the template itself."""
        if self._template is None:
            await self._render(scope)
        assert self._template is not None
        if self._spare is not None:
            spare, self._spare = self._spare, None
            return spare if predecessor is None else await self._take_over_volumes(self._template, predecessor)
        while True:
            request, name = copy_of_template(self._template, self._next_number, predecessor)
            self._next_number += 1
            try:
                return await self._workshop.create(request, name)
            except NameTaken:
                continue  # someone made that number meanwhile: Compose would take the next one too

    async def _render(self, scope: ServiceScope) -> None:
        """Have Compose make one more container of the service (not started): the template."""
        async with self._workshop.compose_counts:  # no removal between the count and Compose's own
            before = set(await self._workshop.connected().list_container_ids(scope.labels()))
            # A stop-first target is still there, stopped: Compose counts it as one of the service's.
            [template] = await self._create(scope, len(before) + 1, before)
        self._template, self._spare = template, str(template["Id"])
        self._workshop.remember(template)
        self._next_number = compose_number(template) + 1

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
        if len(made) != count - len(before):
            raise PlatformError(f"compose made {len(made)} containers, {count - len(before)} were asked for")
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

    def _recorded(self, container_id: str) -> Inspect:
        recorded = self._workshop.recorded(container_id)
        assert recorded is not None  # Workshop.create and _render remember what they make
        return recorded

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
        # Image inspect data by reference or id, looked up once per rollout: a request then costs
        # a create (and its inspect), not two image inspects per target as well.
        self._images: dict[str, Inspect | None] = {}

    async def prepare(self, scope: ServiceScope, snapshot: ServiceSnapshot) -> None:
        refs = {self._image} if self._image else {replica.image_ref for replica in snapshot.replicas}
        for ref in sorted(refs):
            await ensure_image(self._workshop, ref, self._pull)

    async def ready(self, scope: ServiceScope) -> None:
        """Nothing to render: each replacement is a clone of its own target."""

    async def make(self, scope: ServiceScope, targets: Sequence[Replica]) -> list[Replica]:
        made = []
        for target in targets:
            old = await self._workshop.definition_of(target)
            new_id = await self._clone_beside(await self._on_target_image(old, volumes_from=old), target)
            recorded = self._workshop.recorded(new_id)
            assert recorded is not None  # Workshop.create remembers what it makes
            made.append(replica_from_inspect(recorded))
        return made

    async def tidy(self, scope: ServiceScope) -> None:
        """Nothing is made ahead of a request."""

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
        ref = self._image or image_ref_of(old)
        old_image, new_image = await self._image_inspect(str(old["Image"])), await self._image_inspect(ref)
        if new_image is None:
            raise ImageNotFound(f"image {ref} is not present on the engine")
        return clone_request(
            old,
            image=ref,
            old_image_config=(old_image or {}).get("Config") or {},
            new_image_volumes=(new_image.get("Config") or {}).get("Volumes") or {},
            volumes_from=volumes_from,
        )

    async def _image_inspect(self, ref: str) -> Inspect | None:
        if ref not in self._images:
            self._images[ref] = await self._workshop.connected().inspect_image(ref)
        return self._images[ref]

    async def _clone_beside(self, request: CloneRequest, target: Replica) -> str:
        """Create the clone beside the target (not started); it takes the target's name once the
        target is removed: by retire() under start-first, by _replace_with under stop-first."""
        workshop = self._workshop
        async with workshop.mutations:
            new_id = await workshop.create(request, f"{target.name}-rollover-{secrets.token_hex(3)}")
        workshop.rename_on_retire(target.id, new_id, target.name)
        return new_id

    async def _replace_with(self, request: CloneRequest, target: Replica, order: Order) -> Replica:
        """Create the clone beside the target and start it; under stop-first the (stopped) target
        is removed once the clone runs on its volumes, and the clone takes the name over."""
        workshop = self._workshop
        async with stop_first_revives(workshop, [target], order):
            new_id = await self._clone_beside(request, target)
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
