"""The requests that pace Swarm's updater: each one a spec change that replaces ``n`` slots, then holds.

Why rollover drives Swarm this way, and what follows from it, is the Swarm backend's design note
(``swarm``'s module docstring). Here: one request at a time (``lock``), each waited for until
Swarm has made its tasks (a keyed one, a restore's, is sent once even when an outage cut its first
call short); a start-first swap left half done is finished, and the way back to the original spec
is one request too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rollover.backends.swarm.service import SwarmService
from rollover.backends.swarm.spec import Json, request_spec
from rollover.backends.swarm.tasks import (
    SwarmTask,
    definition_of,
    dirty_slots,
    failing_slots,
    replacements_made,
    slots,
    stalled_swaps,
    start_first_in_flight,
    unrequested_replacements,
)
from rollover.backends.swarm.watch import SwarmWatch
from rollover.core.model import Order
from rollover.errors import PlatformError, TargetRemoved

# Swarm creates a requested task within milliseconds; this much is a broken manager.
ACK_LIMIT_S = 30.0
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


class SwarmRequests:
    """The spec changes one rollout sends to ``service``, and the tasks they make (seen by ``watch``)."""

    def __init__(self, watch: SwarmWatch, service: SwarmService, clock: Callable[[], float], *,
                 replacement_timeout_s: float | None, forward_budget: Callable[[], float]) -> None:
        """``replacement_timeout_s`` (the controller's timeout) bounds how long a start-first request
        waits for the one in flight before it; ``forward_budget``: the replacements' health budget."""
        self._watch = watch
        self._service = service
        self._clock = clock
        self._replacement_timeout_s = replacement_timeout_s
        self._forward_budget = forward_budget
        self.sent = 0  # spec changes sent (each labelled with its number)
        self.lock = asyncio.Lock()  # one request at a time
        self.preexisting: frozenset[str] = frozenset()  # task ids listed when the snapshot was taken
        self._run = uuid.uuid4().hex[:8]  # tells this rollout's requests from a killed one's
        self._up_since: dict[str, float] = {}  # replacement task id -> when a look first showed it up
        self._pending: dict[str, _Request] = {}  # restore key -> its request, until its tasks are seen

    async def wait_until_slots_settle(self, forward: bool) -> None:
        """Wait while a healthy start-first replacement is in flight (see ``swarm``'s module docstring);
        not for a swap left half done (``stalled_swaps``): a request may land there and finish it."""
        def settled(tasks: list[SwarmTask]) -> bool | None:
            failing = failing_slots(tasks)
            if forward and failing:
                slot, error = next(iter(failing.items()))
                raise PlatformError(f"the replacement in slot {slot} failed ({error}); Swarm would put it in"
                                    " place of the task it was to replace, so no further task is replaced")
            stalled = self.stalled(tasks)
            busy = [slot for slot in start_first_in_flight(tasks) if slot not in failing and slot not in stalled]
            return True if not busy else None

        limit = self._replacement_timeout_s or (self._forward_budget() + 10.0)
        await self._watch.wait_until(settled, "the start-first replacement in flight", limit)

    def stalled(self, tasks: list[SwarmTask]) -> set[str]:
        """Slots of ``stalled_swaps`` whose replacement has been up for ``_STALL_S`` or more."""
        now, grouped, stalled = self._clock(), slots(tasks), set()
        for slot in stalled_swaps(tasks):
            replacement = [task for task in grouped[slot] if task.live][-1]
            if now - self._up_since.setdefault(replacement.id, now) >= _STALL_S:
                stalled.add(slot)
        return stalled

    async def send(self, count: int, template: Json, order: Order, key: str | None = None) -> list[SwarmTask]:
        """One spec change: Swarm replaces up to ``count`` dirty slots, then holds. Returns the new
        tasks; fewer when a worker of Swarm's merely cleaned a slot with a failed replacement.
        Replacements Swarm made by itself (``unrequested_replacements``) are taken first: for those,
        no spec change goes out.

        With a ``key``, the request is recorded before it goes out, and a call again with that key
        (after an outage cut the first short) sends it only if the manager's spec does not carry
        its label yet; either way it then waits for what the request makes.
        """
        watch = self._watch
        request = self._pending.get(key) if key is not None else None
        retried = request is not None
        if request is None:
            before = await watch.look()
            definition = definition_of(template)
            found = unrequested_replacements(before, definition, self.preexisting | watch.replacements)[:count]
            if found:
                watch.replacements.update(task.id for task in found)
                return found
            dirty = frozenset(dirty_slots(before, definition))
            if not dirty and watch.slots_removed:
                raise TargetRemoved(f"no task of Swarm service {self._service.name} is left to replace: a scale-down"
                                    f" removed {len(watch.slots_removed)} of its tasks meanwhile")
            if not dirty:
                raise PlatformError(f"no task of Swarm service {self._service.name} is left to replace")
            self.sent += 1
            request = _Request(label=self._label(), count=min(count, len(dirty)), definition=definition,
                               dirty=dirty, crowded=frozenset(start_first_in_flight(before)) & dirty,
                               known=frozenset(task.id for task in before))
            if key is not None:
                self._pending[key] = request
        if not (retried and await self._service.carries(request.label)):  # a fresh request has not gone out
            await self._service.update(
                lambda spec: request_spec(spec, template, request.count, order, request.label))

        def replaced(tasks: list[SwarmTask]) -> list[SwarmTask] | None:
            fresh = replacements_made(tasks, request.known, request.definition, request.dirty)
            cleaned = request.crowded - set(start_first_in_flight(tasks)) - {task.slot for task in fresh}
            return fresh[:request.count] if len(fresh) + len(cleaned) >= request.count else None

        made = await watch.wait_until(replaced, f"Swarm to start {request.count} replacement(s)", ACK_LIMIT_S)
        if key is not None:
            del self._pending[key]
        watch.replacements.update(task.id for task in made)
        return made

    async def finish_swap(self, task_id: str) -> None:
        """Start Swarm's updater again on the current spec, one slot: in the stalled slot it only
        shuts the old task down. Swarm picks the slot, though: it may replace another dirty slot
        first (that replacement is taken by the next request, see ``unrequested_replacements``),
        and the caller tries again once it is up."""
        async with self.lock:
            await self.wait_until_slots_settle(forward=False)
            tasks = await self._watch.look()
            task = next((task for task in tasks if task.id == task_id), None)
            if task is None or not task.live or task.slot not in self.stalled(tasks):
                return
            template = (await self._service.inspect())["Spec"]["TaskTemplate"]
            self.sent += 1
            label = self._label()
            await self._service.update(
                lambda spec: request_spec(spec, template, 1, Order.START_FIRST, label))
            known = {task.id for task in tasks}

            def acted(now: list[SwarmTask]) -> bool | None:
                finished = not any(task.id == task_id and task.live for task in now)
                return True if finished or any(task.id not in known for task in now) else None

            await self._watch.wait_until(acted, "Swarm to act on the spec change", ACK_LIMIT_S)

    async def revert_all(self, tasks: list[SwarmTask], original: Json) -> None:
        """Back to the ``original`` task template in every slot that runs another."""
        dirty = dirty_slots(tasks, definition_of(original))
        if not dirty:
            return
        self.sent += 1
        await self._service.update(
            lambda spec: request_spec(spec, original, len(dirty), Order.START_FIRST, self._label()))
        await self._watch.wait_until(
            lambda now: True if not dirty_slots(now, definition_of(original)) else None,
            "Swarm to go back to the original spec", ACK_LIMIT_S + self._forward_budget())

    def _label(self) -> str:
        return f"{self._run}-{self.sent}"
