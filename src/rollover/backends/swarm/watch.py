"""Watching one Swarm service: event streams from every node, task lists from the manager.

The manager has no task events: a task that comes up on another node shows on the manager only
as a changed task list. Container events are only visible on the daemon of the node that runs
the container. So the watch subscribes to every node it can reach (containers of this service)
and to the manager (service and node events), and turns them into replica events two ways:

- directly, from container events: healthy (or started, without a healthcheck) is up; died,
  unhealthy, removed is down. This is the fast path, milliseconds after the node saw it.
- from a *look* at the manager's task list, taken whenever an event arrives: tasks that reached
  running or ended since the last look. This catches what has no container event: a task Swarm
  rejected before creating a container, a node that went down, an update Swarm paused.

Looks are never taken on a timer alone. Each event (or our own spec change) triggers one, and a
waiter looks again a few times shortly after (``FOLLOW_UPS``) because the manager learns of a
change a few milliseconds after the node's event; then it waits for the next event.

When a stream breaks, the events iterator raises; the next ``events()`` subscribes again.

A node the manager reports down (a node event says so, or its daemon cannot be subscribed to and
the manager confirms it) is left out: its tasks count as ended (``lost_with_node``), and the
subscriptions go on without it. Until the manager notices (about 15 s with Swarm's default 5 s
heartbeat), the node is merely unreachable: ``events()`` fails (the controller retries it), and a
waiter keeps looking at the manager's list every ``RESUBSCRIBE_S`` meanwhile, since no event can
wake it reliably.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rollover.backends.docker.events import EventFeed, action_of, labels_of_event
from rollover.backends.swarm.tasks import SwarmTask, lost_with_node, parse_task, removal_reason
from rollover.core.model import ReplicaDown, ReplicaEvent, ReplicaUp
from rollover.engine import Engine
from rollover.errors import EngineUnavailable, PlatformError, RolloverError

T = TypeVar("T")

FOLLOW_UPS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
RESUBSCRIBE_S = 1.0  # while a node cannot be subscribed to: look again and retry this often
_CONTAINER_ACTIONS = ["create", "start", "die", "destroy", "health_status"]
_TASK_LABEL = "com.docker.swarm.task.id"
_SERVICE_LABEL = "com.docker.swarm.service.name"
# Update states in which Swarm stopped rolling by itself: in-flight replacements count as failed.
_SWARM_STOPPED = frozenset({"paused", "rollback_started", "rollback_paused", "rollback_completed"})


@dataclass
class _Stream:
    feed: EventFeed
    engine: Engine
    reader: asyncio.Task[None] | None = None
    ended: bool = False


@dataclass
class _Reports:
    """What was last said about each task, so that every task is reported up once and down once."""

    said: dict[str, str] = field(default_factory=dict)  # task id -> "up" | "down" | "gone"
    slots_removed: set[str] = field(default_factory=set)  # tasks gone with their slot (a scale-down)
    queue: asyncio.Queue[ReplicaEvent | RolloverError] | None = None  # set once someone listens

    def up(self, task_id: str, at: float) -> None:
        if task_id not in self.said:
            self.said[task_id] = "up"
            self._emit(ReplicaUp(task_id, at))

    def down(self, task_id: str, at: float, reason: str, *, gone: bool = False) -> None:
        """``gone`` only for a task whose slot Swarm removed (a scale-down): the service has one
        replica less for good. A task that merely ended is not gone, though it never runs again:
        Swarm refills its slot, and which slot a request replaces is Swarm's choice (a target is a
        count). Said down before, a task said gone later is reported again."""
        said = self.said.get(task_id)
        if said != "gone" and (gone or said != "down"):
            self.said[task_id] = "gone" if gone else "down"
            if gone:
                self.slots_removed.add(task_id)
            self._emit(ReplicaDown(task_id, at, reason, gone=gone, slot_removed=gone))

    def broken(self, error: RolloverError) -> None:
        """The watch cannot go on: whoever iterates the events gets the error."""
        self._emit(error)

    def _emit(self, event: ReplicaEvent | RolloverError) -> None:
        if self.queue is not None:
            self.queue.put_nowait(event)


class SwarmWatch:
    """Event subscriptions and task looks for one service; see the module docstring."""

    def __init__(self, manager: Engine, nodes: dict[str, Engine], service: str,
                 clock: Callable[[], float], *, hostnames: Mapping[str, str] | None = None,
                 down: Iterable[str] = ()) -> None:
        """``nodes``: node id -> engine of that node (the manager's own node included); ``down``:
        the ids of nodes the manager reported down when the backend connected."""
        self._manager = manager
        self._nodes = nodes
        self._hostnames = dict(hostnames or {})
        self.down: set[str] = set(down)
        self._service = service
        self._clock = clock
        self._streams: list[_Stream] = []
        self._reports = _Reports()
        self._baseline_taken = False
        self._triggers = 0
        self._changed = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()
        self._service_id: str | None = None
        self.replacements: set[str] = set()  # tasks our requests created: failed if Swarm stops
        self.latest: list[SwarmTask] = []
        self._last_reported: list[SwarmTask] = []
        self._moments = itertools.count()  # orders every look's asking and answering
        self._last_answered = -1  # the moment the manager answered the look _last_reported holds
        self._latest_answered = -1  # the same for ``latest``

    @property
    def slots_removed(self) -> set[str]:
        """The tasks reported gone with their slot (a scale-down) so far."""
        return self._reports.slots_removed

    def events(self) -> AsyncIterator[ReplicaEvent]:
        """A fresh iterator; subscribes (again, after a broken stream) before it returns."""
        self.subscribe()
        self._reports.queue = asyncio.Queue()
        return self._replica_events(self._reports.queue)

    def subscribe(self) -> None:
        """Every node's containers of the service, and the manager's service and node events.

        Subscribing blocks until each daemon answered (milliseconds), so the streams are live on
        return: nothing that happens afterwards is missed. A no-op while all streams are open.
        """
        if self._streams and not any(stream.ended for stream in self._streams):
            return
        self._close_streams()
        container_filters = {"type": ["container"], "event": _CONTAINER_ACTIONS,
                             "label": [f"{_SERVICE_LABEL}={self._service}"]}
        opened: list[_Stream] = []
        try:
            opened.append(self._open(self._manager, {"type": ["service", "node"]}))
            for node_id, engine in list(self._nodes.items()):
                if node_id in self.down:
                    continue
                try:
                    opened.append(self._open(engine, container_filters))
                except EngineUnavailable:
                    if not self._confirmed_down(node_id):
                        raise
        except RolloverError:
            for stream in opened:  # all or none: a later call subscribes afresh
                stream.feed.close()
            raise
        self._streams = opened
        for stream in opened:
            stream.reader = asyncio.create_task(self._read(stream))

    def _open(self, engine: Engine, filters: dict[str, list[str]]) -> _Stream:
        return _Stream(EventFeed(engine.open_events(filters), self._clock), engine)

    def _confirmed_down(self, node_id: str) -> bool:
        """Whether the manager reports the node down (blocking, like the subscriptions: it is asked
        only when the node's daemon cannot be reached)."""
        state = self._manager.node_state(node_id, self._hostname(node_id))
        if state == "down":
            self.down.add(node_id)
        return state == "down"

    def _hostname(self, node_id: str) -> str:
        return self._hostnames.get(node_id, node_id[:12])

    def _try_subscribe(self) -> bool:
        """Subscribe if possible: a node that is unreachable but not yet reported down stops it."""
        try:
            self.subscribe()
        except EngineUnavailable:
            return False
        return True

    async def _replica_events(self, queue: asyncio.Queue[ReplicaEvent | RolloverError],
                              ) -> AsyncIterator[ReplicaEvent]:
        while True:
            item = await queue.get()
            if isinstance(item, RolloverError):
                raise item
            yield item

    # -- looks -------------------------------------------------------------------------------------

    async def look(self, report: bool = True) -> list[SwarmTask]:
        """The manager's task list of the service now; reports what changed since the last look."""
        if self._service_id is None:
            found = await self._manager.inspect_service(self._service)
            self._service_id = str(found["ID"])
        asked = next(self._moments)
        raw = await self._manager.list_tasks(self._service_id)
        answered = next(self._moments)
        tasks = [self._as_seen(parse_task(item)) for item in raw if item.get("ServiceID") == self._service_id]
        if report:
            # Looks run in threads, each on its own connection: of two that overlap, the manager may
            # answer the one asked for second from the older state (its thread sent it first). Only
            # a list asked for after the last reported one was answered is surely newer, and only
            # such a list can tell that a task vanished: an older one lacks the tasks made since,
            # and would report a replacement just made as removed. Worked example, in the order of
            # ``_moments``: look A asked at 1 and answered at 3, look B asked at 2 -> B may be older
            # than A: it reports ups and downs, not vanishings; look C asked at 4 can.
            newer = asked >= self._last_answered
            self._report_changes(tasks, vanished=self._last_reported if newer else [])
            if newer:
                self._last_reported, self._last_answered = tasks, answered
        # The same rule for ``latest``: a list that may be older than the one it holds (the
        # requests read the slot a replacement took from it) does not replace it.
        if asked >= self._latest_answered:
            self.latest, self._latest_answered = tasks, answered
        return tasks

    def _as_seen(self, task: SwarmTask) -> SwarmTask:
        return lost_with_node(task, self._hostname(task.node_id)) if task.node_id in self.down else task

    def _report_changes(self, tasks: list[SwarmTask], vanished: list[SwarmTask]) -> None:
        """``vanished``: an earlier list, whose live tasks missing from ``tasks`` are gone."""
        now = self._clock()
        # Swarm deletes a live task only with its slot (a scale-down; its desired state is 'remove'
        # meanwhile, which a look may never catch): one that vanished from the list is gone.
        listed = {task.id for task in tasks}
        for task in vanished:
            if task.id not in listed and (task.live or task.desired == "remove"):
                self._reports.down(task.id, now, removal_reason(task, tasks), gone=True)
        for task in tasks:
            if not self._baseline_taken:
                # What was up or over before anyone listened is not news.
                if task.up or task.ended:
                    self._reports.said[task.id] = "up" if task.up else "down"
            elif task.desired == "remove":  # its slot is no more: a scale-down
                self._reports.down(task.id, now, removal_reason(task, tasks), gone=True)
            elif task.up:
                self._reports.up(task.id, now)
            elif task.ended:  # a task that ended before the baseline was marked down there
                self._reports.down(task.id, now, task.error)
        self._baseline_taken = True

    async def wait_until(self, check: Callable[[list[SwarmTask]], T | None], what: str,
                         limit_s: float | None = None) -> T:
        """Look until ``check`` returns something: after each event, and a few times shortly after."""
        loop = asyncio.get_running_loop()
        deadline = None if limit_s is None else loop.time() + limit_s
        follow_ups = iter(FOLLOW_UPS)
        while True:
            # Waiting is driven by events: streams must bring them (a no-op while they are open).
            subscribed = self._try_subscribe()
            seen = self._triggers
            found = check(await self.look())
            if found is not None:
                return found
            pause = next(follow_ups, None)
            if not subscribed:  # a node is unreachable: look again soon, and try the streams again
                pause = RESUBSCRIBE_S if pause is None else min(pause, RESUBSCRIBE_S)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise PlatformError(f"waited {limit_s:g}s for {what}")
                pause = left if pause is None else min(pause, left)
            if await self._next_trigger(seen, pause):
                follow_ups = iter(FOLLOW_UPS)  # fresh news: look closely again

    async def _next_trigger(self, seen: int, timeout: float | None) -> bool:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._triggers != seen), timeout)
        return self._triggers != seen

    async def _trigger(self) -> None:
        async with self._changed:
            self._triggers += 1
            self._changed.notify_all()

    # -- events ------------------------------------------------------------------------------------

    async def _read(self, stream: _Stream) -> None:
        try:
            while (item := await stream.feed.next()) is not None:
                at, raw = item
                if isinstance(raw, dict):  # nothing here tells its feed any event
                    await self._on_event(raw, at, stream.engine)
        except PlatformError as exc:
            stream.ended = True  # the next events() subscribes again
            self._reports.broken(PlatformError(f"{exc} ({stream.engine.address})"))

    async def _on_event(self, raw: dict[str, Any], at: float, engine: Engine) -> None:
        kind, action, attributes = raw.get("Type"), action_of(raw), labels_of_event(raw)
        actor = str((raw.get("Actor") or {}).get("ID", ""))
        if kind == "container":
            self._on_container(action, attributes, at, engine, actor)
        elif kind == "node":
            # Swarm's node events carry a state change as state.old/state.new (moby daemon/events.go).
            if attributes.get("state.new") == "down":
                self.down.add(actor)
            elif attributes.get("state.new") == "ready":
                self.down.discard(actor)
        elif kind == "service" and attributes.get("name") == self._service:
            state = attributes.get("updatestate.new", "")
            if state in _SWARM_STOPPED or action == "remove":
                self._spawn(self._swarm_stopped(state or action, at))
        await self._trigger()

    def _on_container(self, action: str, attributes: dict[str, str], at: float, engine: Engine,
                      container_id: str) -> None:
        task_id = attributes.get(_TASK_LABEL, "")
        if not task_id:
            return
        if action == "health_status: healthy":
            self._reports.up(task_id, at)
        elif action == "health_status: unhealthy":
            self._reports.down(task_id, at, "unhealthy")
        elif action == "start":
            self._spawn(self._up_unless_checked(engine, container_id, task_id, at))
        elif action == "die":
            self._reports.down(task_id, at, f"exited with code {attributes.get('exitCode', '?')}")
        elif action == "destroy":
            self._reports.down(task_id, at, "container removed")

    async def _up_unless_checked(self, engine: Engine, container_id: str, task_id: str, at: float) -> None:
        """A started container is up now only if it has no healthcheck (else: when healthy)."""
        found = await engine.inspect_container(container_id)
        check = ((found or {}).get("Config") or {}).get("Healthcheck") or {}
        if found is not None and list(check.get("Test") or ["NONE"])[:1] == ["NONE"]:
            self._reports.up(task_id, at)

    async def _swarm_stopped(self, state: str, at: float) -> None:
        """Swarm paused or rolled back the update itself: our replacements not up have failed."""
        service = await self._manager.inspect_service(self._service)
        message = ((service.get("UpdateStatus") or {}).get("Message")) or state
        for task in await self.look(report=False):  # Swarm's reason first, the task's own with it
            if task.id in self.replacements and not task.up:
                own = f" ({task.error})" if task.ended else ""
                self._reports.down(task.id, at, f"Swarm {state.replace('_', ' ')}: {message}{own}")
        await self.look()

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, RolloverError):
            self._reports.broken(error)
        elif error is not None:
            self._reports.broken(PlatformError(f"watching the service failed: {error!r}"))

    def _close_streams(self) -> None:
        for stream in self._streams:
            stream.feed.close()
            if stream.reader is not None:
                stream.reader.cancel()
        self._streams.clear()

    async def close(self) -> None:
        readers = [stream.reader for stream in self._streams if stream.reader]
        self._close_streams()
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*readers, *background, return_exceptions=True)

