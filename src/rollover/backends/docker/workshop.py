"""Where a Docker backend makes, starts and stops containers, and what it remembers of them.

Every path shares it (Compose replacements, selector clones, refills, rollbacks, the lock):
- ``mutations`` is the one lock of backend.py's rules; callers hold it around their Compose calls,
  creations and removals, and a failed start_fresh() takes it for its cleanup. The removal of a
  replaced replica (retire, stop-first's last step) holds only ``compose_counts``, the part of
  that rule it is about: Compose counts the service's containers and makes more (once per rollout),
  and no removal may land in between. So a retire no longer queues the next request's create
  behind it: with 15 replacements a wave on a busy engine, a request waited for up to 15 removals.
- Nothing half-made is left behind: a container whose networks cannot be connected is removed,
  and when one of a batch of fresh containers cannot start, the whole batch is.
- The inspect data of every replica seen is kept (``recorded``): a rollback clones it, and a
  Compose replacement takes over the predecessor's volumes by it.
- What it remembers changes only through its methods: the event filter (``is_internal``), the
  names handed over on retire (``rename_on_retire``, ``hand_name_over``) and the records agree
  whichever path (replacement, refill, rollback) made the container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

from rollover.backends.docker.clone import CloneRequest, endpoint_for_connect
from rollover.backends.docker.inspect import healthcheck_of, replica_from_inspect, stop_timeout_s
from rollover.core.model import Replica
from rollover.engine import ENGINE_CALLS_AT_ONCE, Engine, Inspect
from rollover.errors import NameTaken, PlatformError, RolloverError


class Workshop:
    """The engine, the one lock of mutations, and what was recorded of the containers."""

    def __init__(self, engine: Engine | None = None) -> None:
        """``engine``: one already connected (tests pass a stand-in); else connect() makes one."""
        self._engine = engine
        self.mutations = asyncio.Lock()
        self.compose_counts = asyncio.Lock()  # held by Compose's run (always inside mutations)
        self._definitions: dict[str, Inspect] = {}  # inspect data of every replica seen, by id
        self._healthchecked: dict[str, bool] = {}
        self._internal_ids: set[str] = set()  # containers we made and unmade on the way: no events
        self._pending_renames: dict[str, tuple[str, str]] = {}  # old id -> (replacement id, name)

    async def connect(self, docker_host: str | None) -> None:
        # Its own threads: a step of starts must not hold up the next request (engine.py).
        self._engine = await Engine.connect(docker_host, own_threads=ENGINE_CALLS_AT_ONCE)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()

    def connected(self) -> Engine:
        if self._engine is None:
            raise PlatformError("the Docker backend is not connected (call connect() first)")
        return self._engine

    async def has_healthcheck(self, container_id: str) -> bool:
        if container_id not in self._healthchecked:
            inspect = await self.connected().inspect_container(container_id)
            # Gone already: its die/destroy follow, and it must not be reported up.
            self._healthchecked[container_id] = inspect is None or healthcheck_of(inspect["Config"]) is not None
        return self._healthchecked[container_id]

    def is_internal(self, container_id: str) -> bool:
        """Made and unmade on the way (``remove_unstarted``): its events are not the service's."""
        return container_id in self._internal_ids

    def remember(self, inspect: Inspect) -> None:
        self._definitions[str(inspect["Id"])] = inspect
        self._healthchecked[str(inspect["Id"])] = healthcheck_of(inspect.get("Config") or {}) is not None

    def recorded(self, container_id: str) -> Inspect | None:
        """The inspect data remembered of the container, if it was seen."""
        return self._definitions.get(container_id)

    def any_definition(self) -> Inspect | None:
        """The inspect data of one replica seen: all carry the service's image and Compose project."""
        return next(iter(self._definitions.values()), None)

    async def inspect(self, container_id: str) -> Inspect:
        inspect = await self.connected().inspect_container(container_id)
        if inspect is None:
            raise PlatformError(f"container {container_id[:12]} disappeared")
        return inspect

    async def definition_of(self, replica: Replica) -> Inspect:
        return self._definitions.get(replica.id) or await self.inspect(replica.id)

    async def create(self, request: CloneRequest, name: str) -> str:
        """Create the container, connect its extra networks, remember its healthcheck; its id."""
        engine = self.connected()
        new_id = await engine.create_container(request.body, name)
        if new_id is None:
            raise NameTaken(f"cannot create container {name}: the name is taken")
        try:
            for network, endpoint in request.extra_networks:
                await engine.connect_network(new_id, network, endpoint_for_connect(endpoint))
            self.remember(await self.inspect(new_id))
        except RolloverError:
            await engine.remove(new_id, force=True, volumes=True)  # half-made: never leave it behind
            raise
        return new_id

    async def start_fresh(self, container_ids: list[str]) -> list[Replica]:
        """Start containers just made; when one cannot start, none of them is left behind."""
        engine = self.connected()
        try:
            for container_id in container_ids:
                await engine.start(container_id)
        except RolloverError:
            async with self.mutations:
                for container_id in container_ids:
                    await engine.remove(container_id, force=True, volumes=True)  # taken-over volumes stay
            self.drop_renames_to(container_ids)
            raise
        return [await self.replica(container_id) for container_id in container_ids]

    async def remove_unstarted(self, container_id: str) -> None:
        """Remove a container made on the way and never started, with the volumes it made itself
        (taken-over ones are mounted by name and stay); its events are not reported."""
        self._internal_ids.add(container_id)
        await self.connected().remove(container_id, force=True, volumes=True)

    async def remove_replaced(self, replaced_ids: Sequence[str]) -> None:
        """Remove stopped replicas whose replacements now run on their volumes (stop-first's last
        step, and retire()), and hand each one's name over. Until now both were there, so a kill at
        any moment leaves every volume mounted by a container (see leftovers.py)."""
        async with self.compose_counts:
            for old_id in replaced_ids:
                # Volumes stay: the replacement mounts the anonymous ones by name, and a rollback needs them.
                await self.connected().remove(old_id, force=True, volumes=False)
        for old_id in replaced_ids:
            await self.hand_name_over(old_id)

    async def revive(self, replicas: Sequence[Replica]) -> None:
        """Start stop-first targets again whose replacement could not be made or started: they are
        intact, on their own volumes, so the service keeps its replicas and their data."""
        for replica in replicas:
            await self.connected().start(replica.id)

    def rename_on_retire(self, old_id: str, new_id: str, name: str) -> None:
        """``new_id`` takes ``name`` (still the old container's) once ``old_id`` is retired."""
        self._pending_renames[old_id] = (new_id, name)

    async def hand_name_over(self, retired_id: str) -> None:
        """The replacement waiting for the retired (removed) container's name takes it, if any."""
        pending = self._pending_renames.pop(retired_id, None)
        if pending is not None:
            await self.connected().rename(*pending)

    def drop_renames_to(self, container_ids: Collection[str]) -> None:
        """Forget the renames that would have given these (removed) containers an old name."""
        self._pending_renames = {
            old: pending for old, pending in self._pending_renames.items() if pending[0] not in container_ids
        }

    async def replica(self, container_id: str) -> Replica:
        inspect = await self.inspect(container_id)
        self.remember(inspect)
        return replica_from_inspect(inspect)

    async def stop(self, replica: Replica) -> None:
        known = self._definitions.get(replica.id) or await self.connected().inspect_container(replica.id)
        if known is not None:
            await self.connected().stop(replica.id, stop_timeout_s(known))
