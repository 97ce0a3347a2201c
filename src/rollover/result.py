"""What a rollout ended as: the result value the controller returns and the CLI reports."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass

from rollover.model import Order, ServiceSnapshot
from rollover.probe import ProbeReport
from rollover.rollout import Phase, RolloutState


@dataclass(frozen=True)
class RolloutResult:
    outcome: str  # completed | failed | rolled-back | paused | interrupted
    snapshot: ServiceSnapshot
    order: Order
    forward: RolloutState
    rollback: RolloutState | None
    started_at: float  # loop time of the start; every time in the states is on the same clock
    duration_s: float
    reason: str | None = None
    probe: ProbeReport | None = None

    @property
    def replaced(self) -> int:
        return self.forward.count(Phase.UP)

    @property
    def failed(self) -> int:
        return self.forward.count(Phase.FAILED)

    @property
    def rolled_back(self) -> int:
        return self.rollback.count(Phase.UP) if self.rollback else 0

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "interrupted": 130}.get(self.outcome, 1)


def probe_figures(report: ProbeReport) -> dict[str, object]:
    return {"sent": report.sent, "ok": report.ok, "failed": report.failed,
            "failures_by_kind": dict(report.failures_by_kind), "longest_gap_s": round(report.longest_gap_s, 3),
            "answers": dict(report.answers)}


def default_holder() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
