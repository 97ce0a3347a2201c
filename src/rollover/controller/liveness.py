"""Riding out a platform that goes away mid-rollout (a daemon restart, a network blip).

The controller's event stream is reopened with backoff, and idempotent platform calls are tried
again, both for up to RECONNECT_TIMEOUT_S; after that they raise EngineLost (not EngineUnavailable,
the bad input of "nothing was touched") and the rollout fails with the summary of where it stopped.
What the stream missed meanwhile is not known here: ``StreamRestored`` tells the controller to look
it up.

Only idempotent calls may go through ``retrying``: a call cut short by the outage may have been
carried out by the platform, and its second attempt must find that work instead of doing it twice
(see ``Backend.restore``). Calls that make something new without such a record (``redeploy``,
``refill``) are not retried; their failure is a failed replacement, which the policy handles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from rollover.backends.base import Backend
from rollover.core.events import EventKind
from rollover.core.model import ReplicaEvent
from rollover.errors import EngineLost, EngineUnavailable, RolloverError

T = TypeVar("T")

# How long the platform may stay out of reach mid-rollout before the rollout fails; waits between
# attempts grow 0.2 s, 0.4 s, 0.8 s ... up to 5 s.
RECONNECT_TIMEOUT_S = 60.0
_RETRY_FIRST_S, _RETRY_MAX_S = 0.2, 5.0


@dataclass(frozen=True)
class StreamLost:
    """The event stream broke: events may go missing until it is open again and looked up."""


@dataclass(frozen=True)
class StreamRestored:
    """The event stream was lost and is open again: what happened meanwhile must be looked up."""


@dataclass(frozen=True)
class Broken:
    """Something the rollout cannot go on from; the controller raises it."""

    error: BaseException


Post = Callable[[ReplicaEvent | StreamLost | StreamRestored | Broken], None]
Report = Callable[..., None]


class Liveness:
    """The controller's link to the platform: its event stream and its retried calls."""

    def __init__(self, backend: Backend, post: Post, report: Report) -> None:
        self._backend = backend
        self._post = post  # into the controller's message queue
        self._report = report  # report(EventKind, **detail)
        self._stream_ok = asyncio.Event()  # cleared while the event stream is lost
        self._stream_ok.set()
        # How often the stream was opened again: a call that spans a reopen may have made a replica
        # whose events went to neither stream, so its caller looks the replica up (Controller._request).
        self.reopened = 0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def pump(self, events: AsyncIterator[ReplicaEvent]) -> None:
        """Forward platform events; when the stream is lost, open it again (bounded by
        RECONNECT_TIMEOUT_S) and have the missed changes looked up."""
        while True:
            try:
                async for event in events:
                    self._post(event)
                failure = "the event stream ended"
            except RolloverError as exc:
                failure = str(exc)
            self._report(EventKind.STREAM_LOST, reason=failure)
            self._stream_ok.clear()
            self._post(StreamLost())
            reopened = await self._reopen_events(failure)
            if reopened is None:
                return
            events = reopened
            self.reopened += 1
            self._stream_ok.set()
            self._report(EventKind.STREAM_RESTORED)
            self._post(StreamRestored())

    async def _reopen_events(self, failure: str) -> AsyncIterator[ReplicaEvent] | None:
        deadline = self._now() + RECONNECT_TIMEOUT_S
        wait = _RETRY_FIRST_S
        while True:
            await asyncio.sleep(wait)
            try:
                return self._backend.events()
            except RolloverError as exc:
                if self._now() + wait > deadline:
                    lost = EngineLost(f"lost the platform for {RECONNECT_TIMEOUT_S:g}s: {failure}; {exc}")
                    self._post(Broken(lost))
                    return None
            wait = min(wait * 2, _RETRY_MAX_S)

    async def reachable(self) -> None:
        """Return once the event stream is open (at once unless it was lost); EngineLost when it
        stays lost for RECONNECT_TIMEOUT_S."""
        if self._stream_ok.is_set():
            return  # the usual case, every request: no wait to set up
        try:
            await asyncio.wait_for(self._stream_ok.wait(), RECONNECT_TIMEOUT_S)
        except TimeoutError:
            raise EngineLost(f"the platform was out of reach for {RECONNECT_TIMEOUT_S:g}s") from None

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """An idempotent platform call, tried again while the platform is out of reach; EngineLost
        when it stays out of reach for RECONNECT_TIMEOUT_S."""
        deadline = self._now() + RECONNECT_TIMEOUT_S
        wait = _RETRY_FIRST_S
        while True:
            try:
                return await call()
            except EngineUnavailable as exc:
                if self._now() + wait > deadline:
                    raise EngineLost(f"lost the platform for {RECONNECT_TIMEOUT_S:g}s: {exc}") from exc
            await asyncio.sleep(wait)
            wait = min(wait * 2, _RETRY_MAX_S)
