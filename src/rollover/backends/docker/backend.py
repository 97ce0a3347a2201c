"""Docker Engine backend: a Compose service (by project) or plain containers (by label selector).

Compose replacements are made by Compose itself (``up --no-start --no-recreate --scale``, see
compose.py), so they are exactly what ``docker compose up`` would make from the current files;
rollover starts them. Selector replacements and every rollback are clones of a container's
recorded definition (docker_clone.py). Which containers are the service: docker_scope.py; the
primitives every path makes, starts and removes containers with: docker_workshop.py.

Rules that hold everywhere:
- Data survives: a replacement mounts its predecessor's anonymous volumes by name wherever its own
  definition would otherwise get fresh ones; removals of replaced containers keep volumes.
- One asyncio.Lock (the workshop's ``mutations``) serializes every Compose call, container
  creation and removal. Compose counts the service's containers itself; the ``--scale`` count is
  computed under the same lock, so no removal can land between our count and Compose's and make it
  create one container too many. Slow stops happen outside it.
- Names: stop-first replacements and rollbacks take the old name; a start-first clone is created
  as ``<name>-rollover-<6 hex>`` and renamed to the old name when retire() removed the old one.
  Compose replacements keep the names Compose gives them (``<project>-<service>-<n>``); a selector
  refill is named ``<service>-<6 hex>`` (nothing recorded the name of the replica it stands in for).
- restore() can be retried across a daemon restart: a second attempt finishes the container the
  first one made instead of making another (docker_restore.py).
- The rollout lock is a container that is created and never started (docker_lock.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

from rollover.backends.base import DEFAULT_LEASE_S
from rollover.backends.docker.clone import CloneRequest, clone_request, with_fresh_anonymous_volumes
from rollover.backends.docker.compose import (
    ComposeProject,
    image_override_file,
    resolve_project_name,
    run_docker,
    scale_up_command,
    service_definition,
)
from rollover.backends.docker.events import (
    EventFeed,
    action_of,
    container_of,
    current_event,
    event_filters,
    labels_of_event,
    replica_event,
)
from rollover.backends.docker.inspect import (
    LOCK_HOLDER_LABEL,
    container_name,
    created_at,
    finished_at,
    image_ref_of,
    is_lock,
    is_target,
    labels_of,
    replica_from_inspect,
)
from rollover.backends.docker.lock import LockRecord, take_lock
from rollover.backends.docker.restore import restore_replica
from rollover.backends.docker.scope import ServiceScope, replica_order
from rollover.backends.docker.workshop import Workshop
from rollover.core.model import Order, Replica, ReplicaEvent, ServiceSnapshot, StaleLock
from rollover.engine import Inspect
from rollover.errors import ImageNotFound, PlatformError, RolloverError, ServiceNotFound, Unsupported


class DockerBackend:
    """One Compose service or one label-selected set of containers on one Docker Engine."""

    def __init__(
        self,
        service: str,
        *,
        project: str | None = None,
        selector: dict[str, str] | None = None,
        image: str | None = None,
        pull: bool = False,
        docker_host: str | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._scope = ServiceScope(service, project, dict(selector) if selector is not None else None)
        self.platform = "compose" if self._scope.is_compose else "docker"
        self._image = image
        self._pull = pull
        self._docker_host = docker_host
        self._clock = clock
        self._workshop = Workshop()
        self._lock_id: str | None = None
        self._feeds: list[EventFeed] = []
        self._snapshot_ids: tuple[str, ...] = ()  # the replicas the last snapshot found

    # -- connection and observation -------------------------------------------------------------

    async def connect(self) -> None:
        await self._workshop.connect(self._docker_host)
        if self._scope.is_compose and self._scope.project is None:
            self._scope = self._scope.in_project(await resolve_project_name(os.getcwd(), self._cli_env()))

    def events(self) -> AsyncIterator[ReplicaEvent]:
        # Subscribing blocks until the engine answered, so the stream is live on return; `since`
        # (engine time, now) replays anything between its answer and the reader thread's first read.
        feed = EventFeed(self._workshop.connected().open_events(event_filters(self._scope.labels())), self._clock)
        self._feeds.append(feed)
        return self._replica_events(feed)

    async def _replica_events(self, feed: EventFeed) -> AsyncIterator[ReplicaEvent]:
        while (arrival := await feed.next()) is not None:
            at, raw = arrival
            container_id = container_of(raw)
            if container_id in self._workshop.internal_ids or LOCK_HOLDER_LABEL in labels_of_event(raw):
                continue
            has_check = await self._workshop.has_healthcheck(container_id) if action_of(raw) == "start" else True
            event = replica_event(raw, at, has_check)
            if event is not None:
                yield event

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        engine = self._workshop.connected()
        found = await asyncio.gather(*(engine.inspect_container(replica_id) for replica_id in replica_ids))
        at = self._clock()
        return [
            event
            for replica_id, inspect in zip(replica_ids, found, strict=True)
            if (event := current_event(replica_id, inspect, at)) is not None
        ]

    async def refresh(self, replica: Replica) -> Replica:
        inspect = await self._workshop.connected().inspect_container(replica.id)
        return replica if inspect is None else replica_from_inspect(inspect)

    async def snapshot(self) -> ServiceSnapshot:
        engine = self._workshop.connected()
        ids = await engine.list_container_ids(self._scope.labels())
        found = await asyncio.gather(*(engine.inspect_container(container_id) for container_id in ids))
        containers = [inspect for inspect in found if inspect is not None and not is_lock(inspect)]
        for inspect in containers:
            self._workshop.remember(inspect)
        targets = sorted((inspect for inspect in containers if is_target(inspect)), key=replica_order)
        if not targets:
            raise ServiceNotFound(self._scope.nothing_running())
        self._snapshot_ids = tuple(str(inspect["Id"]) for inspect in targets)
        return ServiceSnapshot(
            name=self._scope.service,
            platform=self.platform,
            replicas=tuple(replica_from_inspect(inspect) for inspect in targets),
            description=self._scope.description(),
        )

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        service = self._scope.service
        if not self._scope.is_compose:
            refs = {self._image} if self._image else {replica.image_ref for replica in snapshot.replicas}
            for ref in sorted(refs):
                await self._ensure_image(ref)
            return
        definition = await service_definition(self._compose_project(), service, self._cli_env())
        if definition.get("container_name"):
            raise Unsupported(
                f"service {service} sets container_name {definition['container_name']!r}: Compose "
                "cannot run a second container of it, so it cannot be rolled without downtime"
            )
        image = self._image or definition.get("image") or f"{self._scope.project}-{service}"
        # Compose builds a missing image of a service with a build section by itself.
        if self._image or "build" not in definition:
            await self._ensure_image(str(image))

    async def _ensure_image(self, ref: str) -> None:
        engine = self._workshop.connected()
        if not self._pull and await engine.inspect_image(ref) is not None:
            return
        try:
            await engine.pull(ref)
        except (PlatformError, ImageNotFound) as exc:
            local = "" if self._pull else " is not present locally and"
            raise ImageNotFound(f"image {ref}{local} cannot be pulled: {exc}") from exc

    # -- the rollout lock ------------------------------------------------------------------------

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0) -> StaleLock | None:
        name = self._scope.lock_name()
        image = self._service_image()
        since = datetime.now(UTC)
        record = LockRecord(holder, since, since + timedelta(seconds=lease_s), replicas)
        self._lock_id, stale = await take_lock(
            self._workshop.connected(), name, image=image, record=record, service=self._scope.service
        )
        if stale is not None and stale.since is not None:
            await self._remove_debris_since(stale.since)
        return stale

    async def _remove_debris_since(self, since: float) -> None:
        """What a dead rollout left stopped: replacements it made that never ran, and replicas it
        stopped but did not remove. Compose would count them (and start them) in the next
        scale-up, so they go before anything else happens; volumes stay."""
        engine = self._workshop.connected()
        async with self._workshop.mutations:
            for container_id in await engine.list_container_ids(self._scope.labels()):
                inspect = await engine.inspect_container(container_id)
                if inspect is None or is_lock(inspect) or inspect.get("State", {}).get("Running"):
                    continue
                touched = max(created_at(inspect) or 0.0, finished_at(inspect) or 0.0)
                if touched >= since:
                    await engine.remove(container_id, force=True, volumes=False)

    async def release_lock(self) -> None:
        if self._lock_id is None:
            return
        async with self._workshop.mutations:
            # volumes=True: the image's VOLUMEs gave the lock container anonymous volumes of its own.
            await self._workshop.connected().remove(self._lock_id, force=True, volumes=True)
        self._lock_id = None

    def _service_image(self) -> str:
        for inspect in self._workshop.definitions.values():
            return str(inspect["Image"])
        raise PlatformError("take a snapshot before the lock: the lock is made from the service's image")

    # -- replacing replicas ----------------------------------------------------------------------

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        if not targets:
            return []
        if order is Order.STOP_FIRST:
            # The slow part, outside the mutation lock: each target gets its own grace period.
            await asyncio.gather(*(self._workshop.stop(target) for target in targets))
        if self._scope.is_compose:
            return await self._compose_replacements(targets, order)
        return [await self._selector_replacement(target, order) for target in targets]

    async def _compose_replacements(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        workshop = self._workshop
        engine = workshop.connected()
        predecessors = [await workshop.definition_of(target) for target in targets]
        async with workshop.mutations:
            if order is Order.STOP_FIRST:
                for target in targets:
                    await engine.remove(target.id, force=True, volumes=False)
            before = set(await engine.list_container_ids(self._scope.labels()))
            fresh = await self._compose_create(len(before) + len(targets), before)
            if len(fresh) != len(targets):
                raise PlatformError(f"compose made {len(fresh)} containers for {len(targets)} replacements")
            made = [await self._take_over_volumes(new, old) for new, old in zip(fresh, predecessors, strict=True)]
        return await workshop.start_fresh(made)

    async def _compose_create(self, count: int, before: set[str]) -> list[Inspect]:
        """Have Compose create (not start) the service's containers up to ``count``; the new ones.

        Not starting them keeps ``up`` from also starting the service's stopped containers (a
        stop-first target waiting for its removal) and lets volumes be handed over first.
        """
        project, engine, service = self._compose_project(), self._workshop.connected(), self._scope.service
        override = image_override_file(project.name, service, self._image) if self._image else None
        try:
            with override or nullcontext() as override_path:
                command = scale_up_command(project, service, count, pull=self._pull, override_file=override_path)
                await run_docker(command, env=self._cli_env())
        except RolloverError:
            for container_id in await self._made_since(before):
                await engine.remove(container_id, force=True, volumes=True)  # half a scale-up, unknown to all
            raise
        return sorted([await self._workshop.inspect(c) for c in await self._made_since(before)], key=replica_order)

    async def _made_since(self, before: set[str]) -> list[str]:
        return [c for c in await self._workshop.connected().list_container_ids(self._scope.labels()) if c not in before]

    async def _take_over_volumes(self, fresh: Inspect, predecessor: Inspect) -> str:
        """Re-create Compose's (unstarted) container with the predecessor's anonymous volumes.

        Compose gives a scaled-up container fresh anonymous volumes; only its recreate path hands
        the old ones over. Everything else (labels, config hash, networks) stays Compose's own.
        """
        request = clone_request(fresh, image=fresh["Config"]["Image"], volumes_from=predecessor)
        if not request.inherited_volumes:
            return str(fresh["Id"])
        self._workshop.internal_ids.add(str(fresh["Id"]))
        await self._workshop.connected().remove(str(fresh["Id"]), force=True, volumes=True)  # its volumes are empty
        return await self._workshop.create(request, container_name(fresh))

    async def _selector_replacement(self, target: Replica, order: Order) -> Replica:
        old = await self._workshop.definition_of(target)
        return await self._replace_with(await self._on_target_image(old, volumes_from=old), target, order)

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

    async def refill(self, count: int) -> list[Replica]:
        """New replicas replacing nothing (a dead rollout removed replicas it never replaced):
        made by Compose as ``up --scale`` would make them, or, for a selector, cloned from one of
        the service's replicas on the target image. They get fresh anonymous volumes: the removed
        replicas' volumes are still on the engine, but nothing records which replica had which."""
        workshop = self._workshop
        if self._scope.is_compose:
            async with workshop.mutations:
                before = set(await workshop.connected().list_container_ids(self._scope.labels()))
                fresh = await self._compose_create(len(before) + count, before)
            return await workshop.start_fresh([str(inspect["Id"]) for inspect in fresh])
        if not self._snapshot_ids:
            raise PlatformError("take a snapshot first: a refill is cloned from one of the service's replicas")
        source = workshop.definitions.get(self._snapshot_ids[0]) or await workshop.inspect(self._snapshot_ids[0])
        request = with_fresh_anonymous_volumes(await self._on_target_image(source, volumes_from=None))
        made = []
        for _ in range(count):
            async with workshop.mutations:
                made.append(await workshop.create(request, f"{self._scope.service}-{secrets.token_hex(3)}"))
        return await workshop.start_fresh(made)

    async def _replace_with(self, request: CloneRequest, target: Replica, order: Order) -> Replica:
        """Create the clone beside the target (start-first) or in its place (stop-first), start it."""
        async with self._workshop.mutations:
            if order is Order.STOP_FIRST:
                await self._workshop.connected().remove(target.id, force=True, volumes=False)
                name = target.name
            else:
                # The old name is still taken: the replacement takes it over when retire() removes
                # the old container.
                name = f"{target.name}-rollover-{secrets.token_hex(3)}"
            new_id = await self._workshop.create(request, name)
        if name != target.name:
            self._workshop.pending_renames[target.id] = (new_id, target.name)
        [replacement] = await self._workshop.start_fresh([new_id])
        return replacement

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        return await restore_replica(self._workshop, self._scope.labels(), replaced, original, order)

    async def retire(self, replica: Replica) -> None:
        await self._workshop.stop(replica)
        async with self._workshop.mutations:
            # Volumes stay: the replacement mounts the anonymous ones by name, and a rollback needs them.
            await self._workshop.connected().remove(replica.id, force=True, volumes=False)
        pending = self._workshop.pending_renames.pop(replica.id, None)
        if pending is not None:
            await self._workshop.connected().rename(*pending)

    async def discard(self, replica: Replica) -> None:
        self._workshop.drop_renames_to((replica.id,))
        async with self._workshop.mutations:
            # volumes=True removes only the volumes it made itself: those it took over are mounted
            # by name, and the engine never removes a named mount's volume with its container.
            await self._workshop.connected().remove(replica.id, force=True, volumes=True)

    async def close(self) -> None:
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()
        await self._workshop.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _cli_env(self) -> Mapping[str, str]:
        env = dict(os.environ)
        if self._docker_host is not None:
            env["DOCKER_HOST"] = self._docker_host
        return env

    def _compose_project(self) -> ComposeProject:
        """The project's files, as Compose recorded them on the service's containers."""
        for inspect in self._workshop.definitions.values():
            return ComposeProject.from_labels(str(self._scope.project), labels_of(inspect))
        raise PlatformError("take a snapshot first: it finds the compose project's files")
