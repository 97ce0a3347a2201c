"""The healthcheck runs rollover makes on Podman (health_runs.py): when they end and what they
report. The engine here is a script of answers: Podman cannot be made to refuse a check of a
running container on cue (tests/podman runs the real thing end to end)."""

from __future__ import annotations

import asyncio
from typing import Any

from rollover.backends.docker.health_runs import HealthRuns
from rollover.core.model import ReplicaDown, ReplicaEvent, ReplicaUp

CHECKED = {"Config": {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000}}}  # 1 ms


class ScriptedEngine:
    """Answers each check with the next status; inspect says whether it still runs."""

    def __init__(self, statuses: list[str | None], running: bool) -> None:
        self.statuses = statuses
        self.running = running
        self.checks = 0

    async def run_healthcheck(self, container_id: str) -> str | None:
        self.checks += 1
        return self.statuses.pop(0)

    async def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        return {"State": {"Running": self.running}}


async def reported(engine: ScriptedEngine, *, wait_s: float = 1.0) -> list[ReplicaEvent]:
    told: list[ReplicaEvent] = []
    runs = HealthRuns(engine, asyncio.get_running_loop().time, told.append)  # type: ignore[arg-type]
    runs.started("c1", CHECKED)
    runs.started("c1", CHECKED)  # seen again (its event and rollover's own start): one loop
    async with asyncio.timeout(wait_s):
        while runs.is_checked("c1") and not told:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await runs.close()
    return told


def test_a_check_refused_while_the_container_runs_does_not_end_the_runs() -> None:
    engine = ScriptedEngine([None, "starting", "healthy"], running=True)
    told = asyncio.run(reported(engine))
    assert [type(event) for event in told] == [ReplicaUp]
    assert engine.checks == 3


def test_a_check_refused_because_the_container_stopped_ends_the_runs() -> None:
    engine = ScriptedEngine([None, "healthy"], running=False)
    told = asyncio.run(reported(engine))
    assert told == [] and engine.checks == 1


def test_unhealthy_is_reported_once_per_change_and_healthy_ends_it() -> None:
    engine = ScriptedEngine(["unhealthy", "unhealthy", "healthy"], running=True)
    told: list[ReplicaEvent] = []

    async def scenario() -> None:
        runs = HealthRuns(engine, asyncio.get_running_loop().time, told.append)  # type: ignore[arg-type]
        runs.started("c1", CHECKED)
        async with asyncio.timeout(1):
            while not any(isinstance(event, ReplicaUp) for event in told):
                await asyncio.sleep(0.01)
        assert runs.is_checked("c1")  # ended healthy: not begun again by a later sighting
        runs.started("c1", CHECKED)
        await asyncio.sleep(0.05)
        runs.stopped("c1")
        assert not runs.is_checked("c1")  # stopped: a restart is checked afresh
        await runs.close()

    asyncio.run(scenario())
    assert [type(event) for event in told] == [ReplicaDown, ReplicaUp]
    assert engine.checks == 3


def test_a_container_stopped_and_started_again_keeps_its_new_runs() -> None:
    """The cancelled loop of the first start ends after the second start's loop began: the second
    must stay known (a later stop cancels it, a later sighting does not start a third)."""
    engine = ScriptedEngine(["starting"] * 1000, running=True)

    async def scenario() -> bool:
        runs = HealthRuns(engine, asyncio.get_running_loop().time, lambda event: None)  # type: ignore[arg-type]
        runs.started("c1", CHECKED)
        runs.stopped("c1")
        runs.started("c1", CHECKED)
        await asyncio.sleep(0.01)  # the first loop's cancellation completes now
        still_known = runs.is_checked("c1")
        await runs.close()
        return still_known

    assert asyncio.run(scenario())
