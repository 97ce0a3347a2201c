"""A replacement the engine stayed silent about, looked at again: a bounded fallback, not polling.

rollover learns that a replacement is up from the engine's event stream. The engine may drop
events for a subscriber without a sign on the stream: its publisher gives each subscriber a
bounded buffer and a short send timeout, so a reader that falls behind (a loaded 2-core machine,
sixty containers healthchecking) loses what did not fit. A replacement whose health event was
lost would wait out its whole health budget and fail the rollout, though it was healthy all along.

So each replacement rollover started, and heard nothing about since, is inspected again: 5 s
after its start, then at doubling delays (5, 10, 20, 40, 60, 60 ... s after the previous look),
until the stream or an inspect says it is up or down. One whose events arrive costs nothing (its
looks are cancelled when the first is heard); a silent one costs a handful of inspects over its
budget: a replacement with Docker's default 30 s check interval, healthy after 30 s, is looked at
twice (at 5 and 15 s) before its event comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rollover.backends.docker.container_tasks import ContainerTasks
from rollover.backends.docker.events import current_event
from rollover.core.model import ReplicaEvent
from rollover.engine import Engine
from rollover.errors import RolloverError

FIRST_LOOK_S = 5.0
LONGEST_WAIT_S = 60.0


def look_delays(first_s: float = FIRST_LOOK_S, longest_s: float = LONGEST_WAIT_S) -> list[float]:
    """The waits before each look, the first eight: 5, 10, 20, 40, 60, 60, 60, 60 (seconds)."""
    delays, delay = [], first_s
    for _ in range(8):
        delays.append(delay)
        delay = min(delay * 2, longest_s)
    return delays


class Rechecks:
    """One task per replacement started and not yet heard of, reporting through ``report``."""

    def __init__(self, engine: Callable[[], Engine], clock: Callable[[], float],
                 report: Callable[[ReplicaEvent], None], first_look_s: float = FIRST_LOOK_S) -> None:
        self._engine = engine
        self._clock = clock
        self._report = report
        self._first_look_s = first_look_s
        self._looks = ContainerTasks()
        self._heard: set[str] = set()  # reported up or down already (a stop-first start may be heard first)

    def started(self, container_id: str) -> None:
        """rollover started the container: look at it later unless it is heard of first."""
        if container_id not in self._looks and container_id not in self._heard:
            self._looks.spawn(container_id, self._look(container_id))

    def heard(self, container_id: str) -> None:
        """The stream said it is up or down: no look is needed any more."""
        self._heard.add(container_id)
        self._looks.cancel(container_id)

    async def _look(self, container_id: str) -> None:
        delays = iter(look_delays(self._first_look_s))
        while True:  # until it is up or down, or the rollout ends (close())
            await asyncio.sleep(next(delays, LONGEST_WAIT_S))
            try:
                inspect = await self._engine().inspect_container(container_id)
            except RolloverError:
                continue  # the engine did not answer: a lost stream is handled above us
            event = current_event(container_id, inspect, self._clock())
            if event is not None:  # up or down; still starting: look again later
                self._report(event)
                return

    async def close(self) -> None:
        await self._looks.close()
