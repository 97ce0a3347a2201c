"""PURE: a rollout's JSON events as a Gantt chart's rows: what each target replica did, when.

The HTML report draws these; they come from the events alone (``--output json`` lines, or the
same records in-process), so a saved run draws exactly like a live one. Times are seconds from
the plan. One row per target, its bars in order:

    serving    the old replica serves: from the start until it is retired (start-first) or until
               its redeploy is requested (stop-first: it goes first)
    request    the redeploy was asked of the platform, until acknowledged
    starting   the replacement exists and starts, until up (its health checks passed) or failed
    up         health checks passed, until admitted (with a balancer) or settled (after the grace period)
    admitted   in rotation (settled, without a balancer); it serves on
    draining   the old replica drains (drained event: it waited ``waited_s`` before it)
    restore    a rollback's request, starting and serving of the previous definition

plus marks: ``failed``, ``retired``, ``skipped``, ``rolled back``; and the balancer's view where it
tells one (the ``balancers`` of admitted, draining and drained events: HAProxy's server, its state
and its open sessions), a ``BalancerMark`` each, on the row of the replica it is about.

Worked example: request_sent web-1 at 0, acknowledged at 1, up at 11, settled at 11, retired at
11.2 -> serving [0, 11.2], request [0, 1], starting [1, 11], admitted [11, end], mark retired 11.2
(the up phase from 11 to 11 has no length and is not drawn).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Record = Mapping[str, object]


@dataclass(frozen=True)
class BalancerMark:
    """One balancer's word about a server of the row: 'haproxy web/spare1 ready' at 1.4 s."""

    event: str  # admitted, draining, drained
    at: float
    balancer: str
    server: str
    state: str
    sessions: int | None

    def text(self) -> str:
        counted = "" if self.sessions is None else f", {self.sessions} open session(s)"
        return f"{self.balancer} {self.server} {self.state}{counted}"


@dataclass
class GanttRow:
    name: str
    bars: list[tuple[str, float, float]] = field(default_factory=list)  # (phase, start, end)
    marks: list[tuple[str, float]] = field(default_factory=list)  # (what, when)
    balancer: list[BalancerMark] = field(default_factory=list)  # in the events' order

    def phases(self) -> list[str]:
        """The row's bars' phases, in the order they start (how the browser test reads a row)."""
        return [phase for phase, _start, _end in sorted(self.bars, key=_drawing_order)]


def _drawing_order(bar: tuple[str, float, float]) -> tuple[bool, float, float]:
    """The old replica's serving bar first (it is the row's background), then by start."""
    phase, start, end = bar
    return phase != "serving", start, end


@dataclass
class _Open:
    """What is under way on a row: the phase and since when."""

    phase: str | None = None
    since: float = 0.0
    restoring: bool = False  # a rollback's restore is under way (its request_sent said restore)


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _balancer_marks(record: Record, at: float) -> list[BalancerMark]:
    views = record.get("balancers")
    if record.get("event") not in ("admitted", "draining", "drained") or not isinstance(views, list):
        return []
    marks = []
    for view in views:
        if isinstance(view, dict):
            sessions = view.get("sessions")
            marks.append(BalancerMark(str(record["event"]), at, str(view.get("balancer")), str(view.get("server")),
                                      str(view.get("state")), sessions if isinstance(sessions, int) else None))
    return marks


def gantt_rows(records: Iterable[Record]) -> tuple[list[GanttRow], float]:
    """The rows, in the plan's target order, and the chart's end (the summary's duration)."""
    records = list(records)
    plan = next((record for record in records if record.get("event") == "plan"), {})
    targets = [str(name) for name in plan.get("targets", [])]  # type: ignore[attr-defined]
    stop_first = plan.get("order") == "stop-first"
    end = max([_float(record.get("t")) for record in records] + [0.0])
    summary = next((record for record in records if record.get("event") == "summary"), None)
    if summary is not None:
        end = max(end, _float(summary.get("duration_s")))
    rows = {name: GanttRow(name) for name in targets}
    row_of = {name: name for name in targets}  # a replacement's name -> its target's row
    open_bars = {name: _Open() for name in targets}
    serving_until: dict[str, float] = {}
    for record in records:
        replica = str(record.get("replica", ""))
        if replica not in row_of:
            continue
        name = row_of[replica]
        row, state, at = rows[name], open_bars[name], _float(record.get("t"))
        kind = record.get("event")
        row.balancer.extend(_balancer_marks(record, at))
        if kind == "request_sent" and record.get("restore"):
            state.restoring = True
        restore = state.restoring

        def close(next_phase: str | None, row: GanttRow = row, state: _Open = state, at: float = at) -> None:
            if state.phase is not None and at > state.since:  # a phase of no length is not drawn
                row.bars.append((state.phase, state.since, at))
            state.phase, state.since = next_phase, at

        if kind == "request_sent":
            if stop_first and not restore:
                serving_until[name] = at
            close("restore request" if restore else "request")
        elif kind == "acknowledged":
            row_of[str(record.get("replacement"))] = name
            close("restore starting" if restore else "starting")
        elif kind == "up":
            close("restore serving" if restore else "up")
        elif kind in ("admitted", "settled") and state.phase == "up":
            close("admitted")
        elif kind == "failed":
            close(None)
            row.marks.append(("failed", at))
        elif kind == "skipped":
            close(None)
            row.marks.append(("skipped", at))
        elif kind == "drained":
            row.bars.append(("draining", at - _float(record.get("waited_s")), at))
        elif kind == "retired" and not restore:
            serving_until.setdefault(name, at)
            row.marks.append(("retired", at))
        elif kind == "discarded":
            row.marks.append(("discarded", at))
    for record in records:
        if record.get("event") == "rollback":
            for name in record.get("replicas", []):  # type: ignore[attr-defined]
                if name in rows:
                    rows[name].marks.append(("rolled back", _float(record.get("t"))))
    for name, row in rows.items():
        state = open_bars[name]
        if state.phase is not None and end > state.since:
            row.bars.append((state.phase, state.since, end))
        row.bars.insert(0, ("serving", 0.0, serving_until.get(name, end)))
    return [rows[name] for name in targets], end


@dataclass
class BalancerLane:
    """One balancer server across the rollout, as the balancer told it: its states in turn.

    Worked example: web/web1 carries the old web-1 (in rotation before the plan: 'ready' from 0),
    drained at 4.80 s with 2 then 0 sessions and out at 4.82 s -> segments ready [0, 4.80],
    drain [4.80, 4.82] (sessions [2, 0]), maint [4.82, end].
    """

    server: str  # "haproxy web/web1"
    segments: list[tuple[str, float, float, list[int], str]] = field(default_factory=list)
    # (state, start, end, the sessions counted in it, the row it was about)

    def states(self) -> list[str]:
        return [state for state, *_rest in self.segments]


def balancer_lanes(rows: Iterable[GanttRow], end: float) -> list[BalancerLane]:
    """A lane per server the balancers named, in the order they were first named."""
    marks = sorted(((mark, row.name) for row in rows for mark in row.balancer), key=lambda item: item[0].at)
    lanes: dict[str, BalancerLane] = {}
    for mark, row_name in marks:
        key = f"{mark.balancer} {mark.server}"
        lane = lanes.setdefault(key, BalancerLane(key))
        counted = [mark.sessions] if mark.sessions is not None else []
        if lane.segments and lane.segments[-1][0] == mark.state:
            lane.segments[-1][3].extend(counted)
            continue
        if lane.segments:
            state, start, _end, sessions, about = lane.segments[-1]
            lane.segments[-1] = (state, start, mark.at, sessions, about)
        elif mark.state != "ready":  # first named leaving rotation: it served from before the plan
            lane.segments.append(("ready", 0.0, mark.at, [], row_name))
        lane.segments.append((mark.state, mark.at, end, counted, row_name))
    return list(lanes.values())
