"""The Docker Swarm backend: rollover paces Swarm's own updater, one request at a time.

Swarm cannot replace a task someone chooses: tasks are created only by the manager, from the
service's current spec, and any spec change sets Swarm's updater on every task that differs. So
each ``redeploy``/``restore`` is one spec change whose update config is
``parallelism=n, delay=1 year, order, failure_action=pause``: the updater replaces exactly ``n``
slots (which ones is Swarm's choice), then holds. The next request changes the spec again (a
request label), which cancels the held updater and starts one on the slots still dirty. rollover
keeps what it is good at (when the next request goes out, grace, timeouts, failure policy, the
report); Swarm keeps what only it can do (making tasks). Up/down comes from every node's container
events and the manager's task list (``swarm_watch``), so every node must be reachable.

Consequences, all checked against swarmkit's updater (manager/orchestrator/update/updater.go):
- Replacements are returned one per target, but Swarm picks the slot: each says which task it
  displaced (``Replica.replaces``), and the controller trades that target for the one it asked
  for, so the task Swarm stops is the one drained and retired (``retire`` waits for Swarm to stop
  it once the new one runs).
- A start-first slot in flight (old and new task both live) would be cut short by the next
  updater run (``useExistingTask`` shuts the old task down at once), so a request waits until no
  healthy start-first replacement is in flight: start-first rolls one request at a time on Swarm.
  Stop-first requests go out while others are in flight.
- A failed start-first replacement is restarted by Swarm beside its old task until the spec
  changes; a further forward request would let Swarm swap it in for the old task, so it fails
  instead (PlatformError). ``restore`` and ``discard`` clean such slots up.
- A spec change someone else makes (``docker service scale``) restarts the updater on random
  dirty slots: it may leave a start-first swap half done (finished by ``retire``, see
  ``stalled_swaps``), replace slots by itself (taken by the next request instead of a new spec
  change, see ``unrequested_replacements``), or remove slots (their targets are skipped).
- When the rollout is over and every task runs the current spec, the user's update config and
  labels are put back (the service shows no update in progress). A rollout that stopped half
  way (or a rollover that was killed) leaves the service on hold, like a paused Swarm update:
  ``docker service update --update-delay 0s SERVICE`` lets Swarm finish it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from rollover.backends.base import DEFAULT_LEASE_S
from rollover.backends.docker_engine import Engine, engine_address
from rollover.backends.swarm_lock import SwarmLock
from rollover.backends.swarm_service import SwarmService
from rollover.backends.swarm_tasks import (
    NS,
    Displacements,
    Json,
    SwarmTask,
    TaskContext,
    definition_of,
    dirty_slots,
    displaced_by,
    failing_slots,
    fixed_host_ports,
    forward_template,
    handed_back_spec,
    health_budget,
    held_template,
    replacements_made,
    replica_from_task,
    request_spec,
    slots,
    stalled_swaps,
    start_first_in_flight,
    unrequested_replacements,
    users_spec,
)
from rollover.backends.swarm_watch import SwarmWatch
from rollover.errors import (
    EngineUnavailable,
    ImageNotFound,
    PlatformError,
    ServiceNotFound,
    TargetRemoved,
    Unsupported,
)
from rollover.model import Order, Replica, ReplicaDown, ReplicaEvent, ReplicaUp, ServiceSnapshot, StaleLock

# Swarm creates a requested task within milliseconds; this much is a broken manager.
_ACK_LIMIT_S = 30.0
# Swarm's agent waits 2 s for gossip before it stops a task's container; then the stop itself.
_RETIRE_SLACK_S = 30.0
# Swarm's updater stops the old task of a start-first slot milliseconds after its replacement runs
# (the manager's list shows both for a moment): a pair up this long is a swap left half done.
_STALL_S = 1.0


@dataclass(frozen=True)
class _Request:
    """One spec change and what tells the tasks it makes: new since ``known``, of ``definition``,
    in one of the ``dirty`` slots."""

    label: str
    count: int
    definition: tuple[str, int]
    dirty: frozenset[str]
    crowded: frozenset[str]  # dirty slots with a start-first replacement in flight
    known: frozenset[str]


@dataclass(frozen=True)
class _Node:
    id: str
    hostname: str
    address: str
    schedulable: bool  # ready and active: new tasks may land there


def _publishes_host_ports(spec_document: Mapping[str, Any]) -> bool:
    ports = ((spec_document.get("EndpointSpec") or {}).get("Ports")) or []
    return any(port.get("PublishMode") == "host" for port in ports)


class SwarmBackend:
    platform = "swarm"

    def __init__(self, service: str, *, image: str | None = None, pull: bool = False,
                 docker_host: str | None = None, clock: Callable[[], float],
                 node_hosts: Mapping[str, str] | None = None,
                 replacement_timeout_s: float | None = None) -> None:
        """``node_hosts`` maps node hostnames (or ids) to their Docker daemons: container events
        are only visible on each node's own daemon. ``replacement_timeout_s`` (the controller's
        timeout) bounds how long a start-first request waits for the one in flight before it."""
        self.service = service
        self._image = image
        self._pull = pull
        self._docker_host = docker_host
        self._clock = clock
        self._node_hosts = dict(node_hosts or {})
        self._replacement_timeout_s = replacement_timeout_s
        self._manager: Engine | None = None
        self._engines: dict[str, Engine] = {}  # node id -> its daemon
        self._nodes: dict[str, _Node] = {}
        self._watch: SwarmWatch | None = None
        self._original: Json = {}  # the user's service spec when the snapshot was taken
        self._held: Json | None = None  # the template a killed rollout held the service on, to go on with
        self._forward: Json | None = None  # the task template to roll to
        self._global = False
        self._requests = 0
        self._run = uuid.uuid4().hex[:8]  # tells this rollout's requests from a killed one's
        self._request_lock = asyncio.Lock()
        self._displaced = Displacements()
        self._preexisting: frozenset[str] = frozenset()  # task ids listed when the snapshot was taken
        self._up_since: dict[str, float] = {}  # replacement task id -> when a look first showed it up
        self._pending: dict[str, _Request] = {}  # restore key -> its request, until its tasks are seen
        self._restored: dict[str, Replica] = {}  # replaced id -> what its restore made
        self._healthchecks: dict[str, Mapping[str, Any] | None] = {}  # image ref -> its check
        self._lock: SwarmLock | None = None
        self._handed_back = False

    # -- connection --------------------------------------------------------------------------------

    async def connect(self) -> None:
        manager = self._manager = await Engine.connect(self._docker_host)
        swarm = (await manager.call("read the Swarm state", manager.api.info)).get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise Unsupported(f"the Docker daemon at {manager.address} is not a Swarm manager")
        down: list[str] = []
        for raw in await manager.call("list Swarm nodes", manager.api.nodes):
            if raw["Status"]["State"] == "down":
                down.append(str(raw["ID"]))
            node = _Node(str(raw["ID"]), str(raw["Description"]["Hostname"]), str(raw["Status"].get("Addr", "")),
                         raw["Status"]["State"] == "ready" and raw["Spec"]["Availability"] == "active")
            self._nodes[node.id] = node
            host = self._node_hosts.get(node.hostname) or self._node_hosts.get(node.id)
            if node.id == swarm.get("NodeID"):
                self._engines[node.id] = manager
            elif host is not None and raw["Status"]["State"] == "ready":  # a down node runs nothing new
                self._engines[node.id] = await Engine.connect(host)
        self._watch = SwarmWatch(manager, self._engines, self.service, self._clock,
                                 hostnames={node.id: node.hostname for node in self._nodes.values()},
                                 down=down)

    def events(self) -> AsyncIterator[ReplicaEvent]:
        return self._connected_watch().events()

    async def refresh(self, replica: Replica) -> Replica:
        """A task's host-mode port is only in its status once it runs, and the manager's list lags
        the node's healthy event: wait (bounded) until the port is there, when the spec has one."""
        wants_port = _publishes_host_ports(self._original)

        def described(tasks: list[SwarmTask]) -> SwarmTask | None:
            task = next((task for task in tasks if task.id == replica.id), None)
            return task if task is not None and (task.published or not wants_port or not task.live) else None

        try:
            task = await self._connected_watch().wait_until(described, f"task {replica.name}'s port", _ACK_LIMIT_S)
        except PlatformError:
            return replica  # not described in time: the balancer says what it misses
        template = self._forward if self._forward is not None else self._original["TaskTemplate"]
        return await self._replica(task, template)

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        """The tasks' state now, from the manager's list (nothing for tasks still starting)."""
        tasks = {task.id: task for task in await self._connected_watch().look(report=False)}
        at, events = self._clock(), list[ReplicaEvent]()
        for replica_id in replica_ids:
            task = tasks.get(replica_id)
            if task is None:
                events.append(ReplicaDown(replica_id, at, "gone from the task list"))
            elif task.up:
                events.append(ReplicaUp(replica_id, at))
            elif task.ended or not task.live:
                events.append(ReplicaDown(replica_id, at, task.error if task.ended else "shut down by Swarm"))
        return events

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
        for engine in {id(engine): engine for engine in self._engines.values()}.values():
            await engine.close()
        if self._manager is not None and self._manager not in self._engines.values():
            await self._manager.close()

    # -- looking -----------------------------------------------------------------------------------

    async def snapshot(self) -> ServiceSnapshot:
        document = await self._on_manager().inspect()
        # Taken over from a killed rollout, the spec is its held one: the user's is in its labels.
        self._original = users_spec(document["Spec"])
        self._held = held_template(document["Spec"], self._image)
        self._global = "Global" in (self._original.get("Mode") or {})
        tasks = await self._connected_watch().look()
        self._preexisting = frozenset(task.id for task in tasks)
        targets = [task for task in tasks if task.is_target]
        if not targets:
            raise ServiceNotFound(f"Swarm service {self.service} has no running or starting task")
        replicas = await asyncio.gather(*(self._replica(task, self._original["TaskTemplate"]) for task in targets))
        mode = "global" if self._global else "replicated"
        where = f"Swarm service {self.service} ({mode}, {len(replicas)} tasks on {len(self._nodes)} nodes)"
        return ServiceSnapshot(self.service, self.platform, tuple(replicas), description=where)

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        unwatched = sorted(node.hostname for node in self._nodes.values()
                           if node.schedulable and node.id not in self._engines)
        if unwatched:
            raise Unsupported(
                f"Swarm nodes {', '.join(unwatched)} cannot be watched: their container events are only"
                " visible on their own daemons; give each node's Docker host (node_hosts)"
            )
        forward = self._held or forward_template(self._original["TaskTemplate"], self._image)
        ref = str(forward.get("ContainerSpec", {}).get("Image", ""))
        for node in self._nodes.values():
            if node.schedulable:
                await self._ensure_image(node, ref)
        self._forward = forward

    async def _ensure_image(self, node: _Node, ref: str) -> None:
        """Swarm nodes use local images (and pull only from a registry): check every node."""
        engine = self._engines[node.id]
        found = await engine.inspect_image(ref)
        if found is None and self._pull:
            with contextlib.suppress(PlatformError):
                await engine.pull(ref)
            found = await engine.inspect_image(ref)
        if found is None:
            raise ImageNotFound(f"image {ref} is not on Swarm node {node.hostname}" +
                                ("" if self._pull else " (pull was not asked for)"))
        self._healthchecks.setdefault(ref, (found.get("Config") or {}).get("Healthcheck"))

    # -- lock --------------------------------------------------------------------------------------

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0,
                           ) -> StaleLock | None:
        lock = self._lock = SwarmLock(self._connected_manager(), self.service)
        return await lock.acquire(holder, lease_s, replicas)

    async def release_lock(self) -> None:
        if self._lock is None or not self._lock.held:
            return
        try:
            await self._hand_back()  # while still holding the lock: nobody else touches the spec
        finally:
            await self._lock.release()

    # -- replacing ---------------------------------------------------------------------------------

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        if self._forward is None:
            raise PlatformError("redeploy before prepare: nothing to roll to")
        return await self._replace(targets, self._forward, order, forward=True)

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        """Every original was made from the user's spec: its template is the way back.

        Idempotent (the protocol's contract): a call again after the platform went away mid-call
        returns what the first made, and never sends a second spec change once the first reached
        the manager (its request label tells); it waits for what that one makes instead.
        """
        if replaced.id not in self._restored:
            [self._restored[replaced.id]] = await self._replace(
                [replaced], self._original["TaskTemplate"], order, forward=False, key=replaced.id)
        return self._restored[replaced.id]

    async def _replace(self, targets: Sequence[Replica], template: Json, order: Order,
                       forward: bool, key: str | None = None) -> list[Replica]:
        async with self._request_lock:
            await self._wait_until_slots_settle(forward)
            made: list[SwarmTask] = []
            while len(made) < len(targets):
                made += await self._request(len(targets) - len(made), template, order, key)
            tasks = self._connected_watch().latest
            replicas = await asyncio.gather(*(self._replica(task, template) for task in made))
            replaced: list[Replica] = []
            for target, task, replica in zip(targets, made, replicas, strict=True):
                # Swarm picked the slot: the task that goes may be another target's (the
                # controller then trades the two, see rollout.request_acknowledged).
                displaced = displaced_by(task, tasks)
                went = displaced.id if displaced else target.id
                self._displaced.record(target.id, went)
                replaced.append(replace(replica, replaces=went))
            return replaced

    async def _wait_until_slots_settle(self, forward: bool) -> None:
        """Wait while a healthy start-first replacement is in flight (see the module docstring);
        not for a swap left half done (``stalled_swaps``): a request may land there and finish it."""
        def settled(tasks: list[SwarmTask]) -> bool | None:
            failing = failing_slots(tasks)
            if forward and failing:
                slot, error = next(iter(failing.items()))
                raise PlatformError(f"the replacement in slot {slot} failed ({error}); Swarm would put it in"
                                    " place of the task it was to replace, so no further task is replaced")
            stalled = self._stalled(tasks)
            busy = [slot for slot in start_first_in_flight(tasks) if slot not in failing and slot not in stalled]
            return True if not busy else None

        limit = self._replacement_timeout_s or (self._forward_budget() + 10.0)
        await self._connected_watch().wait_until(settled, "the start-first replacement in flight", limit)

    def _stalled(self, tasks: list[SwarmTask]) -> set[str]:
        """Slots of ``stalled_swaps`` whose replacement has been up for ``_STALL_S`` or more."""
        now, grouped, stalled = self._clock(), slots(tasks), set()
        for slot in stalled_swaps(tasks):
            replacement = [task for task in grouped[slot] if task.live][-1]
            if now - self._up_since.setdefault(replacement.id, now) >= _STALL_S:
                stalled.add(slot)
        return stalled

    async def _request(self, count: int, template: Json, order: Order, key: str | None = None) -> list[SwarmTask]:
        """One spec change: Swarm replaces up to ``count`` dirty slots, then holds. Returns the new
        tasks; fewer when a worker of Swarm's merely cleaned a slot with a failed replacement.
        Replacements Swarm made by itself (``unrequested_replacements``) are taken first: for those,
        no spec change goes out.

        With a ``key``, the request is recorded before it goes out, and a call again with that key
        (after an outage cut the first short) sends it only if the manager's spec does not carry
        its label yet; either way it then waits for what the request makes.
        """
        watch = self._connected_watch()
        request = self._pending.get(key) if key is not None else None
        retried = request is not None
        if request is None:
            before = await watch.look()
            definition = definition_of(template)
            found = unrequested_replacements(before, definition, self._preexisting | watch.replacements)[:count]
            if found:
                watch.replacements.update(task.id for task in found)
                return found
            dirty = frozenset(dirty_slots(before, definition))
            if not dirty and watch.slots_removed:
                raise TargetRemoved(f"no task of Swarm service {self.service} is left to replace: a scale-down"
                                    f" removed {len(watch.slots_removed)} of its tasks meanwhile")
            if not dirty:
                raise PlatformError(f"no task of Swarm service {self.service} is left to replace")
            self._requests += 1
            request = _Request(label=self._request_label(), count=min(count, len(dirty)), definition=definition,
                               dirty=dirty, crowded=frozenset(start_first_in_flight(before)) & dirty,
                               known=frozenset(task.id for task in before))
            if key is not None:
                self._pending[key] = request
        if not (retried and await self._on_manager().carries(request.label)):  # a fresh request has not gone out
            await self._on_manager().update(
                lambda spec: request_spec(spec, template, request.count, order, request.label))

        def replaced(tasks: list[SwarmTask]) -> list[SwarmTask] | None:
            fresh = replacements_made(tasks, request.known, request.definition, request.dirty)
            cleaned = request.crowded - set(start_first_in_flight(tasks)) - {task.slot for task in fresh}
            return fresh[:request.count] if len(fresh) + len(cleaned) >= request.count else None

        made = await watch.wait_until(replaced, f"Swarm to start {request.count} replacement(s)", _ACK_LIMIT_S)
        if key is not None:
            del self._pending[key]
        watch.replacements.update(task.id for task in made)
        return made

    async def retire(self, replica: Replica) -> None:
        """Swarm stops the displaced task itself once its replacement runs: wait for that. A swap
        left half done (a spec change by someone else cancelled the updater) is finished here."""
        task_id = self._displaced.task_to_stop(replica.id)

        def stopped_or_stalled(tasks: list[SwarmTask]) -> str | None:
            task = next((task for task in tasks if task.id == task_id), None)
            if task is None or (not task.live and task.ended):
                return "stopped"
            return "stalled" if task.live and task.slot in self._stalled(tasks) else None

        grace = (self._original["TaskTemplate"].get("ContainerSpec") or {}).get("StopGracePeriod") or 10 * NS
        deadline = self._clock() + grace / NS + _RETIRE_SLACK_S
        while True:
            left = max(deadline - self._clock(), 0.0)
            outcome = await self._connected_watch().wait_until(stopped_or_stalled, f"task {task_id[:12]} to stop",
                                                               left)
            if outcome == "stopped":
                return
            await self._finish_swap(task_id)

    async def _finish_swap(self, task_id: str) -> None:
        """Start Swarm's updater again on the current spec, one slot: in the stalled slot it only
        shuts the old task down. Swarm picks the slot, though: it may replace another dirty slot
        first (that replacement is taken by the next request, see ``unrequested_replacements``),
        and the caller tries again once it is up."""
        async with self._request_lock:
            await self._wait_until_slots_settle(forward=False)
            tasks = await self._connected_watch().look()
            task = next((task for task in tasks if task.id == task_id), None)
            if task is None or not task.live or task.slot not in self._stalled(tasks):
                return
            template = (await self._on_manager().inspect())["Spec"]["TaskTemplate"]
            self._requests += 1
            label = self._request_label()
            await self._on_manager().update(
                lambda spec: request_spec(spec, template, 1, Order.START_FIRST, label))
            known = {task.id for task in tasks}

            def acted(now: list[SwarmTask]) -> bool | None:
                finished = not any(task.id == task_id and task.live for task in now)
                return True if finished or any(task.id not in known for task in now) else None

            await self._connected_watch().wait_until(acted, "Swarm to act on the spec change", _ACK_LIMIT_S)

    async def discard(self, replica: Replica) -> None:
        """A failed start-first replacement: Swarm restarts it until the spec changes. If nothing
        of the rollout came up anywhere, going back to the original spec is exact: only such slots
        are dirty then. Otherwise the failed slot stays (a later restore cleans it up)."""
        watch = self._connected_watch()
        tasks = await watch.look()
        document = await self._on_manager().inspect()
        current, original = document["Spec"]["TaskTemplate"], self._original["TaskTemplate"]
        if definition_of(current) == definition_of(original):
            return
        # The replica being discarded may itself be up (it failed its admission, not its start):
        # it does not count as a replacement that came up.
        if any(task.up and task.definition == definition_of(current) and task.id != replica.id for task in tasks):
            return
        await self._revert_all(tasks)

    async def _revert_all(self, tasks: list[SwarmTask]) -> None:
        original = self._original["TaskTemplate"]
        dirty = dirty_slots(tasks, definition_of(original))
        if not dirty:
            return
        self._requests += 1
        await self._on_manager().update(
            lambda spec: request_spec(spec, original, len(dirty), Order.START_FIRST, self._request_label()))
        await self._connected_watch().wait_until(
            lambda now: True if not dirty_slots(now, definition_of(original)) else None,
            "Swarm to go back to the original spec", _ACK_LIMIT_S + self._forward_budget())

    async def _hand_back(self) -> None:
        """The user's update config and labels go back once every task runs the current spec."""
        if self._requests == 0 or self._handed_back:
            return
        tasks = await self._connected_watch().look()
        document = await self._on_manager().inspect()
        current = definition_of(document["Spec"]["TaskTemplate"])
        dirty = dirty_slots(tasks, current)
        if dirty and current == definition_of(self._original["TaskTemplate"]):
            # Rolled back, but tasks of the rollout's spec are left: failed replacements Swarm keeps
            # restarting, or tasks Swarm made by itself from that spec (refilling the slots of a
            # lost node) while it was current. The way back covers them too.
            await self._revert_all(tasks)
        elif dirty:
            return  # stopped half way: stay on hold, as a paused Swarm update would
        self._handed_back = True
        await self._on_manager().update(lambda spec: handed_back_spec(spec, self._original))

    # -- helpers -----------------------------------------------------------------------------------

    async def _replica(self, task: SwarmTask, template: Mapping[str, Any]) -> Replica:
        container: Mapping[str, Any] | None = None
        engine = self._engines.get(task.node_id)
        if engine is not None and task.container_id and task.node_id not in self._connected_watch().down:
            with contextlib.suppress(EngineUnavailable):  # a node being lost: the spec tells the check
                container = await engine.inspect_container(task.container_id)
        if container is not None:
            healthcheck = (container.get("Config") or {}).get("Healthcheck")
        else:
            healthcheck = await self._template_healthcheck(template)
        context = TaskContext(
            service=self.service, global_mode=self._global, fixed_ports=fixed_host_ports(self._original),
            node_addresses={node.id: node.address for node in self._nodes.values()},
            image_id=str((container or {}).get("Image", "")), healthcheck=healthcheck,
        )
        return replica_from_task(task, context)

    async def _template_healthcheck(self, template: Mapping[str, Any]) -> Mapping[str, Any] | None:
        container_spec = template.get("ContainerSpec") or {}
        if container_spec.get("Healthcheck"):
            return cast(Mapping[str, Any], container_spec["Healthcheck"])
        ref = str(container_spec.get("Image", ""))
        if ref not in self._healthchecks:
            found = await self._connected_manager().inspect_image(ref)
            self._healthchecks[ref] = ((found or {}).get("Config") or {}).get("Healthcheck")
        return self._healthchecks[ref]

    def _request_label(self) -> str:
        return f"{self._run}-{self._requests}"

    def _forward_budget(self) -> float:
        """The replacement's health budget, or 50 s without a check (+ 10 s: the controller's default)."""
        template = self._forward or self._original.get("TaskTemplate") or {}
        ref = str((template.get("ContainerSpec") or {}).get("Image", ""))
        check = (template.get("ContainerSpec") or {}).get("Healthcheck") or self._healthchecks.get(ref)
        budget = health_budget(check)
        return 50.0 if budget is None else budget

    def _on_manager(self) -> SwarmService:
        """The service's document on the manager (inspect, update, carries)."""
        return SwarmService(self._connected_manager(), self.service)

    def _connected_manager(self) -> Engine:
        if self._manager is None:
            raise EngineUnavailable(f"not connected to {engine_address(self._docker_host)}")
        return self._manager

    def _connected_watch(self) -> SwarmWatch:
        if self._watch is None:
            raise EngineUnavailable(f"not connected to {engine_address(self._docker_host)}")
        return self._watch


