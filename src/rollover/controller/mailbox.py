"""The controller loop's inbox: what is posted to it, and its one way of waiting.

The loop waits for the next message or for its next deadline (a grace end, a replacement's
timeout), whichever comes first. ``asyncio.Queue`` with ``asyncio.wait_for`` does that with a
task, a timer and a cancellation per wait; a simulated rollout of 10,000 replicas waits 20,000
times. Here a wait is one future and, with a deadline, one timer on the loop's clock, and a
message already posted is taken without waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self) -> None:
        self._posted: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def post(self, message: T) -> None:
        """Deliver ``message``; callable from the loop's callbacks and tasks (not other threads)."""
        self._posted.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self, wake_at: float | None) -> list[T]:
        """Every message posted so far, once there is one; none once the loop's clock reaches
        ``wake_at`` first (at once when it already has: what is due comes before what is posted,
        as the loop handles time first). ``wake_at`` None waits for a message however long it takes."""
        loop = asyncio.get_running_loop()
        if wake_at is not None and wake_at <= loop.time():
            return []
        if not self._posted:
            waiter = loop.create_future()
            timer = None if wake_at is None else loop.call_at(wake_at, _wake, waiter)
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._posted or (wake_at is not None and wake_at <= loop.time()):
                return []  # the deadline came first, or with the message
        posted = list(self._posted)
        self._posted.clear()
        return posted


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
