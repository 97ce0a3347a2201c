"""The Docker Swarm backend: rollover paces Swarm's own updater, one request at a time.

Swarm cannot replace a task someone chooses: tasks are created only by the manager, from the
service's current spec, and any spec change sets Swarm's updater on every task that differs. So
each ``redeploy``/``restore`` is one spec change whose update config is
``parallelism=n, delay=1 year, order, failure_action=pause``: the updater replaces exactly ``n``
slots (which ones is Swarm's choice), then holds. The next request changes the spec again (a
request label), which cancels the held updater and starts one on the slots still dirty. rollover
keeps what it is good at (when the next request goes out, grace, timeouts, failure policy, the
report); Swarm keeps what only it can do (making tasks). Up/down comes from every node's container
events and the manager's task list (``watch``), so every node must be reachable.

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

The requests are sent, and what they make waited for, in ``requests``; ``nodes`` connects to
every node's daemon, ``replicas`` describes tasks as replicas, ``tasks`` reads task lists and
``spec`` computes the specs (both without a daemon), ``lock`` holds the rollout's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from rollover.backends.base import DEFAULT_LEASE_S
from rollover.backends.diagnosis import LOG_LINES, diagnosis_of, task_history
from rollover.backends.swarm.lock import SwarmLock
from rollover.backends.swarm.nodes import SwarmNodes
from rollover.backends.swarm.replicas import SwarmReplicas, publishes_host_ports
from rollover.backends.swarm.requests import ACK_LIMIT_S, SwarmRequests
from rollover.backends.swarm.service import SwarmService
from rollover.backends.swarm.spec import (
    NS,
    Json,
    forward_template,
    handed_back_spec,
    held_template,
    is_held,
    users_spec,
)
from rollover.backends.swarm.tasks import Displacements, SwarmTask, definition_of, dirty_slots, displaced_by
from rollover.backends.swarm.watch import SwarmWatch
from rollover.core.model import Order, Replica, ReplicaDown, ReplicaEvent, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.engine import Engine, engine_address
from rollover.errors import (
    EngineUnavailable,
    PlatformError,
    ServiceNotFound,
    Unsupported,
)

# Swarm's agent waits 2 s for gossip before it stops a task's container; then the stop itself.
_GOSSIP_S = 2.0
_RETIRE_SLACK_S = 30.0


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
        self._replacement_timeout_s = replacement_timeout_s
        self._manager: Engine | None = None
        self._nodes = SwarmNodes(node_hosts)
        self._replicas = SwarmReplicas(service, self._nodes)
        self._watch: SwarmWatch | None = None
        self._original: Json = {}  # the user's service spec when the snapshot was taken
        self._held: Json | None = None  # the template a killed rollout held the service on, to go on with
        self._forward: Json | None = None  # the task template to roll to
        self._global = False
        self._requests: SwarmRequests | None = None  # the spec changes, once connected
        self._displaced = Displacements()
        self._restored: dict[str, Replica] = {}  # id of the task that went -> the restore that took its slot
        self._lock: SwarmLock | None = None
        self._handed_back = False
        self._found_held = False  # the snapshot found the spec held by a killed rollout

    # -- connection --------------------------------------------------------------------------------

    async def connect(self) -> None:
        manager = self._manager = await Engine.connect(self._docker_host)
        swarm = await manager.swarm_state()
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise Unsupported(f"the Docker daemon at {manager.address} is not a Swarm manager")
        await self._nodes.connect(manager, swarm.get("NodeID"))
        self._watch = SwarmWatch(manager, self._nodes.engines, self.service, self._clock,
                                 hostnames=self._nodes.hostnames, down=self._nodes.down)
        self._requests = SwarmRequests(self._watch, self._on_manager(), self._clock,
                                       replacement_timeout_s=self._replacement_timeout_s,
                                       forward_budget=self._forward_budget)

    def events(self) -> AsyncIterator[ReplicaEvent]:
        return self._connected_watch().events()

    async def refresh(self, replica: Replica) -> Replica:
        """A task's host-mode port is only in its status once it runs, and the manager's list lags
        the node's healthy event: wait (bounded) until the port is there, when the spec has one."""
        wants_port = publishes_host_ports(self._original)

        def described(tasks: list[SwarmTask]) -> SwarmTask | None:
            task = next((task for task in tasks if task.id == replica.id), None)
            return task if task is not None and (task.published or not wants_port or not task.live) else None

        try:
            task = await self._connected_watch().wait_until(described, f"task {replica.name}'s port", ACK_LIMIT_S)
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

    async def diagnose(self, replica: Replica) -> dict[str, object]:
        """The task's error and its slot's history from the manager; its container's state, health
        checks and log from the node's own daemon, when rollover reaches that node."""
        tasks = await self._connected_watch().look(report=False)
        task = next((task for task in tasks if task.id == replica.id), None)
        if task is None:
            return {"gone": True}
        engine = self._nodes.engines.get(task.node_id)
        found: dict[str, object] = {"state": task.state, "exit_code": None, "health_checks": [], "log": []}
        if engine is not None and task.container_id:
            inspect, log = await asyncio.gather(engine.inspect_container(task.container_id),
                                                engine.container_log_tail(task.container_id, LOG_LINES))
            if inspect is not None:
                found = diagnosis_of(inspect, log)
        found["task_error"] = task.error
        found["task_history"] = task_history([(other.created, other.state, other.error)
                                              for other in tasks if other.slot == task.slot])
        return found

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
        await self._nodes.close()
        if self._manager is not None and self._manager not in self._nodes.engines.values():
            await self._manager.close()

    # -- looking -----------------------------------------------------------------------------------

    async def snapshot(self) -> ServiceSnapshot:
        document = await self._on_manager().inspect()
        # Taken over from a killed rollout, the spec is its held one: the user's is in its labels.
        self._original = users_spec(document["Spec"])
        self._held = held_template(document["Spec"], self._image)
        self._found_held = is_held(document["Spec"])
        self._global = "Global" in (self._original.get("Mode") or {})
        tasks = await self._connected_watch().look()
        self._connected_requests().preexisting = frozenset(task.id for task in tasks)
        targets = [task for task in tasks if task.is_target]
        if not targets:
            raise ServiceNotFound(f"Swarm service {self.service} has no running or starting task")
        replicas = await asyncio.gather(*(self._replica(task, self._original["TaskTemplate"]) for task in targets))
        if self._forward is not None:
            # Looked at again by a takeover: a task not made from the rollout's own template (a
            # killed rollback's restore, say) is no finished replacement, whenever it was made.
            forward = definition_of(self._forward)
            replicas = [replace(replica, restored=task.definition != forward)
                        for replica, task in zip(replicas, targets, strict=True)]
        mode = "global" if self._global else "replicated"
        where = f"Swarm service {self.service} ({mode}, {len(replicas)} tasks on {len(self._nodes.nodes)} nodes)"
        return ServiceSnapshot(self.service, self.platform, tuple(replicas), description=where)

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        self._nodes.ensure_watched()
        forward = self._held or forward_template(self._original["TaskTemplate"], self._image)
        ref = str(forward.get("ContainerSpec", {}).get("Image", ""))
        await self._replicas.ensure_image(ref, self._pull)
        self._forward = forward

    # -- lock --------------------------------------------------------------------------------------

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0,
                           ) -> StaleLock | None:
        lock = self._lock = SwarmLock(self._connected_manager(), self.service)
        stale = await lock.acquire(holder, lease_s, replicas)
        if stale is not None:
            await self._let_inherited_settle()
        return stale

    async def _let_inherited_settle(self) -> None:
        """A dead rollout's last request goes on without it: Swarm's updater keeps making the tasks
        it asked for. Wait (within a replacement's time, stop grace included) until none is on its
        way, so the takeover sees them up (adopted) or failed, rather than discarding tasks that
        were about to come up and leaving their slots to the held updater."""
        def settled(tasks: list[SwarmTask]) -> bool | None:
            return True if not any(task.live and not task.up for task in tasks) else None

        limit = self._forward_budget() + 10.0 + self._stop_grace_s() + _GOSSIP_S
        with contextlib.suppress(PlatformError):  # still not settled: recovery sorts what it finds
            await self._connected_watch().wait_until(settled, "the dead rollout's tasks to settle", limit)

    async def wait_for_lock(self, timeout_s: float) -> None:
        await SwarmLock(self._connected_manager(), self.service).wait_released(timeout_s)

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
        # Keyed by the task that went, not the one asked for: Swarm picks the slot, so a restore of
        # X may replace Y; the controller then trades, and the target traded to X asks for X in
        # turn, which must get a task of its own (keyed by X, it got Y's and never came up).
        if replaced.id not in self._restored:
            [made] = await self._replace(
                [replaced], self._original["TaskTemplate"], order, forward=False, key=replaced.id)
            self._restored[made.replaces or replaced.id] = made
            return made
        return self._restored[replaced.id]

    async def _replace(self, targets: Sequence[Replica], template: Json, order: Order,
                       forward: bool, key: str | None = None) -> list[Replica]:
        requests = self._connected_requests()
        async with requests.lock:
            await requests.wait_until_slots_settle(forward)
            made: list[SwarmTask] = []
            while len(made) < len(targets):
                made += await requests.send(len(targets) - len(made), template, order, key)
            tasks = self._connected_watch().latest
            replicas = await asyncio.gather(*(self._replica(task, template) for task in made))
            replaced: list[Replica] = []
            for target, task, replica in zip(targets, made, replicas, strict=True):
                # Swarm picked the slot: the task that goes may be another target's (the
                # controller then trades the two, see rollout.request_acknowledged).
                displaced = displaced_by(task, tasks)
                went = displaced.id if displaced else target.id
                self._displaced.record(target.id, went)
                replaced.append(replace(replica, replaces=went, start_delay_s=self._start_delay_s(order)))
            return replaced

    async def retire(self, replica: Replica) -> None:
        """Swarm stops the displaced task itself once its replacement runs: wait for that. A swap
        left half done (a spec change by someone else cancelled the updater) is finished here."""
        task_id = self._displaced.task_to_stop(replica.id)

        def stopped_or_stalled(tasks: list[SwarmTask]) -> str | None:
            task = next((task for task in tasks if task.id == task_id), None)
            if task is None or (not task.live and task.ended):
                return "stopped"
            return "stalled" if task.live and task.slot in self._connected_requests().stalled(tasks) else None

        deadline = self._clock() + self._stop_grace_s() + _RETIRE_SLACK_S
        while True:
            left = max(deadline - self._clock(), 0.0)
            outcome = await self._connected_watch().wait_until(stopped_or_stalled, f"task {task_id[:12]} to stop",
                                                               left)
            if outcome == "stopped":
                return
            await self._connected_requests().finish_swap(task_id)

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
        await self._connected_requests().revert_all(tasks, original)

    async def _hand_back(self) -> None:
        """The user's update config and labels go back once every task runs the current spec: after
        this rollout's requests, and after a takeover that found the spec held by a killed rollout
        even when nothing was left to request (else its pacing, a 1-year delay, would stay)."""
        if self._requests is None or self._handed_back or (self._requests.sent == 0 and not self._found_held):
            return
        tasks = await self._connected_watch().look()
        document = await self._on_manager().inspect()
        current = definition_of(document["Spec"]["TaskTemplate"])
        dirty = dirty_slots(tasks, current)
        if dirty and current == definition_of(self._original["TaskTemplate"]):
            # Rolled back, but tasks of the rollout's spec are left: failed replacements Swarm keeps
            # restarting, or tasks Swarm made by itself from that spec (refilling the slots of a
            # lost node) while it was current. The way back covers them too.
            await self._connected_requests().revert_all(tasks, self._original["TaskTemplate"])
        elif dirty:
            return  # stopped half way: stay on hold, as a paused Swarm update would
        self._handed_back = True
        await self._on_manager().update(lambda spec: handed_back_spec(spec, self._original))

    # -- helpers -----------------------------------------------------------------------------------

    def _stop_grace_s(self) -> float:
        container = (self._original.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        return float(container.get("StopGracePeriod") or 10 * NS) / NS  # Swarm's default: 10 s

    def _start_delay_s(self, order: Order) -> float:
        """Stop-first: Swarm's agent waits for gossip (2 s), then stops the old task (up to its stop
        grace period), and only then starts the new one, acknowledged long before."""
        return self._stop_grace_s() + _GOSSIP_S if order is Order.STOP_FIRST else 0.0

    async def _replica(self, task: SwarmTask, template: Mapping[str, Any]) -> Replica:
        return await self._replicas.replica(task, template, spec=self._original, global_mode=self._global,
                                            down=self._connected_watch().down, manager=self._connected_manager())

    def _forward_budget(self) -> float:
        """The health budget of the replacements the rollout makes (``SwarmReplicas.replacement_budget``)."""
        return self._replicas.replacement_budget(self._forward or self._original.get("TaskTemplate") or {})

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

    def _connected_requests(self) -> SwarmRequests:
        if self._requests is None:
            raise EngineUnavailable(f"not connected to {engine_address(self._docker_host)}")
        return self._requests


