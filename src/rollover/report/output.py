"""What the user sees: a text line per step (or one JSON object per line), and the timeline."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.core.result import Outcome, RolloutResult
from rollover.core.rollout import Phase, TargetProgress
from rollover.core.timeline import Row, Segment, render
from rollover.report.redact import Redactor


def _relative(moment: float | None, start: float) -> float | None:
    return None if moment is None else round(moment - start, 6)


def _segment(item: TargetProgress, start: float, up_mark: str = "|") -> Segment:
    return Segment(
        requested_at=_relative(item.requested_at, start),
        acked_at=_relative(item.acked_at, start),
        up_at=_relative(item.up_at, start) if item.phase is not Phase.FAILED else None,
        failed_at=_relative(item.finished_at, start) if item.phase is Phase.FAILED else None,
        skipped_at=_relative(item.finished_at, start) if item.phase is Phase.SKIPPED else None,
        up_mark=up_mark,
    )


def timeline_rows(result: RolloutResult) -> list[Row]:
    """One row per target; a rolled-back target's row goes on with its restore, ending in 'R'."""
    start = result.started_at
    restores: dict[str, TargetProgress] = {}
    if result.rollback is not None:
        for item in result.rollback.progress:
            if item.restore_from is not None:
                restores[item.restore_from.id] = item
    rows = []
    for item in result.forward.progress:
        segments = [_segment(item, start)]
        if item.target.id in restores:
            segments.append(_segment(restores[item.target.id], start, up_mark="R"))
        rows.append(Row(item.target.name, tuple(segments)))
    return rows


def render_timeline(result: RolloutResult, marks: Sequence[float] = ()) -> str:
    return render(timeline_rows(result), marks)


class TextReporter:
    """Plain lines, one per step: readable live in a terminal and in a CI log alike."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False, redact: Redactor | None = None,
                 flush: bool = True) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self.redact = redact or Redactor()
        self.flush = flush  # each line as it happens; a simulation's lines all come within a second

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet and event.kind not in (EventKind.SUMMARY, EventKind.FAILED):
            return
        line = self._describe(event)
        if line:
            self.out.write(self.redact(line) + "\n")
            if self.flush:
                self.out.flush()

    def _describe(self, event: ProgressEvent) -> str:
        detail = event.fields()
        stamp = f"[{event.at:7.1f}s]"
        if event.replica and event.kind in _REPLICA_WORDS:  # nearly every line: a replica's step
            return self._replica_line(event, stamp, detail)
        if event.kind == EventKind.PLAN:
            return _plan_text(detail)
        if event.kind == EventKind.SUMMARY:
            return _summary_text(detail)
        if event.kind == EventKind.STOP_ISSUING:
            return f"{stamp} a replacement failed: no more redeploys are issued (--on-failure {detail['policy']})"
        if event.kind == EventKind.INTERRUPTED:
            return (f"{stamp} interrupted by {detail['signal']}: no more redeploys are issued; "
                    f"waiting for the {detail['in_flight']} in flight (again to stop at once)")
        if event.kind == EventKind.ROLLBACK:
            line = f"{stamp} rolling back {len(detail['replicas'])} replaced replica(s) to their previous image"  # type: ignore[arg-type]
            if detail.get("kept_refills"):
                kept = ", ".join(str(name) for name in detail["kept_refills"])  # type: ignore[attr-defined]
                line += f"; refilled {kept} stay(s): there is no previous image to put back"
            return line
        if event.kind == EventKind.LOCK_WAIT:
            return f"{stamp} waiting up to {detail['wait_s']:g} s for the lock: {detail['holder']}"
        if event.kind == EventKind.REFILLING:
            return (f"{stamp} the dead rollout left {detail['missing']} of {detail['replicas']} replica(s) missing:"
                    " refilling them first")
        if not event.replica:
            return f"{stamp} {_rollout_words(event.kind, detail)}"
        return self._replica_line(event, stamp, detail)

    @staticmethod
    def _replica_line(event: ProgressEvent, stamp: str, detail: dict[str, object]) -> str:
        words = _REPLICA_WORDS.get(event.kind)
        line = f"{stamp} {event.replica}: {event.kind if words is None else words(detail)}"
        if event.kind == EventKind.FAILED and isinstance(detail.get("diagnosis"), dict):
            line += "".join(f"\n    {text}" for text in diagnosis_text(detail["diagnosis"]))  # type: ignore[arg-type]
        return line


def _rollout_words(kind: str, detail: dict[str, object]) -> str:
    """An event of the rollout as a whole, in words (the ones with a line of their own are above)."""
    match kind:
        case EventKind.TOOK_OVER_LOCK:
            return (f"took over the lock of a dead rollout ({detail.get('holder')}: {detail.get('reason')}): "
                    "finishing its work")
        case EventKind.SHORT:
            return (f"the dead rollout left {detail.get('missing')} of {detail.get('replicas')} replica(s) missing:"
                    " the platform makes them again by itself")
        case EventKind.STREAM_LOST:
            return f"the event stream was lost ({detail.get('reason')}): waiting for it to come back"
        case EventKind.STREAM_RESTORED:
            return "the event stream is back: looking up what it missed"
        case EventKind.LOCK_NOT_RELEASED:
            return f"the lock could not be released ({detail.get('reason')}): the next rollout finds it stale"
        case EventKind.INTERRUPTED_AGAIN:
            return f"interrupted again by {detail.get('signal')}: stopping at once"
    return str(kind)


def diagnosis_text(diagnosis: dict[str, object]) -> list[str]:
    """The evidence of a failure, a line each, as the text output and the report show it:

        exited with code 3 (container state: exited)
        health check exit 1: db not reachable
        last 2 log line(s):
          | starting
          | db not reachable
    """
    if diagnosis.get("gone"):
        return ["the replacement was already removed: nothing left to look at"]
    if "unavailable" in diagnosis:
        return [f"no diagnosis: {diagnosis['unavailable']}"]
    code = diagnosis.get("exit_code")
    lines = [f"still running (container state: {diagnosis.get('state')})" if code is None
             else f"exited with code {code} (container state: {diagnosis.get('state')})"]
    if diagnosis.get("oom_killed"):
        lines.append("killed by the kernel: out of memory")
    if diagnosis.get("error"):
        lines.append(f"engine error: {diagnosis['error']}")
    for check in diagnosis.get("health_checks") or []:  # type: ignore[attr-defined]
        output = " / ".join(part for part in str(check["output"]).splitlines() if part) or "(no output)"
        lines.append(f"health check exit {check['exit_code']}: {output}")
    for entry in diagnosis.get("task_history") or []:  # type: ignore[attr-defined]
        lines.append(f"task {entry['state']}" + (f": {entry['error']}" if entry.get("error") else ""))
    log = diagnosis.get("log") or []
    if log:
        lines.append(f"last {len(log)} log line(s):")  # type: ignore[arg-type]
        lines.extend(f"  | {text}" for text in log)  # type: ignore[attr-defined]
    else:
        lines.append("the log is empty")
    return lines


_REPLICA_WORDS: dict[EventKind, Callable[[dict[str, object]], str]] = {
    EventKind.REQUEST_SENT: lambda detail: _request_words(detail),
    EventKind.ACKNOWLEDGED: lambda detail: f"replacement {detail.get('replacement')} created",
    EventKind.UP: lambda detail: "replacement up",
    EventKind.SETTLED: lambda detail: "done",
    EventKind.FAILED: lambda detail: f"FAILED: {detail.get('reason')}",
    EventKind.SKIPPED: lambda detail: f"skipped: {detail.get('reason')}",
    EventKind.RETIRED: lambda detail: "old replica stopped and removed",
    EventKind.DISCARDED: lambda detail: f"failed replacement {detail.get('replacement')} removed",
    EventKind.ADOPTED: lambda detail: f"the dead rollout's replacement {detail.get('replacement')} counts as replaced",
    EventKind.CLEANUP_FAILED: lambda detail: f"cleanup failed: {detail.get('reason')}",
}


def _request_words(detail: dict[str, object]) -> str:
    if detail.get("refill"):
        return "making a new replica in place of one the dead rollout removed"
    return "restoring previous image" if detail.get("restore") else "redeploying"


def _plan_text(detail: dict[str, object]) -> str:
    targets = detail["targets"]
    assert isinstance(targets, list)
    timeouts = detail["timeout_s"]
    assert isinstance(timeouts, list)
    return "\n".join([
        f"rollover: {detail['where']}",
        f"  targets : {len(targets)} ({', '.join(str(name) for name in targets)})",
        f"  step    : {detail['step']} -> at most {detail['batch']} redeploying at a time, grace {detail['grace_s']}s",
        f"  order   : {detail['order']} ({detail['order_reason']})",
        f"  timeout : {'/'.join(f'{value:g}s' for value in timeouts)} per replacement;"
        f" on failure: {detail['on_failure']}",
    ])


def _summary_text(detail: dict[str, object]) -> str:
    text = (f"{detail['result']}: {detail['replaced']} replaced, {detail['failed']} failed, "
            f"{detail['rolled_back']} rolled back, {detail['skipped']} skipped in {detail['duration_s']:.1f}s")
    if detail.get("refilled"):
        text += f"; {detail['refilled']} missing replica(s) refilled"
    if detail.get("reason"):
        prefix = "" if detail["result"] == Outcome.INTERRUPTED else "first failure: "
        text += f" ({prefix}{detail['reason']})"
    for key, label in (("not_redeployed", "not redeployed"), ("in_flight", "in flight, fate unknown")):
        names = detail.get(key)
        if names:
            text += f"\n  {label}: {', '.join(str(name) for name in names)}"  # type: ignore[attr-defined]
    return text


def event_record(event: ProgressEvent) -> dict[str, object]:
    """An event as its JSON line has it (report/events.schema.json), before redaction."""
    record: dict[str, object] = {"event": str(event.kind), "t": event.at}
    if event.replica:
        record["replica"] = event.replica
    record.update(event.fields())
    return record


# json.dumps(..., default=str) makes an encoder per call; one serves every line.
_ENCODER = json.JSONEncoder(default=str)


class JsonReporter:
    """One JSON object per line per event. The summary is held back and printed by ``finish``,
    so it is always the last line, with the timeline in it when one was asked for."""

    def __init__(self, out: TextIO | None = None, redact: Redactor | None = None, flush: bool = True) -> None:
        self.out = out or sys.stdout
        self.redact = redact or Redactor()
        self.flush = flush  # as TextReporter.flush
        self.summary: dict[str, object] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        record = event_record(event)
        if event.kind == EventKind.SUMMARY:
            self.summary = record
        else:
            self._print(record)

    def _print(self, record: dict[str, object]) -> None:
        print(_ENCODER.encode(self.redact.value(record)), file=self.out, flush=self.flush)

    def finish(self, chart: str | None) -> None:
        if self.summary is None:
            return
        if chart is not None:
            lines = chart.split("\n")
            self.summary["timeline"] = {"rows": lines[:-1], "axis": lines[-1]}
        self._print(self.summary)
