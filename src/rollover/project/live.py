"""``rollover up``'s live view on a terminal (rich): a line per service of the project with what it
is doing (waiting, rolling with its replaced count, done and how), the replicas in flight under the
service rolling them, and one bar over every replica the project rolls (replaced / total).

The lines worth keeping (the project plan, each service's plan, failures and summary, each service
done, the project summary) are printed above the live area, as ``redeploy``'s live view does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rollover.controller.loop import Reporter
from rollover.core.model import ProgressEvent
from rollover.report.live import KEPT, ConsoleLines, RolloutProgress, progress_bar
from rollover.report.output import TextReporter
from rollover.report.redact import Redactor

# Actions that do nothing to a service: not shown.
_IDLE = ("untouched", "skip", "orphan")


@dataclass
class _Service:
    action: str
    replicas: int  # those a roll replaces (what ran); 0 for other actions
    progress: RolloutProgress = field(default_factory=RolloutProgress)
    outcome: str | None = None  # once done: "completed in 3.1s", "rolled-back in 9.0s (...)"
    rolling: bool = False


class ProjectLive:
    def __init__(self, out: TextIO, redact: Redactor) -> None:
        self.console = Console(file=out, force_terminal=True)
        self._redact = redact
        self._text = TextReporter(out=cast(TextIO, ConsoleLines(self.console)), redact=redact)
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        self._started = time.monotonic()
        self._live = Live(self, console=self.console, auto_refresh=False, transient=False)

    def say(self, lines: list[str]) -> None:
        """Lines kept above the live area."""
        for line in lines:
            self.console.print(Text(self._redact(line)), highlight=False)

    def planned(self, fields: dict[str, object]) -> None:
        services = fields.get("services")
        with self._lock:
            for item in services if isinstance(services, list) else []:
                if item["action"] not in _IDLE:
                    replicas = int(item.get("running") or 0) if item["action"] == "roll" else 0
                    self._services[str(item["service"])] = _Service(str(item["action"]), replicas)
        if self._services and not fields.get("dry_run"):  # a dry run stops at its plan
            self._live.start()

    def reporter(self, service: str) -> Reporter:
        """A rolled service's events: its lines and its replicas in flight."""
        def report(event: ProgressEvent) -> None:
            with self._lock:
                entry = self._services.get(service)
                if entry is not None:
                    entry.rolling = True
                    entry.progress.follow(event)
            if event.kind in KEPT:
                self._text(event)

        return report

    def done(self, fields: dict[str, object]) -> None:
        with self._lock:
            entry = self._services.get(str(fields["service"]))
            if entry is not None:
                reason = f" ({fields['reason']})" if fields.get("reason") else ""
                seconds = fields["duration_s"]
                entry.outcome = f"{fields['result']} in {seconds:.1f}s{reason}" if isinstance(
                    seconds, (int, float)) else f"{fields['result']}{reason}"

    async def ticking(self, every_s: float = 0.25) -> None:
        while True:
            if self._live.is_started:
                self._live.refresh()
            await asyncio.sleep(every_s)

    def close(self) -> None:
        if self._live.is_started:
            self._live.stop()

    def __rich__(self) -> RenderableType:
        with self._lock:
            now = time.monotonic()
            total = sum(entry.replicas for entry in self._services.values())
            replaced = sum(min(entry.progress.replaced, entry.replicas) for entry in self._services.values())
            finished = sum(entry.outcome is not None for entry in self._services.values())
            grid = Table.grid(padding=(0, 0))
            grid.add_row(Text(f"replaced {replaced}/{total}  "), progress_bar(replaced, total),
                         Text(f"  services done {finished}/{len(self._services)}, {now - self._started:5.1f}s"))
            lines: list[RenderableType] = [grid]
            # Services act one after the other, in the plan's order: the first not done is under way.
            current = next((name for name, entry in self._services.items() if entry.outcome is None), None)
            for name, entry in self._services.items():
                lines.append(Text(f"  {name}  {self._state(entry, name == current)}"))
                if entry.outcome is None:
                    lines.extend(entry.progress.replica_lines(now, indent="    "))
            return Group(*lines)

    @staticmethod
    def _state(entry: _Service, current: bool) -> str:
        if entry.outcome is not None:
            return f"{entry.action}: {entry.outcome}"
        if entry.action == "roll" and entry.rolling:
            return f"rolling: replaced {entry.progress.replaced}/{entry.replicas}"
        return f"{entry.action}: {'under way' if current else 'waiting'}"
