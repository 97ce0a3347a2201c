"""The engine's event stream as replica events.

The SDK's stream is a blocking iterator, so one thread per subscription reads it and hands each
event to the event loop (``call_soon_threadsafe``), where it is stamped with the controller's
clock the moment it arrives: the controller reasons in its own time, never the engine's timeNano.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rollover.core.model import ReplicaDown, ReplicaEvent, ReplicaUp
from rollover.errors import PlatformError

RawEvent = dict[str, Any]

# Only these actions mean anything to a rollout; the engine filters the rest out (health_status
# matches every "health_status: <state>" action, and exec_* never gets through).
WATCHED_ACTIONS = ("start", "die", "destroy", "health_status")


def event_filters(labels: dict[str, str]) -> dict[str, list[str]]:
    return {
        "type": ["container"],
        "event": list(WATCHED_ACTIONS),
        "label": [f"{key}={value}" for key, value in labels.items()],
    }


def action_of(raw: RawEvent) -> str:
    return str(raw.get("Action") or raw.get("status") or "")


def container_of(raw: RawEvent) -> str:
    return str((raw.get("Actor") or {}).get("ID") or raw.get("id") or "")


def labels_of_event(raw: RawEvent) -> dict[str, str]:
    return dict((raw.get("Actor") or {}).get("Attributes") or {})


def replica_event(raw: RawEvent, at: float, has_healthcheck: bool) -> ReplicaEvent | None:
    """What a raw engine event means for a replica, or None when it means nothing.

    ``has_healthcheck`` only matters for ``start``: a container with a healthcheck is up when it
    reports healthy, one without when it starts.
    """
    action, container_id = action_of(raw), container_of(raw)
    if action.startswith("health_status"):
        status = action.partition(":")[2].strip() or labels_of_event(raw).get("health_status", "")
        if status == "healthy":
            return ReplicaUp(container_id, at)
        return ReplicaDown(container_id, at, "unhealthy") if status == "unhealthy" else None
    if action == "start":
        return None if has_healthcheck else ReplicaUp(container_id, at)
    if action == "die":
        return ReplicaDown(container_id, at, f"exited with code {labels_of_event(raw).get('exitCode', '?')}")
    if action == "destroy":
        return ReplicaDown(container_id, at, "removed", gone=True)
    return None


def current_event(container_id: str, inspect: dict[str, Any] | None, at: float) -> ReplicaEvent | None:
    """The event that describes a container's state now (for a resync after missed events):
    gone -> removed; not running -> exited; unhealthy; healthy, or running without a healthcheck
    -> up; still starting -> nothing yet."""
    if inspect is None:
        return ReplicaDown(container_id, at, "removed", gone=True)
    state = inspect.get("State") or {}
    if not state.get("Running"):
        return ReplicaDown(container_id, at, f"exited with code {state.get('ExitCode', '?')}")
    health = (state.get("Health") or {}).get("Status")
    if health == "unhealthy":
        return ReplicaDown(container_id, at, "unhealthy")
    if health in (None, "", "healthy"):
        return ReplicaUp(container_id, at)
    return None


@dataclass(frozen=True)
class _StreamEnded:
    failure: BaseException | None


class EventFeed:
    """One live subscription: a reader thread feeding an asyncio queue."""

    def __init__(self, stream: Iterator[RawEvent], clock: Callable[[], float]) -> None:
        self._stream = stream
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[float, RawEvent | ReplicaEvent | _StreamEnded]] = asyncio.Queue()
        self._closed = False
        self._reader = threading.Thread(target=self._pump, name="rollover-docker-events", daemon=True)
        self._reader.start()

    async def next(self) -> tuple[float, RawEvent | ReplicaEvent] | None:
        """The next event with its arrival time; None once closed; PlatformError if it broke.
        A ReplicaEvent is one the backend told (``tell``), not the engine."""
        at, item = await self._queue.get()
        if not isinstance(item, _StreamEnded):
            return at, item
        if self._closed:
            return None
        reason = f": {item.failure}" if item.failure else " (the daemon closed it)"
        raise PlatformError(f"the Docker event stream broke{reason}")

    def tell(self, event: ReplicaEvent) -> None:
        """Deliver an event the engine does not send, in order with those it does."""
        self._queue.put_nowait((event.at, event))

    def close(self) -> None:
        self._closed = True
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def _pump(self) -> None:
        failure: BaseException | None = None
        try:
            for raw in self._stream:
                self._hand_over(raw)
        except Exception as exc:  # the stream's own failure, reported to the reader of next()
            failure = exc
        self._hand_over(_StreamEnded(failure))

    def _hand_over(self, item: RawEvent | _StreamEnded) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._arrive, item)

    def _arrive(self, item: RawEvent | _StreamEnded) -> None:
        self._queue.put_nowait((self._clock(), item))
