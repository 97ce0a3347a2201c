"""Where a run's events go, as the output options chose: plain lines, JSON lines or the terminal's
live view, plus the records an HTML report (``--report``) is drawn from."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from rollover.core.model import ProgressEvent
from rollover.report.html import Recorder
from rollover.report.output import JsonReporter, TextReporter
from rollover.report.redact import Redactor

if TYPE_CHECKING:
    from rollover.report.live import LiveReporter

Reporter = Callable[[ProgressEvent], None]


class Outputs(NamedTuple):
    report: Reporter  # every event goes here
    json: JsonReporter | None  # --output json: finished with the summary
    recorder: Recorder | None  # --report: the records the HTML report is drawn from
    live: LiveReporter | None  # a terminal's live view: redrawn beside the rollout


def choose_outputs(*, json: bool, quiet: bool, live: bool, report: bool,
                   redactor: Callable[[], Redactor], flush: bool = True) -> Outputs:
    """``flush``: each line as it is told (a simulation, all told within a second, need not)."""
    json_reporter = JsonReporter(redact=redactor(), flush=flush) if json else None
    live_view = None
    if live:  # rich, imported only for a terminal (0.1 s of CPU a JSON or text run does not spend)
        from rollover.report.live import LiveReporter

        live_view = LiveReporter(sys.stdout, redactor())
    shown: Reporter = json_reporter or live_view or TextReporter(quiet=quiet, redact=redactor(), flush=flush)
    if not report:
        return Outputs(shown, json_reporter, None, live_view)
    recorder = Recorder(redactor())

    def both(event: ProgressEvent) -> None:
        shown(event)
        recorder(event)

    return Outputs(both, json_reporter, recorder, live_view)
