"""The Docker backend's engine runs its calls on threads of its own: a request is never queued
behind the starts a busy engine holds (asyncio's shared pool has 6 threads on 2 cores; a step of
12 filled it)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from rollover.engine import ENGINE_CALLS_AT_ONCE, Engine

STARTS = 12  # --step half of 24: twice asyncio's default pool on this machine


class SlowStarts:
    """The SDK's low-level client as seen by Engine: starts block until released, inspects answer."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = 0
        self._lock = threading.Lock()

    def start(self, container_id: str) -> None:
        with self._lock:
            self.blocked += 1
        self.release.wait(timeout=30)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"Id": container_id, "State": {"Running": False}}


class Client:
    def __init__(self, api: SlowStarts) -> None:
        self.api = api

    def close(self) -> None:
        pass


async def all_blocked(api: SlowStarts) -> None:
    while api.blocked < STARTS:
        await asyncio.sleep(0.01)


def test_an_inspect_answers_while_a_step_of_starts_is_still_blocked_in_the_engine() -> None:
    assert ENGINE_CALLS_AT_ONCE > STARTS

    async def scenario() -> tuple[dict[str, Any] | None, int]:
        api = SlowStarts()
        engine = Engine(Client(api), "unix:///test.sock", clock_offset_s=0.0, own_threads=ENGINE_CALLS_AT_ONCE)
        starts = [asyncio.create_task(engine.start(f"new-{n}")) for n in range(STARTS)]
        try:
            # Every start reached the (blocked) engine, and the inspect still gets its thread.
            await asyncio.wait_for(all_blocked(api), timeout=10)
            inspect = await asyncio.wait_for(engine.inspect_container("next"), timeout=10)
            still_blocked = sum(not start.done() for start in starts)
        finally:
            api.release.set()
            await asyncio.gather(*starts)
            await engine.close()
        return inspect, still_blocked

    inspect, still_blocked = asyncio.run(scenario())
    assert inspect is not None and inspect["Id"] == "next"
    assert still_blocked == STARTS
