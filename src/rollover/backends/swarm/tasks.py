"""PURE: Swarm task lists as rollover reads them. No I/O, no clock.

rollover paces Swarm's own updater, one spec change per request (``spec.py`` computes them); the
manager's task list is what shows where the updater stands: which slots still run tasks of the
old definition, which replacements a request made, which failed, which task each one displaced.

A *slot* is where one replica lives: the slot number of a replicated service, the node of a
global one. During a start-first replacement a slot holds two live tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollover.backends.swarm.spec import health_budget
from rollover.core.model import Replica

# Task states in the order Swarm moves through them (api/types.proto).
_STATE_ORDER = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                "running", "complete", "shutdown", "failed", "rejected", "remove", "orphaned")
_RANK = {state: rank for rank, state in enumerate(_STATE_ORDER)}
# Placed on a node and on its way up, or up: what a snapshot counts as the service's replicas.
TARGET_STATES = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})


@dataclass(frozen=True)
class SwarmTask:
    id: str
    slot: str  # slot number (replicated) or node id (global): tasks of one slot replace each other
    node_id: str
    desired: str
    state: str
    created: str  # CreatedAt with its fraction padded to nanoseconds, so strings sort by time
    definition: tuple[str, int]  # (image reference, ForceUpdate): which spec the task was made from
    container_id: str
    error: str
    published: tuple[tuple[str, int], ...]  # ("8080/tcp", host port) for host-mode ports

    @property
    def live(self) -> bool:
        """Meant to run: Swarm has not asked it to stop (it may still be starting, or failing)."""
        return _RANK.get(self.desired, 99) <= _RANK["running"]

    @property
    def up(self) -> bool:
        # Swarm reports a task with a healthcheck as running only once the check passed.
        return self.live and self.state == "running"

    @property
    def ended(self) -> bool:
        return _RANK.get(self.state, 0) > _RANK["running"]

    @property
    def is_target(self) -> bool:
        return self.desired == "running" and self.state in TARGET_STATES


def parse_task(raw: Mapping[str, Any]) -> SwarmTask:
    status = raw.get("Status") or {}
    ports = (status.get("PortStatus") or {}).get("Ports") or []
    published = sorted({
        (f"{port.get('TargetPort')}/{port.get('Protocol', 'tcp')}", int(port["PublishedPort"]))
        for port in ports if port.get("PublishMode") == "host" and port.get("PublishedPort")
    })
    slot = raw.get("Slot") or 0
    return SwarmTask(
        id=str(raw["ID"]),
        slot=str(slot) if slot else str(raw.get("NodeID", "")),
        node_id=str(raw.get("NodeID", "")),
        desired=str(raw.get("DesiredState", "")),
        state=str(status.get("State", "")),
        created=sortable_time(str(raw.get("CreatedAt", ""))),
        definition=definition_of(raw.get("Spec") or {}),
        container_id=str((status.get("ContainerStatus") or {}).get("ContainerID", "")),
        error=str(status.get("Err") or status.get("Message") or status.get("State") or ""),
        published=tuple(published),
    )


def lost_with_node(task: SwarmTask, node: str) -> SwarmTask:
    """A task on a node the manager reports down, as rollover must count it: ended, not live.

    The manager keeps the last state the node reported ('running', say, with desired 'shutdown'
    once Swarm rescheduled the slot elsewhere) until the node comes back, which may be never: such
    a task would never end and a wait for it would run into its timeout. A replicated service's
    slot is refilled on a surviving node; a global service has no task there until the node returns.
    """
    if task.ended:
        return task
    return replace(task, desired="shutdown", state="orphaned", error=f"its node {node} is down")


def sortable_time(stamp: str) -> str:
    """'2026-01-02T03:04:05.12Z' -> '2026-01-02T03:04:05.120000000Z' (Go trims trailing zeros)."""
    head, dot, fraction = stamp.rstrip("Z").partition(".")
    return f"{head}.{(fraction if dot else '').ljust(9, '0')[:9]}Z"


def epoch_of(sortable: str) -> float | None:
    """'2026-01-02T03:04:05.123456789Z' -> seconds since the epoch (to the microsecond)."""
    try:
        return datetime.fromisoformat(sortable[:26] + "+00:00").timestamp()
    except ValueError:
        return None


def definition_of(task_spec: Mapping[str, Any]) -> tuple[str, int]:
    """What tells one rollout's tasks from another's: rollover changes both on every rollout."""
    image = str((task_spec.get("ContainerSpec") or {}).get("Image", ""))
    return image, int(task_spec.get("ForceUpdate") or 0)


def slots(tasks: Iterable[SwarmTask]) -> dict[str, list[SwarmTask]]:
    """Tasks grouped by slot, oldest first."""
    grouped: dict[str, list[SwarmTask]] = {}
    for task in sorted(tasks, key=lambda task: task.created):
        grouped.setdefault(task.slot, []).append(task)
    return grouped


def start_first_in_flight(tasks: Iterable[SwarmTask]) -> list[str]:
    """Slots holding live tasks of two definitions: a start-first replacement whose old task still runs.

    A new request must wait for these: Swarm's next updater run would treat such a slot as its
    own work and shut the old task down at once, before the replacement is up. Two live tasks of
    one definition are no such pair: Swarm's restart supervisor and its updater both refilled a slot
    whose task someone removed (measured on Engine 20.10); there is no old task to protect.
    """
    return [slot for slot, group in slots(tasks).items()
            if sum(task.live for task in group) > 1 and len({task.definition for task in group if task.live}) > 1]


def stalled_swaps(tasks: Iterable[SwarmTask]) -> list[str]:
    """Start-first slots whose replacement is up while the old task still runs.

    Swarm's updater shuts the old task down within milliseconds of its replacement running, so a
    pair that stays is a swap nobody will finish: the updater that made it was cancelled by a
    spec change from someone else (``docker service scale`` mid-rollout restarts the updater, which
    then works on other slots). Such a slot is no longer worth waiting for, and the next updater
    run that reaches it only shuts the old task down (swarmkit's ``useExistingTask``).
    """
    grouped = slots(tasks)
    return [slot for slot in start_first_in_flight(tasks) if [task for task in grouped[slot] if task.live][-1].up]


def unrequested_replacements(tasks: Iterable[SwarmTask], definition: tuple[str, int],
                             known: AbstractSet[str]) -> list[SwarmTask]:
    """Live tasks of ``definition`` that Swarm made by itself in place of a task of another
    definition, oldest first: ``known`` holds the tasks that were there when the rollout began and
    those its requests made. Swarm makes them when its updater runs outside rollover's pacing (a
    spec change by someone else restarts it on random dirty slots) or when it refills the slot of
    a task someone removed. Each stands for one target replaced. A task in a slot of its own (a
    scale-up) is an extra, and Swarm's restart of a failed replacement replaces a task of its own
    definition: neither counts.
    """
    found = []
    for group in slots(tasks).values():
        for task in group:
            if task.id in known or not task.live or task.definition != definition:
                continue
            displaced = displaced_by(task, group)
            if displaced is not None and displaced.definition != definition:
                found.append(task)
    return sorted(found, key=lambda task: task.created)


def failing_slots(tasks: Iterable[SwarmTask]) -> dict[str, str]:
    """Slots in flight whose replacement failed, with the failure; Swarm restarts it forever."""
    failing: dict[str, str] = {}
    for slot, group in slots(tasks).items():
        live = [task for task in group if task.live]
        if len(live) < 2:
            continue
        oldest_live = live[0].created
        failed = [task for task in group if task.created > oldest_live and task.state in FAILED_STATES]
        if failed:
            failing[slot] = failed[-1].error
    return failing


def replacements_made(tasks: Iterable[SwarmTask], known: AbstractSet[str], definition: tuple[str, int],
                      dirty: AbstractSet[str]) -> list[SwarmTask]:
    """The tasks a request created: new since ``known``, made from ``definition``, in a slot that
    was dirty. One per slot, the first: Swarm restarts a failed one in the same slot under a new
    id, and that restart is not a second replacement."""
    made: dict[str, SwarmTask] = {}
    for task in sorted(tasks, key=lambda task: task.created):
        if task.id not in known and task.definition == definition and task.slot in dirty:
            made.setdefault(task.slot, task)
    return sorted(made.values(), key=lambda task: task.created)


def displaced_by(replacement: SwarmTask, tasks: Iterable[SwarmTask]) -> SwarmTask | None:
    """The task a replacement took the slot of: the newest one of its slot created before it."""
    before = [task for task in slots(tasks).get(replacement.slot, []) if task.created < replacement.created]
    return before[-1] if before else None


class Displacements:
    """Which task went for each target asked for: Swarm picks the slot, so a request for target A
    may replace task B (A keeps waiting; the controller trades the two). Retire waits for the task
    that actually went.

    Example: a request for A displaces B (A -> B, and B's own retire waits for B). A later request
    for C displaces A: A's old entry (A -> B) is dropped, since A is now the one going and its
    retire must wait for A, not for B, which stopped long ago.

    A task that went is its own to wait for, even when it was asked for itself and another went
    for it: a request for A, B, C that replaced B, D, C records A -> B and B -> D, and the
    controller retires D, B and C (the targets that went, see rollout.request_acknowledged).
    """

    def __init__(self) -> None:
        self._went: dict[str, str] = {}  # target id -> id of the task Swarm replaced for it

    def record(self, target_id: str, displaced_id: str) -> None:
        self._went.pop(displaced_id, None)
        self._went[target_id] = displaced_id

    def task_to_stop(self, replica_id: str) -> str:
        if replica_id in self._went.values():
            return replica_id
        return self._went.get(replica_id, replica_id)


def removal_reason(task: SwarmTask, tasks: Iterable[SwarmTask]) -> str:
    """Why Swarm deleted a task: with its slot (a scale-down), or as one too many in a slot that
    another task serves (a lost node's slot refilled by the orchestrator while the updater
    replaced it too)."""
    if any(other.slot == task.slot and other.live and other.id != task.id for other in tasks):
        return "removed by Swarm: another task serves its slot"
    return "removed by a scale-down"


def dirty_slots(tasks: Iterable[SwarmTask], definition: tuple[str, int]) -> list[str]:
    """Slots whose live tasks are not all made from ``definition``: work left for the updater."""
    return [slot for slot, group in slots(tasks).items()
            if any(task.live and task.definition != definition for task in group)]


def replica_name(service: str, task: SwarmTask, global_mode: bool) -> str:
    """The name `docker service ps` shows: web.3 (replicated) or web.<node id> (global)."""
    return f"{service}.{task.node_id if global_mode else task.slot}"


@dataclass(frozen=True)
class TaskContext:
    """What the task list does not say, from the spec, the nodes and the task's container."""

    service: str
    global_mode: bool
    fixed_ports: tuple[str, ...] = ()
    node_addresses: Mapping[str, str] | None = None  # node id -> address
    image_id: str = ""  # the image the container runs, when the node could be asked
    healthcheck: Mapping[str, Any] | None = None  # the container's (or image's) effective check


def replica_from_task(task: SwarmTask, context: TaskContext) -> Replica:
    ref, _, digest = task.definition[0].partition("@")
    address = (context.node_addresses or {}).get(task.node_id, "")
    details: list[tuple[str, str]] = [("node", task.node_id), ("slot", task.slot)]
    details += [(f"published.{port}", f"{address}:{host_port}") for port, host_port in task.published]
    budget = health_budget(context.healthcheck)
    return Replica(
        id=task.id, name=replica_name(context.service, task, context.global_mode),
        image=context.image_id or digest, image_ref=ref, running=task.state == "running",
        has_healthcheck=budget is not None, fixed_host_ports=context.fixed_ports,
        health_budget_s=budget, created_at=epoch_of(task.created), details=tuple(details),
    )
