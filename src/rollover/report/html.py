"""The HTML report: one self-contained file (inline SVG, CSS and a few lines of JS; no network) that
draws a rollout from its JSON events on one time axis: a Gantt row per target replica, the balancer's
view (a lane per server it named, by state, where it tells: HAProxy), the probe's
requests per 100 ms by outcome and its latency (p50/p99 per second); below, the plan, the summary
and every event (failures with their diagnosis).

``--report FILE.html`` on ``redeploy``/``simulate`` and ``rollover report EVENTS.jsonl -o FILE.html``
both come here, with the same records the JSON output prints (already redacted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from html import escape

from rollover.core.gantt import BalancerLane, GanttRow, balancer_lanes, gantt_rows
from rollover.core.model import ProgressEvent
from rollover.errors import InvalidOption, RolloverError
from rollover.report.output import diagnosis_text, event_record
from rollover.report.redact import Redactor

Record = Mapping[str, object]

LABEL_W, CHART_W, ROW_H, PANEL_H, LANE_H = 190, 900, 22, 90, 14
COLOURS = {
    "serving": "#9db4c8", "request": "#f0c36d", "starting": "#7fb3e6", "up": "#a8d5a2", "admitted": "#3f9b4a",
    "draining": "#e38d2c", "restore request": "#d7b4f0", "restore starting": "#b58ad8", "restore serving": "#7d4fa8",
}
MARKS = {"failed": ("✕", "#c0392b"), "retired": ("■", "#555"), "skipped": ("s", "#777"),
         "discarded": ("⌫", "#c0392b"), "rolled back": ("R", "#7d4fa8")}
# The balancer's view (HAProxy's server state), a small triangle under the row: its colour is the state.
VIEW_COLOURS = {"ready": "#2e7d32", "drain": "#e38d2c", "maint": "#555"}
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} h3{font-size:14px;margin:16px 0 6px}
.ok{color:#2e7d32} .bad{color:#c0392b}
table{border-collapse:collapse} td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
#events td{font-family:ui-monospace,monospace;font-size:12px;border-top:1px solid #eee}
pre{margin:2px 0;font-size:12px;background:#f6f6f6;padding:4px}
.legend span{display:inline-block;margin-right:14px} .legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:-2px}
#tip{position:fixed;background:#222;color:#fff;padding:3px 6px;font-size:12px;border-radius:3px;display:none}
svg text{font:11px system-ui,sans-serif}
"""
_JS = """
const tip=document.getElementById('tip');
document.querySelectorAll('[data-tip]').forEach(el=>{
  el.addEventListener('mousemove',e=>{tip.textContent=el.dataset.tip;tip.style.display='block';
    tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';});
  el.addEventListener('mouseleave',()=>{tip.style.display='none';});
});
"""


def render_report(records: Sequence[Record]) -> str:
    """The page of one rollout, or of a ``rollover up`` run (a project plan among the records)."""
    if any(record.get("event") == "project_plan" for record in records):
        return render_project_report(records)
    plan = next((record for record in records if record.get("event") == "plan"), {})
    summary = next((record for record in records if record.get("event") == "summary"), {})
    title = f"rollover: {plan.get('service', '?')} {summary.get('result', 'unfinished')}"
    return _page(title, [f"<h1>{escape(str(plan.get('where', plan.get('service', ''))))}</h1>",
                         *_rollout(records), "<h2>Events</h2>", _events(records)])


def render_project_report(records: Sequence[Record]) -> str:
    """``rollover up``: the project's plan and summary, then a section per rolled service drawn like
    a rollout of its own (its events carry ``service``; their times count from its own plan)."""
    plan = next((record for record in records if record.get("event") == "project_plan"), {})
    summary = next((record for record in records if record.get("event") == "project_summary"), {})
    result = str(summary.get("result", "unfinished"))
    project = str(plan.get("project", "?"))
    parts = [f"<h1>rollover up: {escape(project)}</h1>",
             f"<div id=result class={'ok' if result == 'completed' else 'bad'}>{escape(result)}"
             f" in {_seconds(summary.get('duration_s')):.1f}s</div>",
             "<h2>Services</h2>", _services_table(summary.get("services") or plan.get("services"))]
    rolled = [str(item["service"]) for item in plan.get("services", []) if item.get("action") == "roll"]  # type: ignore[attr-defined]
    for service in rolled:
        own = [record for record in records if record.get("service") == service and record.get("event") not in (
            "service_done", "project_plan", "project_summary")]
        if not any(record.get("event") == "plan" for record in own):
            continue  # blocked or interrupted before its plan: nothing was drawn
        parts += [f"<section class=service data-service='{escape(service, quote=True)}'>",
                  f"<h2>{escape(service)}</h2>", *_rollout(own), "</section>"]
    parts += ["<h2>Events</h2>", _events(records)]
    return _page(f"rollover up: {project} {result}", parts)


def _services_table(services: object) -> str:
    if not isinstance(services, list):
        return ""
    keys = ("service", "action", "result", "replaced", "failed", "duration_s", "reason")
    head = "".join(f"<th>{key}</th>" for key in keys)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(item.get(key))}</td>" for key in keys) + "</tr>"
                   for item in services if isinstance(item, dict))
    return f"<table id=services><tr>{head}</tr>{rows}</table>"


def _page(title: str, parts: Sequence[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        *parts,
        f"<div id=tip></div><script>{_JS}</script></body></html>",
    ])


def _rollout(records: Sequence[Record]) -> list[str]:
    """One rollout on its time axis: the result, the chart (Gantt and probe), the plan and summary."""
    rows, end = gantt_rows(records)
    plan = next((record for record in records if record.get("event") == "plan"), {})
    summary = next((record for record in records if record.get("event") == "summary"), {})
    found = summary.get("probe")
    probe: Mapping[str, object] | None = found if isinstance(found, dict) else None
    series = probe.get("series") if probe is not None else None
    if isinstance(series, dict):  # the probe stops after the last event: its last bars stay on the axis
        end = max(end, len(series["ok"]) * float(series["bucket_s"]))
    result = str(summary.get("result", "unfinished"))
    return [
        f"<div class='rollout-result {'ok' if result == 'completed' else 'bad'}'>"
        f"{escape(_summary_line(summary))}</div>",
        _legend(),
        _chart(rows, end, probe),
        "<h3>Plan</h3>", _table(plan, skip=("event", "t")),
        "<h3>Summary</h3>", _table(summary, skip=("event", "t", "probe", "timeline")),
        _probe_table(probe),
    ]


def _summary_line(summary: Record) -> str:
    if not summary:
        return "no summary: the run did not finish"
    return (f"{summary.get('result')}: {summary.get('replaced')} replaced, {summary.get('failed')} failed, "
            f"{summary.get('rolled_back')} rolled back in {_seconds(summary.get('duration_s')):.1f}s"
            + (f" ({summary['reason']})" if summary.get("reason") else ""))


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _legend() -> str:
    items = [f"<span><i style='background:{colour}'></i>{escape(phase)}</span>" for phase, colour in COLOURS.items()]
    items += [f"<span style='color:{colour}'>{symbol} {escape(what)}</span>"
              for what, (symbol, colour) in MARKS.items()]
    items += [f"<span style='color:{colour}'>▴ balancer: {state}</span>" for state, colour in VIEW_COLOURS.items()]
    return f"<div class=legend>{''.join(items)}</div>"


def _x(moment: float, end: float) -> float:
    return round(LABEL_W + CHART_W * (moment / end if end > 0 else 0.0), 2)


def _ticks(end: float) -> list[float]:
    """About ten round ticks: 37 s -> every 5 s (0, 5, ..., 35)."""
    raw = max(end, 0.1) / 10
    step = next(candidate for candidate in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                if candidate >= raw)
    return [round(index * step, 3) for index in range(int(end / step) + 1)]


def _chart(rows: Sequence[GanttRow], end: float, probe: Mapping[str, object] | None) -> str:
    gantt_h = ROW_H * len(rows)
    lanes = balancer_lanes(rows, end)
    lanes_h = (20 + LANE_H * len(lanes)) if lanes else 0
    panels = 2 if probe is not None and "series" in probe else 0
    height = 20 + gantt_h + lanes_h + panels * (PANEL_H + 20) + 20
    out = [f"<svg class=chart xmlns='http://www.w3.org/2000/svg' width={LABEL_W + CHART_W + 20} height={height}>"]
    for tick in _ticks(end):
        x = _x(tick, end)
        out.append(f"<line x1={x} x2={x} y1=14 y2={height - 16} stroke='#e4e4e4'/>"
                   f"<text x={x} y={height - 4} text-anchor=middle>{tick:g}s</text>")
    for index, row in enumerate(rows):
        out.append(_gantt_row(row, 20 + index * ROW_H, end))
    if lanes:
        out.append(_balancer_panel(lanes, 20 + gantt_h + 20, end))
    if panels:
        assert probe is not None
        top = 20 + gantt_h + lanes_h + 20
        out.append(_requests_panel(probe, top, end))
        out.append(_latency_panel(probe, top + PANEL_H + 20, end))
    out.append("</svg>")
    return "\n".join(out)


def _gantt_row(row: GanttRow, y: int, end: float) -> str:
    phases = " ".join(phase.replace(" ", "-") for phase in row.phases())
    out = [f"<g class=gantt-row data-replica='{escape(row.name, quote=True)}' data-phases='{phases}'>",
           f"<text x=4 y={y + 15}>{escape(row.name)}</text>"]
    for phase, start, stop in row.bars:
        thin = phase in ("serving", "draining")
        x, width = _x(start, end), max(1.0, round(_x(stop, end) - _x(start, end), 2))
        top, h = (y + 14, 5) if thin else (y + 3, 14)
        out.append(f"<rect class='bar' data-phase='{phase.replace(' ', '-')}' x={x} y={top} width={width} height={h}"
                   f" fill='{COLOURS[phase]}' data-tip='{escape(row.name)}: {phase} {start:.2f}s → {stop:.2f}s'/>")
    for what, moment in row.marks:
        symbol, colour = MARKS[what]
        out.append(f"<text class=mark data-mark='{what.replace(' ', '-')}' x={_x(moment, end)} y={y + 15}"
                   f" fill='{colour}' text-anchor=middle data-tip='{escape(row.name)}: {what} at {moment:.2f}s'>"
                   f"{symbol}</text>")
    out.extend(_balancer_view(row, y, end))
    out.append("</g>")
    return "\n".join(out)


def _balancer_view(row: GanttRow, y: int, end: float) -> list[str]:
    """What the balancer said about the row's servers (admitted, each open-session count while
    draining, drained), at the bottom edge of the row, its tip in the balancer's words."""
    out = []
    for mark in row.balancer:
        x = _x(mark.at, end)
        sessions = "" if mark.sessions is None else f" data-sessions={mark.sessions}"
        out.append(f"<path class=view data-event={mark.event} data-state='{escape(mark.state, quote=True)}'"
                   f" data-server='{escape(mark.server, quote=True)}'{sessions}"
                   f" d='M{x},{y + 16} l-3.5,5 h7 z' fill='{VIEW_COLOURS.get(mark.state, '#000')}'"
                   f" data-tip='{escape(row.name, quote=True)}: {mark.event} at {mark.at:.2f}s,"
                   f" {escape(mark.text(), quote=True)}'/>")
    return out


def _balancer_panel(lanes: Sequence[BalancerLane], top: int, end: float) -> str:
    """The balancer's view: a lane per server it named, coloured by the state it was put in, on the
    same axis as the Gantt rows above (a drain of a few ms is drawn 3 px wide, to be seen)."""
    out = [f"<g class=balancer-view><text x=4 y={top - 6} font-weight=bold>balancer</text>"]
    for index, lane in enumerate(lanes):
        y = top + index * LANE_H
        out.append(f"<g class=balancer-lane data-server='{escape(lane.server, quote=True)}'"
                   f" data-states='{' '.join(lane.states())}'><text x=4 y={y + 10}>{escape(lane.server)}</text>")
        for state, start, stop, sessions, about in lane.segments:
            x = _x(start, end)
            width = max(3.0, round(_x(stop, end) - x, 2)) if state == "drain" else max(0.5, round(_x(stop, end) - x, 2))
            counted = f", sessions {' → '.join(str(count) for count in sessions)}" if sessions else ""
            tip = f"{lane.server}: {state} {start:.2f}s → {stop:.2f}s ({about}){counted}"
            out.append(f"<rect class=lane-state data-state={state} x={x} y={y + 2} width={width} height=9"
                       f" fill='{VIEW_COLOURS.get(state, '#000')}' fill-opacity={0.35 if state == 'maint' else 1}"
                       f" data-tip='{escape(tip, quote=True)}'/>")
        out.append("</g>")
    out.append("</g>")
    return "\n".join(out)


def _requests_panel(probe: Mapping[str, object], top: int, end: float) -> str:
    series = probe["series"]
    assert isinstance(series, dict)
    ok: list[int] = series["ok"]
    failed: dict[str, list[int]] = series["failed"]
    width_s = float(series["bucket_s"])
    totals = [ok_count + sum(kind[index] for kind in failed.values()) for index, ok_count in enumerate(ok)]
    peak = max(totals, default=0) or 1
    failed_sum = sum(sum(kind) for kind in failed.values())
    out = [f"<g class=probe-requests data-ok='{sum(ok)}' data-failed='{failed_sum}'>",
           f"<text x=4 y={top + 12}>probe requests</text><text x=4 y={top + 26}>per {width_s * 1000:g} ms</text>",
           f"<text x=4 y={top + 40} class=ok>ok {sum(ok)}</text>"
           f"<text x=4 y={top + 54} class=bad>failed {failed_sum}</text>"]
    for index, ok_count in enumerate(ok):
        x = _x(index * width_s, end)
        bar_w = max(0.5, round(_x((index + 1) * width_s, end) - x - 0.3, 2))
        bad = sum(kind[index] for kind in failed.values())
        ok_h = round(PANEL_H * ok_count / peak, 2)
        bad_h = round(PANEL_H * bad / peak, 2)
        tip = f"{index * width_s:.1f}s: ok {ok_count}, failed {bad}"
        out.append(f"<rect x={x} y={top + PANEL_H - ok_h} width={bar_w} height={ok_h} fill='#3f9b4a'"
                   f" data-tip='{tip}'/>")
        if bad:
            out.append(f"<rect x={x} y={top + PANEL_H - ok_h - bad_h} width={bar_w} height={bad_h} fill='#c0392b'"
                       f" data-tip='{tip}'/>")
    out.append("</g>")
    return "\n".join(out)


def _latency_panel(probe: Mapping[str, object], top: int, end: float) -> str:
    latency = probe.get("latency")
    if not isinstance(latency, dict):
        return ""
    width_s = float(latency["bucket_s"])
    values = [value for key in ("p50_ms", "p99_ms") for value in latency[key] if value is not None]
    peak = max(values, default=0) or 1
    out = [f"<g class=probe-latency><text x=4 y={top + 12}>latency (ms)</text>"
           f"<text x=4 y={top + 26} fill='#1f6fb5'>p50</text><text x=34 y={top + 26} fill='#c0392b'>p99</text>"
           f"<text x=4 y={top + 40}>peak {peak:g} ms</text>"]
    for key, colour in (("p50_ms", "#1f6fb5"), ("p99_ms", "#c0392b")):
        points = [f"{_x((index + 0.5) * width_s, end)},{round(top + PANEL_H - PANEL_H * value / peak, 2)}"
                  for index, value in enumerate(latency[key]) if value is not None]
        if points:
            out.append(f"<polyline class='{key}' fill=none stroke='{colour}' stroke-width=1.5"
                       f" points='{' '.join(points)}'/>")
    out.append("</g>")
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, (list, dict)):
        return escape(json.dumps(value))
    return escape("" if value is None else str(value))


def _table(record: Record, skip: Sequence[str]) -> str:
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{_cell(value)}</td></tr>"
                   for key, value in record.items() if key not in skip)
    return f"<table>{rows}</table>"


def _probe_table(probe: Mapping[str, object] | None) -> str:
    if probe is None:
        return ""
    shown = {key: value for key, value in probe.items() if key not in ("series", "latency")}
    return "<h3>Probe</h3>" + _table(shown, skip=())


def _events(records: Sequence[Record]) -> str:
    out = ["<table id=events><tr><th>t (s)</th><th>event</th><th>replica</th><th>details</th></tr>"]
    for record in records:
        rest = {key: value for key, value in record.items()
                if key not in ("event", "t", "replica", "diagnosis", "probe", "timeline")}
        details = _cell(rest) if rest else ""
        diagnosis = record.get("diagnosis")
        if isinstance(diagnosis, dict):
            details += f"<pre class=diagnosis>{escape(chr(10).join(diagnosis_text(diagnosis)))}</pre>"
        out.append(f"<tr class='event-{escape(str(record.get('event')))}'><td>{_cell(record.get('t'))}</td>"
                   f"<td>{_cell(record.get('event'))}</td><td>{_cell(record.get('replica', ''))}</td>"
                   f"<td>{details}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


class Recorder:
    """Keeps every event as the JSON output would print it (redacted), for ``--report``."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact
        self.records: list[dict[str, object]] = []

    def __call__(self, event: ProgressEvent) -> None:
        redacted = self.redact.value(event_record(event))
        assert isinstance(redacted, dict)
        self.records.append(redacted)


def check_report_path(path: str) -> None:
    """Bad input before anything is touched: the report's folder must exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidOption(f"report {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise InvalidOption(f"report {path}: is a folder")


def write_report(path: str, records: Sequence[Record]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render_report(records))
    except OSError as exc:
        raise RolloverError(f"could not write the report {path}: {exc.strerror or exc}") from exc


def read_events(path: str) -> list[dict[str, object]]:
    """A saved ``--output json`` run: one JSON object per line; anything else is bad input."""
    try:
        with open(path, encoding="utf-8") as source:
            lines = source.read().splitlines()
    except OSError as exc:
        raise InvalidOption(f"events {path}: {exc.strerror or exc}") from exc
    records: list[dict[str, object]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidOption(f"events {path}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or "event" not in record:
            raise InvalidOption(f"events {path}, line {number}: not a rollover event")
        records.append(record)
    if not any(record["event"] in ("plan", "project_plan") for record in records):
        raise InvalidOption(f"events {path}: no plan event: not the output of 'rollover ... --output json'")
    return records
