"""Docker Engine backend: a Compose service (by project) or plain containers (by label selector).

Compose replacements are exactly what ``docker compose up`` would make from the current files:
Compose itself makes the rollout's first (``up --no-start --no-recreate --scale``, compose.py)
once the lock is held, the Engine API every other as a numbered copy of it (compose_clone.py).
A start-first request returns (is acknowledged) once the engine created its replacements; they
are started in the background, and a start the engine refuses comes back on the event stream as
the replacement's death. Selector replacements and every rollback are clones of a container's
recorded definition (clone.py). The two ways of making replacements are two strategies
(replacements.py), chosen once when the backend is built. Which containers are the service:
scope.py; the primitives every path makes, starts and removes containers with: workshop.py. A
replacement the engine stays silent about (it drops events for a reader that falls behind) is
inspected again after 5 s, then at doubling delays (rechecks.py).

Rules that hold everywhere:
- Data survives: a replacement mounts its predecessor's anonymous volumes by name wherever its own
  definition would otherwise get fresh ones; removals of replaced containers keep volumes.
- One asyncio.Lock (the workshop's ``mutations``) serializes every Compose call, container
  creation and removal. Compose counts the service's containers itself; the ``--scale`` count is
  computed under the same lock, so no removal can land between our count and Compose's and make it
  create one container too many. Slow stops happen outside it, and so does the removal of a
  replaced replica: it holds only ``compose_counts``, the Compose run's own part of that lock, so it
  never holds up the next request's create (workshop.py).
- Names: stop-first replacements and rollbacks take the old name; a start-first clone is created
  as ``<name>-rollover-<6 hex>`` and renamed to the old name when retire() removed the old one.
  Compose replacements keep the names Compose gives them (``<project>-<service>-<n>``); a selector
  refill is named ``<service>-<6 hex>`` (nothing recorded the name of the replica it stands in for).
- restore() can be retried across a daemon restart: a second attempt finishes the container the
  first one made instead of making another (restore.py).
- The rollout lock is a container that is created and never started (lock.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

from rollover.backends.base import DEFAULT_LEASE_S
from rollover.backends.diagnosis import LOG_LINES, diagnosis_of
from rollover.backends.docker.compose import ComposeProject, docker_cli_env, resolve_project_name
from rollover.backends.docker.events import (
    EventFeed,
    action_of,
    container_of,
    current_event,
    event_filters,
    labels_of_event,
    replica_event,
)
from rollover.backends.docker.health_runs import HealthRuns
from rollover.backends.docker.inspect import (
    created_at,
    is_lock,
    is_target,
    replica_from_inspect,
)
from rollover.backends.docker.leftovers import remove_never_started, settle_leftovers
from rollover.backends.docker.lock import take_lock
from rollover.backends.docker.rechecks import Rechecks
from rollover.backends.docker.replacements import replacements_for
from rollover.backends.docker.restore import restore_replica
from rollover.backends.docker.scope import ServiceScope, replica_order
from rollover.backends.docker.workshop import Workshop
from rollover.backends.lease import LOCK_HOLDER_LABEL, LockRecord
from rollover.core.model import Order, Replica, ReplicaDown, ReplicaEvent, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.engine import Inspect
from rollover.errors import InvalidOption, PlatformError, RolloverError, ServiceNotFound


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
        compose_project: ComposeProject | None = None,
        podman: bool = False,
    ) -> None:
        """``podman``: the engine must be Podman (``--platform podman``); else any engine will do,
        Podman included (its dialect is translated by the engine client either way)."""
        self._scope = ServiceScope(service, project, dict(selector) if selector is not None else None)
        self.platform = "compose" if self._scope.is_compose else "docker"
        self._docker_host = docker_host
        self._expect_podman = podman
        self._clock = clock
        self._workshop = Workshop()
        self._replacements = replacements_for(self._scope, self._workshop, image=image, pull=pull,
                                              docker_host=docker_host, compose_project=compose_project)
        self._lock_id: str | None = None
        self._locked_at: float | None = None  # when the lock was made, in engine time
        self._feeds: list[EventFeed] = []
        self._snapshot_ids: tuple[str, ...] = ()  # the replicas the last snapshot found
        self._starts: set[asyncio.Task[None]] = set()  # acknowledged replacements being started
        self._health_runs: HealthRuns | None = None  # Podman: the healthchecks rollover runs itself
        # Replacements rollover started and has not heard of since: looked at again (rechecks.py).
        self._rechecks = Rechecks(lambda: self._workshop.connected(), clock, self._tell)

    # -- connection and observation -------------------------------------------------------------

    async def connect(self) -> None:
        await self._workshop.connect(self._docker_host)
        engine = self._workshop.connected()
        if self._expect_podman and not engine.is_podman:
            raise InvalidOption(f"--platform podman: the engine at {engine.address} is not Podman")
        if engine.is_podman:  # without systemd Podman runs no healthcheck by itself (health_runs.py)
            self._health_runs = HealthRuns(engine, self._clock, self._tell)
        if self._scope.is_compose and self._scope.project is None:
            project = await resolve_project_name(os.getcwd(), docker_cli_env(self._docker_host))
            self._scope = self._scope.in_project(project)

    def events(self) -> AsyncIterator[ReplicaEvent]:
        # Subscribing blocks until the engine answered, so the stream is live on return; `since`
        # (engine time, now) replays anything between its answer and the reader thread's first read.
        feed = EventFeed(self._workshop.connected().open_events(event_filters(self._scope.labels())), self._clock)
        self._feeds.append(feed)
        return self._replica_events(feed)

    async def _replica_events(self, feed: EventFeed) -> AsyncIterator[ReplicaEvent]:
        while (arrival := await feed.next()) is not None:
            at, raw = arrival
            if isinstance(raw, ReplicaUp | ReplicaDown):  # told: a refused start, a healthcheck we ran
                self._rechecks.heard(raw.replica_id)
                yield raw
                continue
            container_id = container_of(raw)
            if self._workshop.is_internal(container_id) or LOCK_HOLDER_LABEL in labels_of_event(raw):
                continue
            has_check = await self._workshop.has_healthcheck(container_id) if action_of(raw) == "start" else True
            await self._run_healthchecks(container_id, action_of(raw), has_check)
            event = replica_event(raw, at, has_check)
            if event is not None:
                self._rechecks.heard(container_id)
                yield event

    async def _run_healthchecks(self, container_id: str, action: str, has_check: bool) -> None:
        """Podman: a container that started with a healthcheck has it run from now on."""
        if self._health_runs is None:
            return
        if action == "start" and has_check:
            await self._check_from_now(container_id)
        elif action in ("die", "destroy"):
            self._health_runs.stopped(container_id)

    async def _started_here(self, container_id: str) -> None:
        """rollover started it: look again if the engine stays silent about it (rechecks.py);
        on Podman, run its healthcheck."""
        self._rechecks.started(container_id)
        await self._check_from_now(container_id)

    async def _check_from_now(self, container_id: str, inspect: Inspect | None = None) -> None:
        """Podman: run the healthcheck of a container seen started (its event, rollover's own
        start of it, a resync), once whichever way it was seen (health_runs.py)."""
        if self._health_runs is None or self._health_runs.is_checked(container_id):
            return
        # What rollover made is recorded already; anything else is looked up once.
        inspect = inspect or self._workshop.recorded(container_id)
        inspect = inspect or await self._workshop.connected().inspect_container(container_id)
        if inspect is not None:
            self._health_runs.started(container_id, inspect)

    async def _check_started(self, replicas: Sequence[Replica]) -> list[Replica]:
        for replica in replicas:
            await self._started_here(replica.id)
        return list(replicas)

    def _tell(self, event: ReplicaEvent) -> None:
        """Deliver an event the engine does not send on the live stream; without one, the resync
        after it reopens finds the state by inspecting (observe())."""
        if self._feeds:
            self._feeds[-1].tell(event)

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        engine = self._workshop.connected()
        found = await asyncio.gather(*(engine.inspect_container(replica_id) for replica_id in replica_ids))
        at = self._clock()
        events = []
        for replica_id, inspect in zip(replica_ids, found, strict=True):
            event = current_event(replica_id, inspect, at)
            if event is not None:
                events.append(event)
            elif inspect is not None:  # running, its health still starting: someone must check it
                await self._check_from_now(replica_id, inspect)
        return events

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
            description=self._scope.description() + (" on Podman" if engine.is_podman else ""),
        )

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        await self._replacements.prepare(self._scope, snapshot)

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
            await settle_leftovers(self._workshop, self._scope.labels(), stale.since)
        try:
            # Engine time, as every container's: what this rollout makes is created after it.
            self._locked_at = created_at(await self._workshop.inspect(self._lock_id))
            await self._replacements.ready(self._scope)
        except RolloverError:
            await self.release_lock()  # the caller never held the lock: it must not stay behind
            raise
        return stale

    async def release_lock(self) -> None:
        if self._lock_id is None:
            return
        await self._replacements.tidy(self._scope)
        if self._locked_at is not None:
            await remove_never_started(self._workshop, self._scope.labels(), self._locked_at)
        async with self._workshop.mutations:
            # volumes=True: the image's VOLUMEs gave the lock container anonymous volumes of its own.
            await self._workshop.connected().remove(self._lock_id, force=True, volumes=True)
        self._lock_id = None

    async def wait_for_lock(self, timeout_s: float) -> None:
        await self._workshop.connected().wait_removed(self._scope.lock_name(), timeout_s)

    def _service_image(self) -> str:
        recorded = self._workshop.any_definition()
        if recorded is not None:
            return str(recorded["Image"])
        raise PlatformError("take a snapshot before the lock: the lock is made from the service's image")

    # -- replacing replicas ----------------------------------------------------------------------

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        if not targets:
            return []
        if order is Order.START_FIRST:
            made = await self._replacements.make(self._scope, targets)
            for replica in made:
                self._start_later(replica.id)
            return made
        # The slow part, outside the mutation lock: each target gets its own grace period.
        await asyncio.gather(*(self._workshop.stop(target) for target in targets))
        return await self._check_started(await self._replacements.replace(self._scope, targets, order))

    def _start_later(self, container_id: str) -> None:
        """Start an acknowledged replacement while the controller goes on; a start the engine
        refuses is reported like its death (the controller discards it, as any failed one)."""
        task = asyncio.ensure_future(self._start(container_id))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _start(self, container_id: str) -> None:
        try:
            await self._workshop.connected().start(container_id)
        except RolloverError as exc:
            self._tell(ReplicaDown(container_id, self._clock(), f"could not start: {exc}"))
            return
        await self._started_here(container_id)

    async def refill(self, count: int) -> list[Replica]:
        """New replicas replacing nothing (a dead rollout removed replicas it never replaced):
        made by Compose as ``up --scale`` would make them, or, for a selector, cloned from one of
        the service's replicas on the target image."""
        return await self._check_started(await self._replacements.refill(self._scope, count, self._snapshot_ids))

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        restored = await restore_replica(self._workshop, self._scope.labels(), replaced, original, order)
        await self._started_here(restored.id)
        return restored

    async def retire(self, replica: Replica) -> None:
        await self._workshop.stop(replica)
        await self._workshop.remove_replaced([replica.id])

    async def discard(self, replica: Replica) -> None:
        self._workshop.drop_renames_to((replica.id,))
        async with self._workshop.mutations:
            # volumes=True removes only the volumes it made itself: those it took over are mounted
            # by name, and the engine never removes a named mount's volume with its container.
            await self._workshop.connected().remove(replica.id, force=True, volumes=True)

    async def diagnose(self, replica: Replica) -> dict[str, object]:
        engine = self._workshop.connected()
        inspect, log = await asyncio.gather(engine.inspect_container(replica.id),
                                            engine.container_log_tail(replica.id, LOG_LINES))
        return diagnosis_of(inspect, log)

    async def close(self) -> None:
        for task in list(self._starts):
            task.cancel()
        await asyncio.gather(*self._starts, return_exceptions=True)
        await self._rechecks.close()
        if self._health_runs is not None:
            await self._health_runs.close()
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()
        await self._workshop.close()
