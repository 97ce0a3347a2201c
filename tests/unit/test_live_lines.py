"""The live view's replica lines, fed with events as a rollout emits them: health checks passed N /
expected M while a replacement starts, and the open connections while the old replica drains (where
the balancer counts them; the phase alone where it cannot)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.report.live import LiveReporter
from rollover.report.redact import Redactor


def _event(kind: EventKind, at: float, replica: str = "", **fields: object) -> ProgressEvent:
    return ProgressEvent(kind, at, replica, tuple(fields.items()))


def _line(live: LiveReporter, replica: str) -> str:
    """The replica's line on the live area, its seconds-in-phase cut off."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(live)
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    found = [line.strip() for line in screen.splitlines() if line.strip().startswith(replica + "  ")]
    assert len(found) <= 1, screen
    return re.sub(r"  \d+\.\ds$", "", found[0]) if found else ""


def _live(*targets: str) -> LiveReporter:
    live = LiveReporter(io.StringIO(), Redactor())
    live(_event(EventKind.PLAN, 0.0, service="web", platform="compose", where="web", targets=list(targets),
                step="1", batch=1, order="start-first", order_reason="default", grace_s=0, timeout_s=[20],
                on_failure="rollback"))
    return live


VIEW = {"balancer": "haproxy", "server": "web/web1", "state": "drain"}


def test_a_replacement_with_a_healthcheck_passes_one_check_then_its_old_replica_drains() -> None:
    live = _live("web-1", "web-2")
    try:
        live(_event(EventKind.REQUEST_SENT, 0.1, "web-1", restore=False, refill=False))
        assert _line(live, "web-1") == "web-1  requesting"
        live(_event(EventKind.ACKNOWLEDGED, 0.3, "web-1", replacement="web-3", replacement_id="abc",
                    health_checks_needed=1))
        assert _line(live, "web-1") == "web-1  starting, health checks passed 0/1"
        live(_event(EventKind.UP, 1.3, "web-1", grace_s=0))
        assert _line(live, "web-1") == "web-1  health checks passed 1/1, admitting"
        live(_event(EventKind.ADMITTED, 1.4, "web-1", replacement="web-3",
                    balancers=[{"balancer": "haproxy", "server": "web/spare1", "state": "ready"}]))
        live(_event(EventKind.SETTLED, 1.4, "web-1", reason=None))
        live(_event(EventKind.DRAINING, 1.5, "web-1"))
        assert _line(live, "web-1") == "web-1  draining"
        live(_event(EventKind.DRAINING, 1.5, "web-1", sessions=3, balancers=[{**VIEW, "sessions": 3}]))
        assert _line(live, "web-1") == "web-1  draining, 3 open connections (haproxy web/web1)"
        live(_event(EventKind.DRAINING, 1.8, "web-1", sessions=1, balancers=[{**VIEW, "sessions": 1}]))
        assert _line(live, "web-1") == "web-1  draining, 1 open connection (haproxy web/web1)"
        live(_event(EventKind.DRAINED, 2.0, "web-1", sessions_left=0, waited_s=0.5,
                    balancers=[{**VIEW, "state": "maint", "sessions": 0}]))
        assert _line(live, "web-1") == "web-1  drained (0 open connections left), stopping"
        live(_event(EventKind.RETIRED, 2.2, "web-1"))
        assert _line(live, "web-1") == ""
        assert _line(live, "web-2") == ""  # never in flight
    finally:
        live.close()


def test_without_a_healthcheck_or_a_counting_balancer_the_phase_alone_is_told() -> None:
    live = _live("web-1")
    try:
        live(_event(EventKind.REQUEST_SENT, 0.1, "web-1", restore=False, refill=False))
        live(_event(EventKind.ACKNOWLEDGED, 0.3, "web-1", replacement="web-2", replacement_id="abc",
                    health_checks_needed=0))
        assert _line(live, "web-1") == "web-1  starting, no healthcheck: up once running"
        live(_event(EventKind.UP, 0.5, "web-1", grace_s=0))
        assert _line(live, "web-1") == "web-1  running (no healthcheck), admitting"
        live(_event(EventKind.SETTLED, 0.6, "web-1", reason=None))
        live(_event(EventKind.DRAINING, 0.6, "web-1"))  # e.g. Caddy or a pre-stop hook: no count
        assert _line(live, "web-1") == "web-1  draining"
    finally:
        live.close()
