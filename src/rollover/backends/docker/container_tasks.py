"""One background task per container, keyed by its id (the healthcheck runs, the looks again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class ContainerTasks:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._tasks

    def spawn(self, container_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for the container; it leaves the set when it ends, however it ends."""
        task = asyncio.ensure_future(work)
        self._tasks[container_id] = task
        task.add_done_callback(lambda done: self._forget(container_id, done))

    def _forget(self, container_id: str, done: asyncio.Task[None]) -> None:
        # Only this task: one cancelled (the container stopped) may end after the next was spawned
        # for the same container (it started again), which must stay.
        if self._tasks.get(container_id) is done:
            del self._tasks[container_id]

    def cancel(self, container_id: str) -> None:
        task = self._tasks.pop(container_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
