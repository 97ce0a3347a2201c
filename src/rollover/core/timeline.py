"""PURE: draw a rollout in the seed's chart notation.

One row per target replica, one column per second (per 0.1 s when the rollout took under 10 s,
per ``scale`` seconds when long):

    -   running, or sending the redeploy request (until the platform acknowledges it)
    _   redeploying (the replacement exists and is starting)
    |   up (healthy, or running when there is no healthcheck)
    x   failed          s  skipped (removed before its turn)
    R   put back on its previous image by a rollback (after its own '-' and '_' run)

The axis line lists ticks in the seed's compact form, ``|0 |25``: the start, any reference
marks asked for, and the column after the last event. The seed's three charts (10 replicas,
1 s per request, 10 s per redeploy) come out character for character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_COLUMNS = 120


@dataclass(frozen=True)
class Segment:
    """One pass of a replica through a redeploy; times in seconds from the start."""

    requested_at: float | None
    acked_at: float | None
    up_at: float | None
    failed_at: float | None = None
    skipped_at: float | None = None
    up_mark: str = "|"


@dataclass(frozen=True)
class Row:
    name: str
    segments: tuple[Segment, ...]


def _last_time(rows: Sequence[Row]) -> float:
    moments = [
        moment
        for row in rows
        for segment in row.segments
        for moment in (segment.requested_at, segment.acked_at, segment.up_at, segment.failed_at,
                       segment.skipped_at)
        if moment is not None
    ]
    return max(moments, default=0.0)


# Below this many seconds a chart of one column per second says almost nothing (a 3 s rollout is
# three columns): it gets FINE_SCALE seconds per column instead, and says so on its axis.
FINE_BELOW_S = 10.0
FINE_SCALE = 0.1


def choose_scale(rows: Sequence[Row], max_columns: int = MAX_COLUMNS) -> float:
    """Seconds per column: 0.1 below 10 s, 1 while the chart fits, else the smallest whole number that fits.

    Last event at 3.2 s -> 0.1 s each (33 columns); at 100 s -> 101 columns -> 1 s each;
    at 300 s -> ceil(301 / 120) = 3 s each.
    """
    last = _last_time(rows)
    if last < FINE_BELOW_S:
        return FINE_SCALE
    columns = math.floor(last) + 1
    return max(1, math.ceil(columns / max_columns))


def _column(moment: float, scale: float) -> int:
    return math.floor(moment / scale + 1e-9)


def _draw_segment(line: list[str], segment: Segment, scale: float) -> None:
    """Extend ``line`` with one segment: '-' until acknowledged, '_' until up, then the mark."""
    end_moment = next(
        (moment for moment in (segment.up_at, segment.failed_at, segment.skipped_at) if moment is not None), None
    )
    if end_moment is None:
        return
    mark = segment.up_mark if segment.up_at is not None else ("x" if segment.failed_at is not None else "s")
    end = _column(end_moment, scale)
    ack = _column(segment.acked_at, scale) if segment.acked_at is not None else end
    while len(line) < min(ack, end):
        line.append("-")
    while len(line) < end:
        line.append("_")
    line.append(mark)


def render_rows(rows: Sequence[Row], scale: float) -> list[str]:
    """A replica never touched (the rollout stopped before its turn) runs on: '-' to the end."""
    last = _column(_last_time(rows), scale)
    lines = []
    for row in rows:
        line: list[str] = []
        for segment in row.segments:
            _draw_segment(line, segment, scale)
        if not line:
            line = ["-"] * (last + 1)
        lines.append("".join(line))
    return lines


def render_axis(rows: Sequence[Row], scale: float, marks: Sequence[float] = ()) -> str:
    """'|0 |25': the start, the reference marks inside the chart, the column after the last event.

    Labels are seconds: with 3 s per column a chart ending in column 40 is labelled |123; with
    0.1 s per column one ending in column 31 is labelled |3.2, and the axis says the scale.
    """
    end = round((_column(_last_time(rows), scale) + 1) * scale, 6)
    precision = 1 if scale < 1 else 0
    ticks = sorted({0, *(round(mark, precision) for mark in marks if 0 < mark < end), end})
    axis = " ".join(f"|{tick:g}" for tick in ticks)
    if scale != 1:
        axis += f"  (1 column = {scale:g}s)"
    return axis


def render(rows: Sequence[Row], marks: Sequence[float] = (), max_columns: int = MAX_COLUMNS) -> str:
    scale = choose_scale(rows, max_columns)
    return "\n".join([*render_rows(rows, scale), render_axis(rows, scale, marks)])
