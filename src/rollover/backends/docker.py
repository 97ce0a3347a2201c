"""Docker Engine backend: a Compose service (by project) or plain containers (by label selector).

Compose replacements are made by Compose itself (``up --no-start --no-recreate --scale``, see
compose.py), so they are exactly what ``docker compose up`` would make from the current files;
rollover starts them. Selector replacements and every rollback are clones of a container's
recorded definition (docker_clone.py).

Rules that hold everywhere:
- Data survives: a replacement mounts its predecessor's anonymous volumes by name wherever its own
  definition would otherwise get fresh ones; removals of replaced containers keep volumes.
- One asyncio.Lock serializes every Compose call, container creation and removal. Compose counts
  the service's containers itself; the ``--scale`` count is computed under the same lock, so no
  removal can land between our count and Compose's and make it create one container too many.
  Slow stops happen outside it.
- Names: stop-first replacements and rollbacks take the old name; a start-first clone is created
  as ``<name>-rollover-<6 hex>`` and renamed to the old name when retire() removed the old one.
  Compose replacements keep the names Compose gives them (``<project>-<service>-<n>``); a selector
  refill is named ``<service>-<6 hex>`` (nothing recorded the name of the replica it stands in for).
- A rollback's container is labelled with the id of the container it replaced
  (``rollover.restored-from``): restore() is retried across a daemon restart, and a second attempt
  finishes the container the first one made instead of making another.
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
from rollover.backends.compose import (
    ComposeProject,
    image_override_file,
    resolve_project_name,
    run_docker,
    scale_up_command,
    service_definition,
)
from rollover.backends.docker_clone import (
    CloneRequest,
    clone_request,
    endpoint_for_connect,
    with_fresh_anonymous_volumes,
)
from rollover.backends.docker_engine import Engine, Inspect
from rollover.backends.docker_events import (
    EventFeed,
    action_of,
    container_of,
    current_event,
    event_filters,
    labels_of_event,
    replica_event,
)
from rollover.backends.docker_inspect import (
    COMPOSE_NUMBER,
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    IMAGE_REF_LABEL,
    LOCK_HOLDER_LABEL,
    RESTORED_FROM_LABEL,
    container_name,
    created_at,
    finished_at,
    healthcheck_of,
    image_ref_of,
    is_lock,
    is_target,
    labels_of,
    replica_from_inspect,
    stop_timeout_s,
)
from rollover.backends.docker_lock import LockRecord, lock_name, take_lock
from rollover.errors import (
    ImageNotFound,
    InvalidOption,
    PlatformError,
    RolloverError,
    ServiceNotFound,
    Unsupported,
)
from rollover.model import Order, Replica, ReplicaEvent, ServiceSnapshot, StaleLock


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
        if project is not None and selector is not None:
            raise InvalidOption("give either a compose project or a label selector, not both")
        if selector is not None and not selector:
            raise InvalidOption("a label selector needs at least one label=value")
        self.platform = "docker" if selector is not None else "compose"
        self._service = service
        self._project = project
        self._selector = dict(selector) if selector is not None else None
        self._image = image
        self._pull = pull
        self._docker_host = docker_host
        self._clock = clock
        self._engine: Engine | None = None
        self._mutations = asyncio.Lock()
        self._definitions: dict[str, Inspect] = {}  # inspect data of every replica seen, by id
        self._healthchecked: dict[str, bool] = {}
        self._internal_ids: set[str] = set()  # containers we made and unmade on the way: no events
        self._pending_renames: dict[str, tuple[str, str]] = {}  # old id -> (replacement id, name)
        self._lock_id: str | None = None
        self._feeds: list[EventFeed] = []
        self._snapshot_ids: tuple[str, ...] = ()  # the replicas the last snapshot found

    # -- connection and observation -------------------------------------------------------------

    async def connect(self) -> None:
        self._engine = await Engine.connect(self._docker_host)
        if self._selector is None and self._project is None:
            self._project = await resolve_project_name(os.getcwd(), self._cli_env())

    def events(self) -> AsyncIterator[ReplicaEvent]:
        # Subscribing blocks until the engine answered, so the stream is live on return; `since`
        # (engine time, now) replays anything between its answer and the reader thread's first read.
        feed = EventFeed(self._connected().open_events(event_filters(self._labels())), self._clock)
        self._feeds.append(feed)
        return self._replica_events(feed)

    async def _replica_events(self, feed: EventFeed) -> AsyncIterator[ReplicaEvent]:
        while (arrival := await feed.next()) is not None:
            at, raw = arrival
            container_id = container_of(raw)
            if container_id in self._internal_ids or LOCK_HOLDER_LABEL in labels_of_event(raw):
                continue
            has_check = await self._has_healthcheck(container_id) if action_of(raw) == "start" else True
            event = replica_event(raw, at, has_check)
            if event is not None:
                yield event

    async def _has_healthcheck(self, container_id: str) -> bool:
        if container_id not in self._healthchecked:
            inspect = await self._connected().inspect_container(container_id)
            # Gone already: its die/destroy follow, and it must not be reported up.
            self._healthchecked[container_id] = inspect is None or healthcheck_of(inspect["Config"]) is not None
        return self._healthchecked[container_id]

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        engine = self._connected()
        found = await asyncio.gather(*(engine.inspect_container(replica_id) for replica_id in replica_ids))
        at = self._clock()
        return [
            event
            for replica_id, inspect in zip(replica_ids, found, strict=True)
            if (event := current_event(replica_id, inspect, at)) is not None
        ]

    async def refresh(self, replica: Replica) -> Replica:
        inspect = await self._connected().inspect_container(replica.id)
        return replica if inspect is None else replica_from_inspect(inspect)

    async def snapshot(self) -> ServiceSnapshot:
        engine = self._connected()
        ids = await engine.list_container_ids(self._labels())
        found = await asyncio.gather(*(engine.inspect_container(container_id) for container_id in ids))
        containers = [inspect for inspect in found if inspect is not None and not is_lock(inspect)]
        for inspect in containers:
            self._remember(inspect)
        targets = sorted((inspect for inspect in containers if is_target(inspect)), key=_replica_order)
        if not targets:
            raise ServiceNotFound(self._nothing_running())
        self._snapshot_ids = tuple(str(inspect["Id"]) for inspect in targets)
        return ServiceSnapshot(
            name=self._service,
            platform=self.platform,
            replicas=tuple(replica_from_inspect(inspect) for inspect in targets),
            description=self._description(),
        )

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        if self._selector is not None:
            refs = {self._image} if self._image else {replica.image_ref for replica in snapshot.replicas}
            for ref in sorted(refs):
                await self._ensure_image(ref)
            return
        definition = await service_definition(self._compose_project(), self._service, self._cli_env())
        if definition.get("container_name"):
            raise Unsupported(
                f"service {self._service} sets container_name {definition['container_name']!r}: Compose "
                "cannot run a second container of it, so it cannot be rolled without downtime"
            )
        image = self._image or definition.get("image") or f"{self._project}-{self._service}"
        # Compose builds a missing image of a service with a build section by itself.
        if self._image or "build" not in definition:
            await self._ensure_image(str(image))

    async def _ensure_image(self, ref: str) -> None:
        engine = self._connected()
        if not self._pull and await engine.inspect_image(ref) is not None:
            return
        try:
            await engine.pull(ref)
        except (PlatformError, ImageNotFound) as exc:
            local = "" if self._pull else " is not present locally and"
            raise ImageNotFound(f"image {ref}{local} cannot be pulled: {exc}") from exc

    # -- the rollout lock ------------------------------------------------------------------------

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0) -> StaleLock | None:
        name = lock_name(self._service, project=self._project, selector=self._selector)
        image = self._service_image()
        since = datetime.now(UTC)
        record = LockRecord(holder, since, since + timedelta(seconds=lease_s), replicas)
        self._lock_id, stale = await take_lock(
            self._connected(), name, image=image, record=record, service=self._service
        )
        if stale is not None and stale.since is not None:
            await self._remove_debris_since(stale.since)
        return stale

    async def _remove_debris_since(self, since: float) -> None:
        """What a dead rollout left stopped: replacements it made that never ran, and replicas it
        stopped but did not remove. Compose would count them (and start them) in the next
        scale-up, so they go before anything else happens; volumes stay."""
        engine = self._connected()
        async with self._mutations:
            for container_id in await engine.list_container_ids(self._labels()):
                inspect = await engine.inspect_container(container_id)
                if inspect is None or is_lock(inspect) or inspect.get("State", {}).get("Running"):
                    continue
                touched = max(created_at(inspect) or 0.0, finished_at(inspect) or 0.0)
                if touched >= since:
                    await engine.remove(container_id, force=True, volumes=False)

    async def release_lock(self) -> None:
        if self._lock_id is None:
            return
        async with self._mutations:
            # volumes=True: the image's VOLUMEs gave the lock container anonymous volumes of its own.
            await self._connected().remove(self._lock_id, force=True, volumes=True)
        self._lock_id = None

    def _service_image(self) -> str:
        for inspect in self._definitions.values():
            return str(inspect["Image"])
        raise PlatformError("take a snapshot before the lock: the lock is made from the service's image")

    # -- replacing replicas ----------------------------------------------------------------------

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        if not targets:
            return []
        if order is Order.STOP_FIRST:
            # The slow part, outside the mutation lock: each target gets its own grace period.
            await asyncio.gather(*(self._stop(target) for target in targets))
        if self._selector is None:
            return await self._compose_replacements(targets, order)
        return [await self._selector_replacement(target, order) for target in targets]

    async def _compose_replacements(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        engine = self._connected()
        predecessors = [await self._definition_of(target) for target in targets]
        async with self._mutations:
            if order is Order.STOP_FIRST:
                for target in targets:
                    await engine.remove(target.id, force=True, volumes=False)
            before = set(await engine.list_container_ids(self._labels()))
            fresh = await self._compose_create(len(before) + len(targets), before)
            if len(fresh) != len(targets):
                raise PlatformError(f"compose made {len(fresh)} containers for {len(targets)} replacements")
            made = [await self._take_over_volumes(new, old) for new, old in zip(fresh, predecessors, strict=True)]
        return await self._start_fresh(made)

    async def _compose_create(self, count: int, before: set[str]) -> list[Inspect]:
        """Have Compose create (not start) the service's containers up to ``count``; the new ones.

        Not starting them keeps ``up`` from also starting the service's stopped containers (a
        stop-first target waiting for its removal) and lets volumes be handed over first.
        """
        project, engine = self._compose_project(), self._connected()
        override = image_override_file(project.name, self._service, self._image) if self._image else None
        try:
            with override or nullcontext() as override_path:
                command = scale_up_command(project, self._service, count, pull=self._pull, override_file=override_path)
                await run_docker(command, env=self._cli_env())
        except RolloverError:
            for container_id in await self._made_since(before):
                await engine.remove(container_id, force=True, volumes=True)  # half a scale-up, unknown to all
            raise
        return sorted([await self._inspect(c) for c in await self._made_since(before)], key=_replica_order)

    async def _made_since(self, before: set[str]) -> list[str]:
        return [c for c in await self._connected().list_container_ids(self._labels()) if c not in before]

    async def _take_over_volumes(self, fresh: Inspect, predecessor: Inspect) -> str:
        """Re-create Compose's (unstarted) container with the predecessor's anonymous volumes.

        Compose gives a scaled-up container fresh anonymous volumes; only its recreate path hands
        the old ones over. Everything else (labels, config hash, networks) stays Compose's own.
        """
        request = clone_request(fresh, image=fresh["Config"]["Image"], volumes_from=predecessor)
        if not request.inherited_volumes:
            return str(fresh["Id"])
        self._internal_ids.add(str(fresh["Id"]))
        await self._connected().remove(str(fresh["Id"]), force=True, volumes=True)  # its volumes are empty
        return await self._create(request, container_name(fresh))

    async def _selector_replacement(self, target: Replica, order: Order) -> Replica:
        old = await self._definition_of(target)
        return await self._replace_with(await self._on_target_image(old, volumes_from=old), target, order)

    async def _on_target_image(self, old: Inspect, *, volumes_from: Inspect | None) -> CloneRequest:
        """A clone of ``old`` on the image the rollout rolls to (its own reference, freshly resolved,
        unless --image says otherwise), minus what came from old's image."""
        engine = self._connected()
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
        if self._selector is None:
            async with self._mutations:
                before = set(await self._connected().list_container_ids(self._labels()))
                fresh = await self._compose_create(len(before) + count, before)
            return await self._start_fresh([str(inspect["Id"]) for inspect in fresh])
        if not self._snapshot_ids:
            raise PlatformError("take a snapshot first: a refill is cloned from one of the service's replicas")
        source = self._definitions.get(self._snapshot_ids[0]) or await self._inspect(self._snapshot_ids[0])
        request = with_fresh_anonymous_volumes(await self._on_target_image(source, volumes_from=None))
        made = []
        for _ in range(count):
            async with self._mutations:
                made.append(await self._create(request, f"{self._service}-{secrets.token_hex(3)}"))
        return await self._start_fresh(made)

    async def _replace_with(self, request: CloneRequest, target: Replica, order: Order) -> Replica:
        """Create the clone beside the target (start-first) or in its place (stop-first), start it."""
        async with self._mutations:
            if order is Order.STOP_FIRST:
                await self._connected().remove(target.id, force=True, volumes=False)
                name = target.name
            else:
                # The old name is still taken: the replacement takes it over when retire() removes
                # the old container.
                name = f"{target.name}-rollover-{secrets.token_hex(3)}"
            new_id = await self._create(request, name)
        if name != target.name:
            self._pending_renames[target.id] = (new_id, target.name)
        [replacement] = await self._start_fresh([new_id])
        return replacement

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        source = self._definitions.get(original.id)
        if source is None:
            raise PlatformError(f"no recorded definition of {original.name} to restore it from")
        engine = self._connected()
        new_id = await self._earlier_restore(replaced)
        if new_id is None:
            if order is Order.STOP_FIRST:
                await self._stop(replaced)
            request = clone_request(source, image=original.image, volumes_from=source, extra_labels={
                IMAGE_REF_LABEL: image_ref_of(source), RESTORED_FROM_LABEL: replaced.id,
            })
            async with self._mutations:
                if order is Order.STOP_FIRST:
                    await engine.remove(replaced.id, force=True, volumes=False)
                holder = await engine.inspect_container(original.name)
                name = original.name if holder is None else f"{original.name}-rollover-{secrets.token_hex(3)}"
                new_id = await self._create(request, name)
        # Under start-first the replaced container holds the name until retire() removes it.
        holder = await engine.inspect_container(original.name)
        if holder is not None and holder["Id"] == replaced.id:
            self._pending_renames[replaced.id] = (new_id, original.name)
        [restored] = await self._start_fresh([new_id])
        return restored

    async def _earlier_restore(self, replaced: Replica) -> str | None:
        """The container an earlier attempt to restore ``replaced`` made and started, if any. One it
        made but never started is removed: the outage may have cut it short before its networks
        were connected (and _create's own cleanup could not reach the daemon either)."""
        engine = self._connected()
        found = [
            inspect
            for container_id in await engine.list_container_ids({**self._labels(), RESTORED_FROM_LABEL: replaced.id})
            if (inspect := await engine.inspect_container(container_id)) is not None
        ]
        started = [inspect for inspect in found if inspect.get("State", {}).get("Status") != "created"]
        async with self._mutations:
            for half_made in found:
                if half_made not in started:
                    self._internal_ids.add(str(half_made["Id"]))
                    await engine.remove(str(half_made["Id"]), force=True, volumes=True)  # taken-over ones stay
        if not started:
            return None
        self._remember(started[0])
        return str(started[0]["Id"])

    async def retire(self, replica: Replica) -> None:
        await self._stop(replica)
        async with self._mutations:
            # Volumes stay: the replacement mounts the anonymous ones by name, and a rollback needs them.
            await self._connected().remove(replica.id, force=True, volumes=False)
        pending = self._pending_renames.pop(replica.id, None)
        if pending is not None:
            await self._connected().rename(*pending)

    async def discard(self, replica: Replica) -> None:
        self._pending_renames = {
            old: pending for old, pending in self._pending_renames.items() if pending[0] != replica.id
        }
        async with self._mutations:
            # volumes=True removes only the volumes it made itself: those it took over are mounted
            # by name, and the engine never removes a named mount's volume with its container.
            await self._connected().remove(replica.id, force=True, volumes=True)

    async def close(self) -> None:
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()
        if self._engine is not None:
            await self._engine.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _connected(self) -> Engine:
        if self._engine is None:
            raise PlatformError("the Docker backend is not connected (call connect() first)")
        return self._engine

    def _labels(self) -> dict[str, str]:
        if self._selector is not None:
            return self._selector
        return {COMPOSE_PROJECT: str(self._project), COMPOSE_SERVICE: self._service, COMPOSE_ONEOFF: "False"}

    def _cli_env(self) -> Mapping[str, str]:
        env = dict(os.environ)
        if self._docker_host is not None:
            env["DOCKER_HOST"] = self._docker_host
        return env

    def _compose_project(self) -> ComposeProject:
        """The project's files, as Compose recorded them on the service's containers."""
        for inspect in self._definitions.values():
            return ComposeProject.from_labels(str(self._project), labels_of(inspect))
        raise PlatformError("take a snapshot first: it finds the compose project's files")

    def _description(self) -> str:
        if self._selector is None:
            return f"compose project {self._project}, service {self._service}"
        return f"containers labelled {_selector_text(self._selector)}"

    def _nothing_running(self) -> str:
        if self._selector is None:
            return f"compose project {self._project} has no running replicas of service {self._service}"
        return f"no running container matches label {_selector_text(self._selector)}"

    def _remember(self, inspect: Inspect) -> None:
        self._definitions[str(inspect["Id"])] = inspect
        self._healthchecked[str(inspect["Id"])] = healthcheck_of(inspect.get("Config") or {}) is not None

    async def _inspect(self, container_id: str) -> Inspect:
        inspect = await self._connected().inspect_container(container_id)
        if inspect is None:
            raise PlatformError(f"container {container_id[:12]} disappeared")
        return inspect

    async def _definition_of(self, replica: Replica) -> Inspect:
        return self._definitions.get(replica.id) or await self._inspect(replica.id)

    async def _create(self, request: CloneRequest, name: str) -> str:
        """Create the container, connect its extra networks, remember its healthcheck; its id."""
        engine = self._connected()
        new_id = await engine.create_container(request.body, name)
        if new_id is None:
            raise PlatformError(f"cannot create container {name}: the name is taken")
        try:
            for network, endpoint in request.extra_networks:
                await engine.connect_network(new_id, network, endpoint_for_connect(endpoint))
            self._remember(await self._inspect(new_id))
        except RolloverError:
            await engine.remove(new_id, force=True, volumes=True)  # half-made: never leave it behind
            raise
        return new_id

    async def _start_fresh(self, container_ids: list[str]) -> list[Replica]:
        """Start containers just made; when one cannot start, none of them is left behind."""
        engine = self._connected()
        try:
            for container_id in container_ids:
                await engine.start(container_id)
        except RolloverError:
            async with self._mutations:
                for container_id in container_ids:
                    await engine.remove(container_id, force=True, volumes=True)  # taken-over volumes stay
            self._pending_renames = {
                old: pending for old, pending in self._pending_renames.items() if pending[0] not in container_ids
            }
            raise
        return [await self._replica(container_id) for container_id in container_ids]

    async def _replica(self, container_id: str) -> Replica:
        inspect = await self._inspect(container_id)
        self._remember(inspect)
        return replica_from_inspect(inspect)

    async def _stop(self, replica: Replica) -> None:
        known = self._definitions.get(replica.id) or await self._connected().inspect_container(replica.id)
        if known is not None:
            await self._connected().stop(replica.id, stop_timeout_s(known))


def _replica_order(inspect: Inspect) -> tuple[int, str]:
    number = labels_of(inspect).get(COMPOSE_NUMBER, "")
    return (int(number) if number.isdigit() else 0, container_name(inspect))


def _selector_text(selector: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(selector.items()))
