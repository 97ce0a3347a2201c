"""Where ``rollover up``'s events go: text lines, JSON lines or the terminal's live view, every
rolled service's own events marked with its name, and the project summary last; with ``--report``
every event is also recorded for the HTML report."""

from __future__ import annotations

from collections.abc import Callable

import click

from rollover.controller.loop import Reporter
from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.project.live import ProjectLive
from rollover.project.report import plan_lines, summary_lines
from rollover.report.html import Recorder
from rollover.report.output import JsonReporter, TextReporter
from rollover.report.redact import Redactor


class ProjectOutput:
    def __init__(self, *, json: bool, quiet: bool, redact: Redactor, live: ProjectLive | None = None,
                 recorder: Recorder | None = None) -> None:
        self._json = json
        self._quiet = quiet
        self._redact = redact
        self._project = JsonReporter(redact=redact) if json else None
        self.live = live
        self.recorder = recorder

    def emit(self, event: ProgressEvent) -> None:
        if self.recorder is not None:
            self.recorder(event)
        if self.live is not None:
            self._show(event)
            return
        if self._project is not None:
            self._project(event)
            return
        fields = event.fields()
        if event.kind is EventKind.PROJECT_PLAN:
            self._say(plan_lines(fields))
        elif event.kind is EventKind.PROJECT_SUMMARY:
            self._say(summary_lines(fields))
        elif event.kind is EventKind.SERVICE_DONE and (not self._quiet or fields["result"] != "completed"):
            self._say([_done_line(fields)])

    def _show(self, event: ProgressEvent) -> None:
        assert self.live is not None
        fields = event.fields()
        if event.kind is EventKind.PROJECT_PLAN:
            self.live.say(plan_lines(fields))
            self.live.planned(fields)
        elif event.kind is EventKind.SERVICE_DONE:
            self.live.done(fields)
            self.live.say([_done_line(fields)])
        elif event.kind is EventKind.PROJECT_SUMMARY:
            self.live.close()
            self.live.say(summary_lines(fields))

    def _say(self, lines: list[str]) -> None:
        for line in lines:
            click.echo(self._redact(line))

    def reporter_for(self, service: str) -> tuple[Reporter, Callable[[], None]]:
        """A rolled service's reporter (its events carry ``service``) and the call that prints its
        held-back summary (JSON), so the project summary stays the last line."""
        inner: Reporter = (self.live.reporter(service) if self.live is not None
                           else JsonReporter(redact=self._redact) if self._json
                           else TextReporter(quiet=self._quiet, redact=self._redact))

        def report(event: ProgressEvent) -> None:
            marked = event._replace(detail=(("service", service), *event.detail))
            if self.recorder is not None:
                self.recorder(marked)
            inner(marked)

        def flush() -> None:
            if isinstance(inner, JsonReporter):
                inner.finish(None)

        return report, flush


def _done_line(fields: dict[str, object]) -> str:
    reason = f" ({fields['reason']})" if fields.get("reason") else ""
    return f"{fields['service']}: {fields['action']} {fields['result']} in {fields['duration_s']:.1f}s{reason}"
