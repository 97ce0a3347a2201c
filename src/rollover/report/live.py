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

# What each step puts a replica in flight into, as the live line says it.
_PHASE_AFTER = {
    EventKind.REQUEST_SENT: "requesting",
    EventKind.ACKNOWLEDGED: "starting, health checks running",
    EventKind.UP: "health checks passed, admitting",
    EventKind.ADMITTED: "admitted, in its grace period",
    EventKind.SETTLED: "draining and stopping the old replica",
}
# Told above the live area too: the record a terminal keeps.
_KEPT = {EventKind.PLAN, EventKind.SETTLED, EventKind.FAILED, EventKind.SKIPPED, EventKind.STOP_ISSUING,
         EventKind.ROLLBACK, EventKind.INTERRUPTED, EventKind.INTERRUPTED_AGAIN, EventKind.STREAM_LOST,
         EventKind.STREAM_RESTORED, EventKind.CLEANUP_FAILED, EventKind.LOCK_NOT_RELEASED, EventKind.SUMMARY,
         EventKind.TOOK_OVER_LOCK, EventKind.REFILLING, EventKind.SHORT}


@dataclass
class _InFlight:
    phase: str
    since: float  # monotonic


class LiveReporter:
    def __init__(self, out: TextIO, redact: Redactor, probe: Callable[[], ProbeReport] | None = None) -> None:
        self.console = Console(file=out, force_terminal=True)
        self.probe = probe  # set by the caller once the probe exists
        self._text = TextReporter(out=cast(TextIO, _ConsoleLines(self.console)), redact=redact)
        self._records = Recorder(redact)
        self._lock = threading.Lock()
        self._flying: dict[str, _InFlight] = {}
        self._total = 0
        self._replaced = 0
        self._rolling_back = False
        self._started: float | None = None
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
            self._follow(event)
        if event.kind in _KEPT:
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

    def _follow(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.kind is EventKind.PLAN:
            self._total = len(event.fields()["targets"])  # type: ignore[arg-type]
            self._started = now - event.at
        elif event.kind is EventKind.ROLLBACK:
            self._rolling_back = True
        elif event.kind is EventKind.REQUEST_SENT and event.fields().get("restore"):
            self._flying[event.replica] = _InFlight("putting the previous definition back", now)
        elif event.kind in _PHASE_AFTER and event.replica:
            self._flying[event.replica] = _InFlight(_PHASE_AFTER[event.kind], now)
            if event.kind is EventKind.SETTLED and not self._rolling_back:
                self._replaced += 1
        elif event.kind is EventKind.DRAINED and event.replica in self._flying:
            left = event.fields().get("sessions_left")
            self._flying[event.replica] = _InFlight(f"drained ({left} open connections left), stopping", now)
        if event.kind in (EventKind.RETIRED, EventKind.FAILED, EventKind.SKIPPED, EventKind.DISCARDED):
            self._flying.pop(event.replica, None)

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
            elapsed = now - self._started if self._started is not None else 0.0
            head = Text(f"replaced {self._replaced}/{self._total}  ")
            bar = ProgressBar(total=max(self._total, 1), completed=self._replaced, width=40)
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
            for name, flying in self._flying.items():
                lines.append(Text(f"  {name}  {flying.phase}  {now - flying.since:.1f}s"))
            return Group(*lines)

    def _eta_text(self, now: float) -> str:
        if self._rolling_back:
            return "rolling back"
        if self._eta is None:
            return "time left: known once a replacement is done"
        return f"about {max(0.0, self._eta - (now - self._eta_at)):.0f}s left"


class _ConsoleLines:
    """A file for TextReporter whose lines go above the live area."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def write(self, text: str) -> int:
        if text.strip():
            self._console.print(Text(text.rstrip("\n")), highlight=False)
        return len(text)

    def flush(self) -> None:
        return None
