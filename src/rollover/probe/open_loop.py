"""A traffic probe: what a steady stream of clients saw while a service was being rolled.

Open loop: requests start on a fixed schedule (``rate`` per second) whatever the answers, each as
its own task, so a stalled service shows up as failures and a long gap instead of silently
slowing the probe down (a closed loop would send fewer requests exactly when it matters).
In-flight requests are bounded (``max_in_flight``); a request due while the bound is reached is
not sent and counts as failed, kind "overload".

Every request opens a new connection (keep-alive off, ``Connection: close``). A reused connection
stays pinned to whatever is behind it until it closes: through a proxy that balances per
connection (``mode tcp``, a published port, docker-proxy) the probe would never see a new replica
nor notice an old one going, and its answers by version would lie. An HTTP-mode HAProxy balances
per request anyway, so nothing is lost there; the cost is a handshake per request, which on
loopback at a few hundred requests a second is noise. What is not noise is the Python around
it: requests go straight to a transport made for this (``probe_transport``), not through an
``httpx.AsyncClient`` over httpcore, at about 60 % of the CPU per request.

Failure kinds: connect, timeout, status-5xx, status-4xx, other (a reset or malformed answer),
overload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import Counter, deque
from collections.abc import Callable
from types import TracebackType

import httpx

from rollover.clock import Clock, loop_clock
from rollover.core.probe_report import ProbeReport, ProbeSample
from rollover.probe.transport import FreshConnectionTransport


class Probe:
    def __init__(
        self,
        url: str,
        rate: float = 50.0,
        timeout: float = 2.0,
        *,
        clock: Clock | None = None,
        max_in_flight: int | None = None,
        max_samples: int = 100_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_in_flight is None:
            # Room for every request that can be pending before it times out, plus a second of
            # slack: 200/s with a 2 s timeout -> 600. Past that, a request could not be answered
            # in time anyway, so "overload" never hides a failure the timeout would have shown.
            max_in_flight = max(256, math.ceil(rate * (timeout + 1)))
        if rate <= 0 or timeout <= 0 or max_in_flight < 1:
            raise ValueError("probe rate, timeout and max_in_flight must be positive")
        self.url = url  # parsed and checked once, by the property's setter
        self.rate = rate
        self.timeout = timeout
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._transport = transport or FreshConnectionTransport()
        # Built once: every request is the same GET (a fresh connection each, see the module doc).
        self._headers = httpx.Headers({"Connection": "close", "User-Agent": "rollover-probe"})
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._samples: deque[ProbeSample] = deque(maxlen=max_samples)
        self._answers: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._sent = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._longest_gap = 0.0
        self._last_ok_at = 0.0
        self._stopped_at: float | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._progressed = asyncio.Event()

    @property
    def url(self) -> str:
        return str(self._target)

    @url.setter
    def url(self, url: str) -> None:
        """Point the requests sent from now on elsewhere (those in flight keep their target)."""
        target = httpx.URL(url)
        if target.scheme not in ("http", "https"):
            raise ValueError(f"probe URL {url!r}: expected http:// or https://")
        self._target = target

    def _now(self) -> float:
        if self._clock is None:
            self._clock = loop_clock()
        return self._clock()

    async def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("the probe was already started")
        self._last_ok_at = self._now()
        self._scheduler = asyncio.create_task(self._send_on_schedule())

    async def _send_on_schedule(self) -> None:
        interval = 1.0 / self.rate
        due = self._now()
        while True:
            # sleep(0) when late still yields, so a loop that cannot keep up is not starved
            await asyncio.sleep(max(0.0, due - self._now()))
            # A fixed schedule: every request that fell due while the loop was busy goes out now,
            # so a late loop catches up instead of silently sending less.
            while due <= self._now():
                self._send_one()
                due += interval

    def _send_one(self) -> None:
        self._sent += 1
        sent_at = self._now()
        if len(self._in_flight) >= self._max_in_flight:
            self._record(sent_at, ok=False, answer="overload")
            return
        task = asyncio.create_task(self._request(sent_at))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _request(self, sent_at: float) -> None:
        # Straight to the transport: an httpx.AsyncClient would add cookies, auth, redirects and
        # URL merging the probe never uses, about 0.7 ms of CPU per request (profiled).
        request = httpx.Request("GET", self._target, headers=self._headers, extensions={"timeout": self._timeouts})
        try:
            response = await self._transport.handle_async_request(request)
            await response.aread()
        except httpx.ConnectError:
            self._record(sent_at, ok=False, answer="connect")
        except httpx.TimeoutException:
            self._record(sent_at, ok=False, answer="timeout")
        except httpx.HTTPError:
            self._record(sent_at, ok=False, answer="other")
        else:
            status = response.status_code
            if status >= 400:
                self._record(sent_at, ok=False, answer="status-5xx" if status >= 500 else "status-4xx")
            else:
                self._record(sent_at, ok=True, answer=response.text.partition("\n")[0][:200])

    def _record(self, sent_at: float, *, ok: bool, answer: str) -> None:
        now = self._now() if self._stopped_at is None else self._stopped_at
        if ok:
            self._answers[answer] += 1
            self._longest_gap = max(self._longest_gap, now - self._last_ok_at)
            self._last_ok_at = max(self._last_ok_at, now)
        else:
            self._failures[answer] += 1
        self._samples.append(ProbeSample(sent_at, ok, answer, latency_s=self._now() - sent_at if ok else None))
        self._progressed.set()  # wake every wait_for, then arm a fresh event for the next outcome
        self._progressed = asyncio.Event()

    def progress(self) -> ProbeReport:
        """The tally so far (without samples); requests still in flight are neither ok nor failed."""
        end = self._now() if self._stopped_at is None else self._stopped_at
        return ProbeReport(
            sent=self._sent,
            ok=sum(self._answers.values()),
            failed=sum(self._failures.values()),
            failures_by_kind=dict(self._failures),
            longest_gap_s=max(self._longest_gap, end - self._last_ok_at),
            answers=dict(self._answers),
            in_flight=len(self._in_flight),
        )

    async def wait_for(self, condition: Callable[[ProbeReport], bool], timeout: float) -> ProbeReport:
        """Wait (at most ``timeout`` s, else TimeoutError) until the tally satisfies ``condition``."""
        async with asyncio.timeout(timeout):
            while not condition(report := self.progress()):
                await self._progressed.wait()
        return report

    async def stop(self) -> ProbeReport:
        """Stop sending, let the requests in flight finish (each within ``timeout``), and report."""
        if self._scheduler is None:
            raise RuntimeError("the probe was not started")
        self._stopped_at = self._now()
        self._scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._scheduler
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        return dataclasses.replace(self.progress(), samples=tuple(self._samples))

    async def __aenter__(self) -> Probe:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._stopped_at is None and self._scheduler is not None:
            await self.stop()
