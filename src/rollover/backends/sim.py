"""The simulator: an in-memory platform on the event loop's clock (virtual under ``simulate``).

The seed's model made exact: a request is acknowledged ``request_time`` seconds after it is sent,
and a replica is up ``redeploy_time`` seconds after its request was sent. Step 'all' is one
service-wide request, so it costs one request time for every replica together.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from rollover.backends.base import DEFAULT_LEASE_S
from rollover.core.model import Order, Replica, ReplicaDown, ReplicaEvent, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.errors import EngineUnavailable, Locked, PlatformError, ServiceNotFound


@dataclass
class SimulatedService:
    """What the simulator's platform holds; tests read it to check the end state."""

    name: str
    replicas: dict[str, Replica] = field(default_factory=dict)
    lock_holder: str | None = None
    ready: set[str] = field(default_factory=set)  # replicas up and not removed
    min_ready: int = 0  # the fewest ready replicas at any moment of the rollout

    def add_ready(self, replica_id: str) -> None:
        self.ready.add(replica_id)

    def remove(self, replica_id: str) -> None:
        self.replicas.pop(replica_id, None)
        self.ready.discard(replica_id)
        self.min_ready = min(self.min_ready, len(self.ready))


class SimBackend:
    platform = "sim"

    def __init__(
        self,
        replicas: int,
        request_time: float,
        redeploy_time: float,
        *,
        fail_replicas: Sequence[int] = (),
        extra_at: Sequence[float] = (),
        stream_gap: tuple[float, float] | None = None,
        service: str = "app",
        image: str = "v2",
        stale_lock: StaleLock | None = None,
        restore_outage: int = 0,
        refills_fail: bool = False,
    ) -> None:
        """``fail_replicas``: 1-based positions of targets whose replacement exits instead of coming
        up; ``extra_at``: times at which an extra replica of the service comes up; ``stream_gap``:
        (lost, back) the event stream breaks at ``lost`` and cannot be reopened before ``back``;
        events in between are never delivered (the controller must look them up); ``stale_lock``:
        the lock of a dead rollout, found (and taken over) when the lock is acquired;
        ``restore_outage``: the first that many restores lose the platform after they made their
        replica (EngineUnavailable, as a daemon restart does), so only their retry returns it;
        ``refills_fail``: refilled replicas exit instead of coming up."""
        if replicas < 1:
            raise ServiceNotFound(f"simulated service {service!r} needs at least one replica")
        self.request_time = request_time
        self.redeploy_time = redeploy_time
        self.new_image = image
        self._extra_at = tuple(extra_at)
        self._stream_gap = stream_gap
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[ReplicaEvent] = asyncio.Queue()
        self.state = SimulatedService(name=service)
        self._stale_lock = stale_lock
        self._restore_outage = restore_outage
        self._refills_fail = refills_fail
        self._restored: dict[str, Replica] = {}  # replaced id -> its restore (restore is idempotent)
        self.restore_calls = 0
        for _ in range(replicas):
            replica = self._make(f"{service}-{len(self.state.replicas) + 1}", "v1")
            self.state.replicas[replica.id] = replica
            self.state.add_ready(replica.id)
        self.state.min_ready = replicas
        originals = list(self.state.replicas)
        self._failing = {originals[position - 1] for position in fail_replicas if 0 < position <= replicas}

    def _make(self, name: str, image: str) -> Replica:
        return Replica(id=f"sim{next(self._ids):04d}", name=name, image=image, image_ref=image, has_healthcheck=True)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for moment in self._extra_at:
            loop.call_at(moment, self._add_extra)
        if self._stream_gap is not None:
            loop.call_at(self._stream_gap[0], self._break_stream)

    def _break_stream(self) -> None:
        self._events.put_nowait(ReplicaDown("", 0.0, "stream-broken"))  # a marker, never delivered

    def _in_gap(self) -> bool:
        now = asyncio.get_running_loop().time()
        return self._stream_gap is not None and self._stream_gap[0] <= now < self._stream_gap[1]

    def _deliver(self, event: ReplicaEvent) -> None:
        if not self._in_gap():
            self._events.put_nowait(event)

    def _add_extra(self) -> None:
        extra = self._make(f"{self.state.name}-extra-{len(self.state.replicas) + 1}", "v1")
        self.state.replicas[extra.id] = extra
        self.state.add_ready(extra.id)
        self._deliver(ReplicaUp(extra.id, asyncio.get_running_loop().time()))

    def events(self) -> AsyncIterator[ReplicaEvent]:
        if self._in_gap():
            raise PlatformError("simulated platform unreachable")
        return self._stream()

    async def _stream(self) -> AsyncIterator[ReplicaEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, ReplicaDown) and event.reason == "stream-broken":
                raise PlatformError("simulated event stream broke")
            yield event

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        now = asyncio.get_running_loop().time()
        seen: list[ReplicaEvent] = []
        for replica_id in replica_ids:
            if replica_id not in self.state.replicas:
                seen.append(ReplicaDown(replica_id, now, "removed", gone=True))
            elif replica_id in self.state.ready:
                seen.append(ReplicaUp(replica_id, now))
            elif not self.state.replicas[replica_id].running:
                seen.append(ReplicaDown(replica_id, now, "exited with code 1"))
        return seen

    async def refresh(self, replica: Replica) -> Replica:
        return self.state.replicas.get(replica.id, replica)

    async def snapshot(self) -> ServiceSnapshot:
        return ServiceSnapshot(
            name=self.state.name, platform=self.platform, replicas=tuple(self.state.replicas.values()),
            description=f"simulated service {self.state.name}",
        )

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        return None

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0) -> StaleLock | None:
        if self.state.lock_holder is not None:
            raise Locked(f"rollout of {self.state.name} already running: held by {self.state.lock_holder}")
        self.state.lock_holder = holder
        stale, self._stale_lock = self._stale_lock, None
        return stale

    async def release_lock(self) -> None:
        self.state.lock_holder = None

    async def wait_for_lock(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)  # virtual time: nobody else ever releases a simulated lock

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        return await self._replace(targets, [self.new_image] * len(targets), order)

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        self.restore_calls += 1
        earlier = self._restored.get(replaced.id)
        if earlier is not None and earlier.id in self.state.replicas:
            return earlier
        (restored,) = await self._replace([replaced], [original.image], order, failing=False)
        self._restored[replaced.id] = restored
        if self._restore_outage > 0:
            self._restore_outage -= 1
            raise EngineUnavailable("simulated platform unreachable: the answer to a restore was lost")
        return restored

    async def refill(self, count: int) -> list[Replica]:
        """New replicas on the new image, replacing nothing; they come up like replacements."""
        names = [f"{self.state.name}-{len(self.state.replicas) + n}" for n in range(1, count + 1)]
        return await self._create([], names, [self.new_image] * count, Order.START_FIRST, self._refills_fail)

    async def _replace(
        self, targets: Sequence[Replica], images: Sequence[str], order: Order, failing: bool = True
    ) -> list[Replica]:
        return await self._create(targets, [target.name for target in targets], images, order, failing)

    async def _create(
        self, targets: Sequence[Replica], names: Sequence[str], images: Sequence[str], order: Order, failing: bool
    ) -> list[Replica]:
        """Replicas named ``names`` on ``images``, for ``targets`` (removed first under stop-first).
        ``failing``: those for targets in ``fail_replicas`` fail, and those for no target (refills)."""
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        if order is Order.STOP_FIRST:
            for target in targets:
                self.state.remove(target.id)
        await asyncio.sleep(self.request_time)
        created = []
        for index, (name, image) in enumerate(zip(names, images, strict=True)):
            new = self._make(name, image)
            self.state.replicas[new.id] = new
            fails = failing and (index >= len(targets) or targets[index].id in self._failing)
            loop.call_at(sent_at + self.redeploy_time, self._come_up_or_fail, new.id, fails)
            created.append(new)
        return created

    def _come_up_or_fail(self, replica_id: str, fails: bool) -> None:
        now = asyncio.get_running_loop().time()
        if replica_id not in self.state.replicas:
            return
        if fails:
            self.state.replicas[replica_id] = replace(self.state.replicas[replica_id], running=False)
            self._deliver(ReplicaDown(replica_id, now, "exited with code 1"))
        else:
            self.state.add_ready(replica_id)
            self._deliver(ReplicaUp(replica_id, now))

    async def retire(self, replica: Replica) -> None:
        self.state.remove(replica.id)

    async def discard(self, replica: Replica) -> None:
        self.state.remove(replica.id)

    async def close(self) -> None:
        return None
