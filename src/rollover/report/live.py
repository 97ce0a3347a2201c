"""Live progress on a terminal (rich): a line per replica in flight with its phase, an overall bar
(replaced / total), the probe's rate and failures so far, and the time left (report/eta.py).

Only when stdout is a terminal and neither ``--output json`` nor ``-q`` was asked for (cli.py picks
it); anywhere else the plain line per event stays. The lines that matter after the fact (the plan,
each replica done, a failure and its diagnosis, a rollback, the summary) are printed above the live
area, so the terminal keeps the record once the live area is gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.core.probe_report import ProbeReport
from rollover.report.eta import remaining_s
from rollover.report.html import Recorder
from rollover.report.output import TextReporter
from rollover.report.redact import Redactor

# What each step puts a replica in flight into, as the live line says it (acknowledged, up and
# draining are worded from their fields: see _phase).
_PHASE_AFTER = {
    EventKind.REQUEST_SENT: "requesting",
    EventKind.ADMITTED: "admitted, in its grace period",
    EventKind.SETTLED: "draining and stopping the old replica",
}
# Told above the live area too: the record a terminal keeps.
KEPT = {EventKind.PLAN, EventKind.SETTLED, EventKind.FAILED, EventKind.SKIPPED, EventKind.STOP_ISSUING,
         EventKind.ROLLBACK, EventKind.INTERRUPTED, EventKind.INTERRUPTED_AGAIN, EventKind.STREAM_LOST,
         EventKind.STREAM_RESTORED, EventKind.CLEANUP_FAILED, EventKind.LOCK_NOT_RELEASED, EventKind.SUMMARY,
         EventKind.TOOK_OVER_LOCK, EventKind.REFILLING, EventKind.SHORT}


@dataclass
class _InFlight:
    phase: str
    since: float  # monotonic
    checks_needed: int | None = None  # passing health checks its replacement needs (acknowledged)


def _checks(passed: int, needed: int | None) -> str:
    """How the health gate stands, counted from the engine's health events: Docker and Swarm call a
    container healthy after its first passing check, so a replacement with a healthcheck needs 1
    (``health_checks_needed`` on the acknowledged event) and has passed it when it is up:
    'health checks passed 0/1' while starting, '1/1' once up. None: an older event without the count."""
    if needed is None:
        return "health checks passed" if passed else "health checks running"
    if needed == 0:
        return "running (no healthcheck)" if passed else "no healthcheck: up once running"
    return f"health checks passed {needed if passed else 0}/{needed}"


class RolloutProgress:
    """One rollout's state as its events tell it: the replicas in flight and their phases, and the
    bar's figures (replaced / total). Not thread-safe: the caller holds its lock."""

    def __init__(self) -> None:
        self.flying: dict[str, _InFlight] = {}
        self.total = 0
        self.replaced = 0
        self.rolling_back = False
        self.started: float | None = None  # monotonic, when the plan was made

    def follow(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.kind is EventKind.PLAN:
            self.total = len(event.fields()["targets"])  # type: ignore[arg-type]
            self.started = now - event.at
        elif event.kind is EventKind.ROLLBACK:
            self.rolling_back = True
        elif event.kind is EventKind.REQUEST_SENT and event.fields().get("restore"):
            self.flying[event.replica] = _InFlight("putting the previous definition back", now)
        elif event.kind is EventKind.ACKNOWLEDGED and event.replica:
            needed = event.fields().get("health_checks_needed")
            needed = needed if isinstance(needed, int) else None
            self.flying[event.replica] = _InFlight(f"starting, {_checks(0, needed)}", now, needed)
        elif event.kind is EventKind.UP and event.replica:
            before = self.flying.get(event.replica)
            needed = before.checks_needed if before is not None else None
            self.flying[event.replica] = _InFlight(f"{_checks(1, needed)}, admitting", now, needed)
        elif event.kind in _PHASE_AFTER and event.replica:
            self.flying[event.replica] = _InFlight(_PHASE_AFTER[event.kind], now)
            if event.kind is EventKind.SETTLED and not self.rolling_back:
                self.replaced += 1
        elif event.kind is EventKind.DRAINING and event.replica in self.flying:
            self.flying[event.replica] = _InFlight(_draining(event.fields()), self.flying[event.replica].since)
        elif event.kind is EventKind.DRAINED and event.replica in self.flying:
            left = event.fields().get("sessions_left")
            self.flying[event.replica] = _InFlight(f"drained ({left} open connections left), stopping", now)
        if event.kind in (EventKind.RETIRED, EventKind.FAILED, EventKind.SKIPPED, EventKind.DISCARDED):
            self.flying.pop(event.replica, None)

    def replica_lines(self, now: float, indent: str = "  ") -> list[RenderableType]:
        return [Text(f"{indent}{name}  {flying.phase}  {now - flying.since:.1f}s")
                for name, flying in self.flying.items()]


def progress_bar(replaced: int, total: int) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=replaced, width=40)


class LiveReporter:
    def __init__(self, out: TextIO, redact: Redactor, probe: Callable[[], ProbeReport] | None = None) -> None:
        self.console = Console(file=out, force_terminal=True)
        self.probe = probe  # set by the caller once the probe exists
        self._text = TextReporter(out=cast(TextIO, ConsoleLines(self.console)), redact=redact)
        self._records = Recorder(redact)
        self._lock = threading.Lock()
        self._progress = RolloutProgress()
        self._eta: float | None = None
        self._eta_at = 0.0
        self._probe_seen: ProbeReport | None = None
        # Refreshed by ``ticking`` on the rollout's own loop, never by a thread of rich's: the probe's
        # tally is only read there.
        self._live = Live(self, console=self.console, auto_refresh=False, transient=False)

    async def ticking(self, every_s: float = 0.25) -> None:
        """Redraw the live area until cancelled (the caller runs it beside the rollout)."""
        while True:
            if self.probe is not None:
                self._probe_seen = self.probe()
            if self._live.is_started:
                self._live.refresh()
            await asyncio.sleep(every_s)

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self._records(event)
            self._progress.follow(event)
        if event.kind in KEPT:
            self._text(event)
        if event.kind is EventKind.PLAN:
            self._live.start()
        elif event.kind is EventKind.SUMMARY:
            self._live.stop()
        elif event.kind in (EventKind.SETTLED, EventKind.UP):
            self._estimate()

    def close(self) -> None:
        """Leave the terminal as it was (cursor shown) even when the rollout ended in an error
        (locked, the engine lost) before its summary."""
        if self._live.is_started:
            self._live.stop()

    def _estimate(self) -> None:
        """The simulator runs on its own (virtual) loop: in a thread, never in the rollout's."""
        records = list(self._records.records)
        elapsed = records[-1].get("t") if records else 0.0

        def predict() -> None:
            left = remaining_s(records, float(elapsed) if isinstance(elapsed, (int, float)) else 0.0)
            with self._lock:
                self._eta, self._eta_at = left, time.monotonic()

        threading.Thread(target=predict, daemon=True, name="rollover-eta").start()

    def __rich__(self) -> RenderableType:
        with self._lock:
            now = time.monotonic()
            progress = self._progress
            elapsed = now - progress.started if progress.started is not None else 0.0
            head = Text(f"replaced {progress.replaced}/{progress.total}  ")
            bar = progress_bar(progress.replaced, progress.total)
            tail = Text(f"  {elapsed:5.1f}s elapsed, " + self._eta_text(now))
            grid = Table.grid(padding=(0, 0))
            grid.add_row(head, bar, tail)
            lines: list[RenderableType] = [grid]
            seen = self._probe_seen
            if seen is not None:
                rate = seen.sent / elapsed if elapsed > 0 else 0.0
                lines.append(Text(f"probe: {rate:.0f} requests/s, {seen.ok} ok, {seen.failed} failed"
                                  + (f" ({', '.join(f'{k} {v}' for k, v in seen.failures_by_kind.items())})"
                                     if seen.failed else ""), style="red" if seen.failed else ""))
            lines.extend(progress.replica_lines(now))
            return Group(*lines)

    def _eta_text(self, now: float) -> str:
        if self._progress.rolling_back:
            return "rolling back"
        if self._eta is None:
            return "time left: known once a replacement is done"
        return f"about {max(0.0, self._eta - (now - self._eta_at)):.0f}s left"


def _draining(fields: dict[str, object]) -> str:
    """'draining, 3 open connections (haproxy web/spare2)' where the balancer counts them (HAProxy's
    scur + qcur, read from its runtime API); the phase alone where it cannot say."""
    sessions = fields.get("sessions")
    if not isinstance(sessions, int):
        return "draining"
    views = fields.get("balancers")
    servers = ", ".join(f"{view['balancer']} {view['server']}" for view in views
                        if isinstance(view, dict)) if isinstance(views, list) else ""
    return f"draining, {sessions} open connection{'' if sessions == 1 else 's'}" + (f" ({servers})" if servers else "")


class ConsoleLines:
    """A file for TextReporter whose lines go above the live area."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def write(self, text: str) -> int:
        if text.strip():
            self._console.print(Text(text.rstrip("\n")), highlight=False)
        return len(text)

    def flush(self) -> None:
        return None
