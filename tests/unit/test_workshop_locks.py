"""Which lock the removal of a replaced replica holds (workshop.py): Compose's count only, so a
retire never holds up the next request's create, and never lands inside Compose's one run."""

from __future__ import annotations

import asyncio

from rollover.backends.docker.workshop import Workshop


class RemovingEngine:
    def __init__(self) -> None:
        self.removed: list[str] = []

    async def remove(self, container_id: str, *, force: bool, volumes: bool) -> None:
        assert volumes is False  # a replaced replica's volumes stay: its replacement mounts them
        self.removed.append(container_id)


def test_a_removal_does_not_wait_for_a_create_in_progress() -> None:
    async def scenario() -> list[str]:
        engine = RemovingEngine()
        workshop = Workshop(engine)  # type: ignore[arg-type]
        async with workshop.mutations:  # a request's create holds it
            await asyncio.wait_for(workshop.remove_replaced(["old1"]), 1)
        return engine.removed

    assert asyncio.run(scenario()) == ["old1"]


def test_a_removal_waits_for_compose_to_finish_counting() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        engine = RemovingEngine()
        workshop = Workshop(engine)  # type: ignore[arg-type]
        async with workshop.compose_counts:  # Compose counts the containers and makes one more
            removal = asyncio.ensure_future(workshop.remove_replaced(["old1"]))
            await asyncio.sleep(0.05)
            during = list(engine.removed)
        await removal
        return during, engine.removed

    assert asyncio.run(scenario()) == ([], ["old1"])
