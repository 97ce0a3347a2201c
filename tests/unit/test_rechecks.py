"""The looks at a replacement the engine stayed silent about (rechecks.py): when they come, what
they report, and that hearing of it first ends them. The real engine run is in
tests/engine/test_docker_backend.py (every event of a replacement lost on the way)."""

from __future__ import annotations

import asyncio
from typing import Any

from rollover.backends.docker.rechecks import Rechecks, look_delays
from rollover.core.model import ReplicaDown, ReplicaEvent, ReplicaUp

STARTING = {"State": {"Running": True, "Health": {"Status": "starting"}}}
HEALTHY = {"State": {"Running": True, "Health": {"Status": "healthy"}}}
EXITED = {"State": {"Running": False, "ExitCode": 3}}


class ScriptedEngine:
    def __init__(self, answers: list[dict[str, Any] | None]) -> None:
        self.answers = answers
        self.looks = 0

    async def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        self.looks += 1
        return self.answers.pop(0)


def test_the_waits_double_from_five_seconds_up_to_a_minute() -> None:
    assert look_delays() == [5, 10, 20, 40, 60, 60, 60, 60]


async def watched(engine: ScriptedEngine, *, hear_first: bool = False) -> list[ReplicaEvent]:
    told: list[ReplicaEvent] = []
    rechecks = Rechecks(lambda: engine, asyncio.get_running_loop().time, told.append,  # type: ignore[arg-type,return-value]
                        first_look_s=0.001)
    if hear_first:
        rechecks.heard("c1")
    rechecks.started("c1")
    rechecks.started("c1")  # one look loop per container
    await asyncio.sleep(0.2)
    await rechecks.close()
    return told


def test_a_silent_replacement_is_reported_once_a_look_finds_it_healthy() -> None:
    engine = ScriptedEngine([STARTING, STARTING, HEALTHY])
    told = asyncio.run(watched(engine))
    assert [type(event) for event in told] == [ReplicaUp] and engine.looks == 3


def test_a_look_that_finds_it_exited_reports_it_down() -> None:
    told = asyncio.run(watched(ScriptedEngine([EXITED])))
    assert [(type(event), getattr(event, "reason", "")) for event in told] == [(ReplicaDown, "exited with code 3")]


def test_one_heard_of_before_it_was_started_is_never_looked_at() -> None:
    engine = ScriptedEngine([HEALTHY])
    assert asyncio.run(watched(engine, hear_first=True)) == [] and engine.looks == 0
