"""What a rollout ended as: the result value the controller returns and the CLI reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from rollover.core.model import Order, ServiceSnapshot
from rollover.core.policy import FailurePolicy
from rollover.core.probe_report import ProbeReport, latency_series, request_series
from rollover.core.rollout import IN_FLIGHT, Phase, RolloutState


class Outcome(StrEnum):
    """How a rollout ended; the value is the summary's ``result`` field and the text report's first word."""

    COMPLETED = "completed"  # every target replaced and up (exit 0)
    FAILED = "failed"  # failures left standing, a failed rollback, a lost engine, a cleanup or probe failure (exit 1)
    ROLLED_BACK = "rolled-back"  # a failure under 'rollback', and every replaced replica put back (exit 1)
    PAUSED = "paused"  # a failure under 'pause': everything left as it stood (exit 1)
    INTERRUPTED = "interrupted"  # stopped by SIGINT/SIGTERM (exit 130)


@dataclass(frozen=True)
class RolloutResult:
    outcome: Outcome
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
        return {Outcome.COMPLETED: 0, Outcome.INTERRUPTED: 130}.get(self.outcome, 1)


def first_failure(state: RolloutState) -> str | None:
    return next((item.failure for item in state.progress if item.phase is Phase.FAILED), None)


def conclude(forward: RolloutState, back: RolloutState | None, on_failure: FailurePolicy, *,
             interrupted_by: str | None, problems: Sequence[str], probe: ProbeReport | None,
             max_probe_failures: int | None, engine_lost: str | None = None,
             tolerated: int = 0) -> tuple[Outcome, str | None]:
    """The outcome and its reason, once the forward phase and any rollback (``back``) are over.

    ``engine_lost`` (why) ended the rollout where it stood, which fails it whatever else happened.
    ``problems`` are cleanups that failed after their replica's outcome: they fail a rollout that
    otherwise completed, as does a probe that saw more failed requests than allowed."""
    failure = first_failure(forward)
    if engine_lost is not None:
        outcome, failure = Outcome.FAILED, engine_lost
    elif interrupted_by is not None:
        outcome, failure = Outcome.INTERRUPTED, f"interrupted by {interrupted_by}"
    elif failure is None:
        outcome = Outcome.COMPLETED
    elif forward.count(Phase.FAILED) <= tolerated:
        # Within max_failure_ratio: the policy did not apply, but the service is not converged.
        outcome = Outcome.FAILED
        failure = (f"{forward.count(Phase.FAILED)} replacement(s) failed, within max_failure_ratio"
                   f" ({tolerated} tolerated): not {on_failure.value}; first: {failure}")
    elif on_failure is FailurePolicy.ROLLBACK:
        assert back is not None  # a failure under 'rollback' is always rolled back
        outcome = Outcome.ROLLED_BACK if back.count(Phase.FAILED) == 0 else Outcome.FAILED
        if outcome is Outcome.FAILED:
            failure = f"{failure}; the rollback failed too: {first_failure(back)}"
    else:
        outcome = Outcome.PAUSED if on_failure is FailurePolicy.PAUSE else Outcome.FAILED
    if problems and outcome is Outcome.COMPLETED:
        outcome, failure = Outcome.FAILED, problems[0]
    short = sum(1 for item in forward.progress if item.refill and item.phase is not Phase.UP)
    if short and failure is not None:
        failure = f"{failure}; the service is {short} replica(s) short: the dead rollout's gap was not refilled"
    limit = max_probe_failures
    if probe is not None and limit is not None and outcome is Outcome.COMPLETED and probe.failed > limit:
        outcome, failure = Outcome.FAILED, f"the probe saw {probe.failed} failed requests (limit {limit})"
    return outcome, failure


def summary_figures(result: RolloutResult) -> dict[str, object]:
    """The figures of the closing ``summary`` event, in the order they are shown."""
    forward = result.forward
    figures: dict[str, object] = {
        "replaced": result.replaced, "failed": result.failed, "rolled_back": result.rolled_back,
        "skipped": forward.count(Phase.SKIPPED), "duration_s": result.duration_s, "result": result.outcome,
        "refilled": sum(1 for item in forward.progress if item.refill and item.phase is Phase.UP),
        "reason": result.reason,
        "not_redeployed": [item.target.name for item in forward.progress if item.phase is Phase.WAITING],
    }
    # Only a lost engine ends a rollout with replacements in flight; their fate is unknown.
    in_flight = [item.target.name for state in (forward, result.rollback) if state is not None
                 for item in state.progress if item.phase in IN_FLIGHT]
    if in_flight:
        figures["in_flight"] = in_flight
    if result.probe is not None:
        figures["probe"] = {**probe_figures(result.probe),
                            "series": request_series(result.probe.samples, result.started_at),
                            "latency": latency_series(result.probe.samples, result.started_at)}
    return figures


def probe_figures(report: ProbeReport) -> dict[str, object]:
    return {"sent": report.sent, "ok": report.ok, "failed": report.failed,
            "failures_by_kind": dict(report.failures_by_kind), "longest_gap_s": round(report.longest_gap_s, 3),
            "answers": dict(report.answers)}
