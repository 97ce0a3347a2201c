"""Safety properties of the whole controller on the simulator, for generated rollouts.

Something bad never happens: never more than the step (plus freed slots) in redeployment; every
target redeployed exactly once; the service never drops below N - step ready replicas (N with
start-first); failures never lose a replica.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller.loop import Controller
from rollover.core.model import ProgressEvent
from rollover.core.policy import FailurePolicy, OrderChoice, Policy, batch_size, parse_step
from rollover.core.result import RolloutResult

steps = st.one_of(
    st.integers(1, 6).map(str),
    st.integers(1, 100).map(lambda value: f"{value}%"),
    st.sampled_from(["half", "all"]),
)
orders = st.sampled_from([OrderChoice.START_FIRST, OrderChoice.STOP_FIRST])


@st.composite
def rollouts(draw: st.DrawFn, failures: bool = False) -> dict[str, object]:
    replicas = draw(st.integers(1, 12))
    request = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    return {
        "replicas": replicas,
        "step": draw(steps),
        "request": request,
        "redeploy": request + draw(st.sampled_from([0.5, 3.0, 10.0])),
        "grace": draw(st.sampled_from([0.0, 1.0, 4.0])),
        "order": draw(orders),
        "extra_at": tuple(draw(st.lists(st.floats(0, 60).map(lambda t: round(t, 1)), max_size=3))),
        "fail": tuple(draw(st.sets(st.integers(1, replicas), max_size=3))) if failures else (),
        "on_failure": draw(st.sampled_from(list(FailurePolicy))) if failures else FailurePolicy.ROLLBACK,
    }


def run(case: dict[str, object]) -> tuple[RolloutResult, SimBackend, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    policy = Policy(step=parse_step(str(case["step"])), grace_s=float(case["grace"]),  # type: ignore[arg-type]
                    order=case["order"], on_failure=case["on_failure"])  # type: ignore[arg-type]

    async def main() -> tuple[RolloutResult, SimBackend]:
        backend = SimBackend(case["replicas"], case["request"], case["redeploy"],  # type: ignore[arg-type]
                             fail_replicas=case["fail"], extra_at=case["extra_at"])  # type: ignore[arg-type]
        return await Controller(backend, policy, report=events.append).run(), backend

    result, backend = run_virtual(main())
    return result, backend, events


def _max_in_flight_over_allowance(events: list[ProgressEvent], batch: int, extra_at: tuple[float, ...]) -> int:
    in_flight: set[str] = set()
    worst = -batch
    for event in events:
        if event.kind == "rollback":
            break  # the rollback phase is its own rollout
        if event.kind == "request_sent":
            in_flight.add(event.replica)
            extras = sum(1 for moment in extra_at if moment <= event.at)
            worst = max(worst, len(in_flight) - (batch + extras))
        elif event.kind in ("settled", "failed"):
            in_flight.discard(event.replica)
    return worst


@settings(max_examples=300, deadline=None)
@given(rollouts())
def test_never_more_than_step_in_flight_and_each_target_exactly_once(case: dict[str, object]) -> None:
    result, _, events = run(case)
    replicas = int(case["replicas"])  # type: ignore[call-overload]
    batch = batch_size(parse_step(str(case["step"])), replicas)
    assert _max_in_flight_over_allowance(events, batch, case["extra_at"]) <= 0  # type: ignore[arg-type]
    sent = Counter(event.replica for event in events if event.kind == "request_sent")
    assert sent == Counter({f"app-{number}": 1 for number in range(1, replicas + 1)})
    assert result.outcome == "completed" and result.replaced == replicas


@settings(max_examples=300, deadline=None)
@given(rollouts())
def test_ready_replicas_never_drop_below_n_minus_step(case: dict[str, object]) -> None:
    _, backend, _ = run(case)
    replicas = int(case["replicas"])  # type: ignore[call-overload]
    batch = batch_size(parse_step(str(case["step"])), replicas)
    floor = replicas if case["order"] is OrderChoice.START_FIRST else replicas - batch
    assert backend.state.min_ready >= floor


@settings(max_examples=300, deadline=None)
@given(rollouts(failures=True))
def test_failures_never_lose_a_replica(case: dict[str, object]) -> None:
    result, backend, _ = run(case)
    replicas = int(case["replicas"])  # type: ignore[call-overload]
    running = [replica for replica in backend.state.replicas.values()
               if replica.running and "extra" not in replica.name]
    if case["on_failure"] is not FailurePolicy.PAUSE:
        assert len(running) == replicas
    if case["fail"] and case["on_failure"] is FailurePolicy.ROLLBACK:
        assert result.outcome == "rolled-back"
        assert {replica.image for replica in running} == {"v1"}
    assert result.exit_code == (1 if case["fail"] and result.failed else 0)
