"""The plan's arithmetic and rules (core/plan.py), as tables with worked numbers.

``free_slots``: batch + extras up - in flight. ``next_request``: one target at a time, all of
them for step 'all' (refills in a request of their own first). ``decide``: what to retire,
discard and admit, when to stop issuing, when to wake and when the rollout is finished.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollover.core import rollout
from rollover.core.model import Order, Replica
from rollover.core.plan import Decision, decide, free_slots, needs_repair, next_request
from rollover.core.policy import FailurePolicy, Policy, Step, StepKind, batch_size, parse_step
from rollover.core.rollout import Phase, RolloutState, TargetProgress

STEP_1 = Policy()
STEP_ALL = Policy(step=Step(StepKind.ALL))


def old(number: int) -> Replica:
    return Replica(id=f"old{number}", name=f"web-{number}")


def new(number: int) -> Replica:
    return Replica(id=f"new{number}", name=f"web-{number}-new")


def rollout_of(*phases: Phase, batch: int = 1, extras: int = 0, grace_s: float = 5.0, **flags: object
               ) -> RolloutState:
    """Targets old1.. in these phases; an in-flight or finished one has its replacement new<n>."""
    progress = tuple(
        TargetProgress(target=old(number), phase=phase,
                       replacement=None if phase in (Phase.WAITING, Phase.REQUESTED) else new(number))
        for number, phase in enumerate(phases, start=1)
    )
    return RolloutState(progress=progress, batch=batch, grace_s=grace_s,
                        extras_up=frozenset(f"x{n}" for n in range(extras)), **flags)  # type: ignore[arg-type]


def targets(items: tuple[TargetProgress, ...]) -> list[str]:
    return [item.target.id for item in items]


W, Q, R, A, S, U, F = (Phase.WAITING, Phase.REQUESTED, Phase.REDEPLOYING, Phase.ADMITTING, Phase.SETTLING,
                       Phase.UP, Phase.FAILED)


# -- free_slots ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "batch", "extras", "slots"),
    [
        ((W, W, W, W, W, W), 2, 0, 2),  # nothing in flight: the whole batch
        ((S, W, W, W, W, W), 2, 1, 2),  # the docstring's case: 2 + 1 extra - 1 settling = 2
        ((S, R, W, W, W, W), 2, 0, 0),  # 2 - 2: full
        ((Q, A, W), 2, 0, 0),  # requested and admitting count as in flight too
        ((U, F, W), 1, 0, 1),  # finished ones do not
        ((R, R, R), 1, 0, -2),  # an acknowledgement may bring more than the batch (Swarm): negative
        ((R, R, R), 1, 3, 1),
    ],
    ids=["idle", "docstring", "full", "requested-and-admitting", "finished-free", "over", "extras-cover"],
)
def test_free_slots(phases: tuple[Phase, ...], batch: int, extras: int, slots: int) -> None:
    assert free_slots(rollout_of(*phases, batch=batch, extras=extras)) == slots


@pytest.mark.parametrize(
    ("step", "replicas", "in_flight_at_most"),
    [
        ("1", 7, 1),
        ("3", 7, 3),
        ("half", 7, 3),  # floor(3.5)
        ("25%", 7, 1),  # floor(1.75)
        ("10%", 7, 1),  # floor(0.7) = 0 -> at least 1
        ("all", 7, 7),
    ],
)
def test_a_batch_from_the_step_is_what_may_be_in_flight(step: str, replicas: int, in_flight_at_most: int) -> None:
    """7 replicas, nothing up yet: requests go out one by one until the batch is in flight."""
    policy = Policy(step=parse_step(step))
    state = rollout.start([old(n) for n in range(1, replicas + 1)], batch_size(policy.step, replicas), 0.0)
    sent = 0
    while request := next_request(state, policy):
        state = rollout.request_sent(state, targets(request), float(sent))
        state = rollout.request_acknowledged(state, targets(request), [new(int(t[3:])) for t in targets(request)],
                                             float(sent), [60.0] * len(request))
        sent += len(request)

    assert state.in_flight() == sent == in_flight_at_most


# -- next_request --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "policy", "asked"),
    [
        (rollout_of(W, W, W), STEP_1, ["old1"]),  # one target per request, in order
        (rollout_of(U, R, W, W, batch=2), STEP_1, ["old3"]),
        (rollout_of(R, W, W), STEP_1, []),  # no free slot
        (rollout_of(R, W, W, extras=1), STEP_1, ["old2"]),  # an extra up frees one
        (rollout_of(W, W, W, batch=3, request_outstanding=True), STEP_1, []),  # one request at a time
        (rollout_of(W, W, W, stopped_issuing=True), STEP_1, []),
        (rollout_of(U, U, U), STEP_1, []),  # nothing waits
        (rollout_of(W, W, W, batch=3), STEP_ALL, ["old1", "old2", "old3"]),  # step 'all': one request
    ],
    ids=["first", "next-waiting", "full", "extra-frees", "outstanding", "stopped", "done", "all-at-once"],
)
def test_next_request(state: RolloutState, policy: Policy, asked: list[str]) -> None:
    assert targets(next_request(state, policy)) == asked


def test_step_all_sends_refills_in_a_request_of_their_own_before_the_targets() -> None:
    state = rollout.start([old(1), old(2)], batch=3, grace_s=0.0, refills=[old(9)])

    first = next_request(state, STEP_ALL)
    assert targets(first) == ["old9"]

    state = rollout.request_acknowledged(rollout.request_sent(state, ["old9"], 0.0), ["old9"], [new(9)], 1.0, [60.0])
    assert targets(next_request(state, STEP_ALL)) == ["old1", "old2"]


# -- decide: cleanup, failure policies, the end ---------------------------------------------------


@pytest.mark.parametrize(
    ("state", "order", "policy", "retire", "discard"),
    [
        # Start-first: the replaced replica goes once its successor is up.
        (rollout_of(U, S, W), Order.START_FIRST, STEP_1, ["old1"], []),
        # Stop-first: it went before its successor was made; nothing is left to retire.
        (rollout_of(U, S, W), Order.STOP_FIRST, STEP_1, [], []),
        # A failed replacement is discarded, start-first...
        (rollout_of(F, W), Order.START_FIRST, STEP_1, [], ["old1"]),
        # ... but under 'pause' everything stays for a human to look at.
        (rollout_of(F, W), Order.START_FIRST, Policy(on_failure=FailurePolicy.PAUSE), [], []),
        # A failed stop-first replacement stays: putting its original back is a tracked restore.
        (rollout_of(F, W), Order.STOP_FIRST, STEP_1, [], []),
    ],
    ids=["start-first-retires", "stop-first-nothing-to-retire", "failed-discarded", "pause-keeps",
         "stop-first-failed-awaits-repair"],
)
def test_what_decide_cleans_up(state: RolloutState, order: Order, policy: Policy, retire: list[str],
                               discard: list[str]) -> None:
    decision = decide(state, policy, order, now=10.0)

    assert (targets(decision.retire), targets(decision.discard)) == (retire, discard)


def test_cleanup_is_owed_once_adopted_successors_retire_even_stop_first_and_refills_never_do() -> None:
    adopted = TargetProgress(target=old(1), phase=U, replacement=new(1), adopted=True)
    refill = TargetProgress(target=old(2), phase=U, replacement=new(2), refill=True)
    done = TargetProgress(target=old(3), phase=U, replacement=new(3), cleaned_up=True)
    state = RolloutState(progress=(adopted, refill, done), batch=1, grace_s=0.0)

    assert targets(decide(state, STEP_1, Order.STOP_FIRST, now=0.0).retire) == ["old1"]
    assert targets(decide(state, STEP_1, Order.START_FIRST, now=0.0).retire) == ["old1"]


@pytest.mark.parametrize(
    ("item", "order", "repair"),
    [
        (TargetProgress(target=old(1), phase=F, replacement=new(1)), Order.STOP_FIRST, True),
        (TargetProgress(target=old(1), phase=F, replacement=new(1)), Order.START_FIRST, False),
        (TargetProgress(target=old(1), phase=F, replacement=None), Order.STOP_FIRST, False),  # never made
        (TargetProgress(target=old(1), phase=F, replacement=new(1), refill=True), Order.STOP_FIRST, False),
        (TargetProgress(target=new(1), phase=F, replacement=old(1), restore_from=old(1)), Order.STOP_FIRST,
         False),  # a rollback's own restore
        (TargetProgress(target=old(1), phase=U, replacement=new(1)), Order.STOP_FIRST, False),
    ],
    ids=["stop-first-failed", "start-first", "no-replacement", "refill", "rollback", "up"],
)
def test_needs_repair(item: TargetProgress, order: Order, repair: bool) -> None:
    assert needs_repair(item, order) is repair


@pytest.mark.parametrize(
    ("on_failure", "asked", "stop_issuing"),
    [
        (FailurePolicy.ROLLBACK, [], True),
        (FailurePolicy.PAUSE, [], True),
        (FailurePolicy.CONTINUE, ["old3"], False),  # carries on; exit 1 at the end
    ],
)
def test_a_failure_stops_issuing_unless_the_policy_is_continue(
    on_failure: FailurePolicy, asked: list[str], stop_issuing: bool
) -> None:
    state = rollout_of(F, S, W, batch=2)

    decision = decide(state, Policy(on_failure=on_failure), Order.START_FIRST, now=10.0)

    assert (targets(decision.request), decision.stop_issuing) == (asked, stop_issuing)
    assert not decision.finished  # the settling replacement still runs to its outcome
    # Said once: when the controller has stopped issuing, the decision does not repeat it.
    stopped = decide(rollout.stop_issuing(state), Policy(on_failure=on_failure), Order.START_FIRST, now=10.0)
    assert not stopped.stop_issuing


@pytest.mark.parametrize(
    ("state", "policy", "finished"),
    [
        (rollout_of(U, U, U), STEP_1, True),
        (rollout_of(U, U, S), STEP_1, False),  # one still settling
        (rollout_of(U, U, W), STEP_1, False),  # one still to send
        (rollout_of(U, F, W), STEP_1, True),  # rollback: the waiting one is never sent
        (rollout_of(U, F, W), Policy(on_failure=FailurePolicy.CONTINUE), False),
        (rollout_of(U, U, W, stopped_issuing=True), STEP_1, True),  # interrupted
        (rollout_of(U, U, Q), STEP_1, False),
        (rollout_of(U, U, U, request_outstanding=True), STEP_1, False),
    ],
    ids=["all-up", "settling", "waiting", "halted", "continue-goes-on", "stopped", "requested", "outstanding"],
)
def test_when_the_rollout_is_finished(state: RolloutState, policy: Policy, finished: bool) -> None:
    assert decide(state, policy, Order.START_FIRST, now=10.0).finished is finished


def test_decide_admits_each_replacement_once() -> None:
    state = rollout_of(A, A, W, batch=2, admission=True)
    state = rollout.admission_issued(state, "old2")

    assert targets(decide(state, STEP_1, Order.START_FIRST, now=0.0).admit) == ["old1"]


# -- decide: when to wake ------------------------------------------------------------------------


def timed(phase: Phase, *, settle_until: float | None = None, deadline: float | None = None, number: int = 1
          ) -> TargetProgress:
    return TargetProgress(target=old(number), phase=phase, replacement=new(number), settle_until=settle_until,
                          deadline=deadline)


@pytest.mark.parametrize(
    ("progress", "blind", "now", "wake_at"),
    [
        ((), False, 3.0, None),  # nothing timed: only an event wakes the loop
        ((timed(S, settle_until=9.0),), False, 3.0, 9.0),
        ((timed(R, deadline=13.0),), False, 3.0, 13.0),
        ((timed(S, settle_until=9.0), timed(R, deadline=13.0, number=2)), False, 3.0, 9.0),  # the earliest
        ((timed(S, settle_until=14.0), timed(R, deadline=13.0, number=2)), False, 3.0, 13.0),
        ((timed(S, settle_until=9.0), timed(R, deadline=13.0, number=2)), True, 3.0, 9.0),  # blind: no deadline
        ((timed(R, deadline=13.0),), True, 3.0, None),
        ((timed(S, settle_until=9.0),), False, 11.0, 11.0),  # overdue: at once, never in the past
        ((timed(U, settle_until=9.0), timed(F, deadline=2.0, number=2)), False, 3.0, None),  # finished: untimed
    ],
    ids=["nothing", "grace-end", "deadline", "earliest-grace", "earliest-deadline", "blind-grace-only",
         "blind-deadline", "overdue", "finished"],
)
def test_wake_at(progress: tuple[TargetProgress, ...], blind: bool, now: float, wake_at: float | None) -> None:
    state = RolloutState(progress=progress, batch=1, grace_s=5.0, blind=blind)

    assert decide(state, STEP_1, Order.START_FIRST, now=now).wake_at == wake_at


# -- properties ----------------------------------------------------------------------------------

phases = st.sampled_from([W, Q, R, A, S, U, F, Phase.SKIPPED])


@given(phases=st.lists(phases, min_size=1, max_size=10), batch=st.integers(1, 5), extras=st.integers(0, 3),
       on_failure=st.sampled_from(list(FailurePolicy)), order=st.sampled_from(list(Order)),
       all_at_once=st.booleans(), outstanding=st.booleans())
def test_a_decision_never_asks_for_more_than_the_free_slots_nor_for_a_target_not_waiting(
    phases: list[Phase], batch: int, extras: int, on_failure: FailurePolicy, order: Order, all_at_once: bool,
    outstanding: bool,
) -> None:
    state = rollout_of(*phases, batch=batch, extras=extras, request_outstanding=outstanding)
    policy = Policy(step=Step(StepKind.ALL) if all_at_once else Step(StepKind.COUNT, batch), on_failure=on_failure)

    decision: Decision = decide(state, policy, order, now=0.0)

    assert all(item.phase is Phase.WAITING for item in decision.request)
    if decision.request:
        assert free_slots(state) > 0 and not outstanding
        assert all_at_once or len(decision.request) == 1
    if decision.finished:
        assert state.in_flight() == 0 and not outstanding
    assert not (set(targets(decision.retire)) & set(targets(decision.discard)))
