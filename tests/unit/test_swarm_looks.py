"""Looks at a Swarm manager's task list that overlap: the manager may answer them in either order.

Each look runs in a thread on its own connection, so of two looks taken back to back the second
may be sent (and answered from the manager's state) first. The manager here is a stand-in whose
answers are held and released in a chosen order: what is pinned is how the watch reads two lists
whose order it cannot know, which no real manager can be made to produce on demand.
(Seen in CI: a replacement just made was reported "removed by Swarm: another task serves its slot"
from such an older list, and the rollout ended with three replicas not redeployed.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from rollover.backends.swarm.watch import SwarmWatch

SERVICE_ID = "svc0000000001"


def task(task_id: str, *, slot: int, desired: str, state: str) -> dict[str, Any]:
    return {"ID": task_id, "ServiceID": SERVICE_ID, "Slot": slot, "NodeID": "node1", "DesiredState": desired,
            "Status": {"State": state}, "CreatedAt": f"2026-12-07T01:00:0{len(task_id) % 10}Z", "Spec": {}}


OLD_RUNNING = task("old1", slot=1, desired="running", state="running")
OLD_STOPPING = task("old1", slot=1, desired="shutdown", state="running")
NEW_STARTING = task("new1", slot=1, desired="running", state="starting")


class HeldManager:
    """Answers each task list once the test releases it; the lists are given in the order asked."""

    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self._answers = list(answers)
        self.asked: list[asyncio.Event] = []

    async def inspect_service(self, name: str) -> dict[str, Any]:
        return {"ID": SERVICE_ID}

    async def list_tasks(self, service_id: str) -> list[dict[str, Any]]:
        release = asyncio.Event()
        self.asked.append(release)
        answer = self._answers.pop(0)
        await release.wait()
        return answer


async def _two_overlapping_looks(manager: HeldManager) -> SwarmWatch:
    watch = SwarmWatch(manager, {}, "web", asyncio.get_running_loop().time)  # type: ignore[arg-type]
    baseline = asyncio.create_task(watch.look())
    await asyncio.sleep(0)
    manager.asked[0].set()
    await baseline
    first, second = asyncio.create_task(watch.look()), asyncio.create_task(watch.look())
    while len(manager.asked) < 3:
        await asyncio.sleep(0)
    manager.asked[1].set()  # the look asked first is answered first, with the newer state...
    await first
    manager.asked[2].set()  # ...and the one asked second brings the older state, later
    await second
    return watch


def test_a_list_older_than_the_last_one_reported_does_not_make_a_new_task_vanish() -> None:
    # Baseline: slot 1 runs old1. Swarm replaces it: the first look sees new1 beside old1 (stopping);
    # the second, answered from the state before the request, has old1 alone.
    manager = HeldManager([OLD_RUNNING], [OLD_STOPPING, NEW_STARTING], [OLD_RUNNING])
    watch = asyncio.run(_two_overlapping_looks(manager))
    assert watch.slots_removed == set()


def test_a_list_asked_for_after_the_last_one_was_answered_tells_a_task_vanished() -> None:
    # The same lists, one after the other: new1 is in the second and not in the third, which was
    # asked for once the second was answered, so it did go (Swarm removed it with its slot's extra).
    async def one_after_the_other() -> SwarmWatch:
        manager = HeldManager([OLD_RUNNING], [OLD_STOPPING, NEW_STARTING], [OLD_RUNNING])
        watch = SwarmWatch(manager, {}, "web", asyncio.get_running_loop().time)  # type: ignore[arg-type]
        for _ in range(3):
            look = asyncio.create_task(watch.look())
            while not manager.asked or manager.asked[-1].is_set():
                await asyncio.sleep(0)
            manager.asked[-1].set()
            await look
        return watch

    assert asyncio.run(one_after_the_other()).slots_removed == {"new1"}


def test_the_latest_list_is_not_replaced_by_one_that_may_be_older() -> None:
    # The requests read the slot a replacement took from ``latest``: after the overlapping looks
    # above it must still be the list with new1 in it.
    manager = HeldManager([OLD_RUNNING], [OLD_STOPPING, NEW_STARTING], [OLD_RUNNING])
    watch = asyncio.run(_two_overlapping_looks(manager))
    assert {task.id for task in watch.latest} == {"old1", "new1"}
