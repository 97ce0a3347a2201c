"""The rollout state's index (phase counts, first waiting target, owed cleanups, grace ends and
deadlines, ``rollout.changes``) always equals a recount from the targets' progress, whatever
sequence of events built it. 70 targets: more than one piece of ``persistent.PIECE``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rollover.core import rollout
from rollover.core.model import Replica
from rollover.core.rollout import Phase, RolloutState

TARGETS = 70


def old(number: int) -> Replica:
    return Replica(id=f"old{number}", name=f"web-{number}")


numbers = st.integers(1, TARGETS)
events = st.one_of(
    st.tuples(st.just("request"), numbers, st.none() | numbers),  # asked for, the one Swarm replaced instead
    st.tuples(st.just("up"), numbers),
    st.tuples(st.just("down"), numbers, st.booleans()),
    st.tuples(st.just("request_failed"), numbers),
    st.tuples(st.just("advance")),
    st.tuples(st.just("admission_issued"), numbers),
    st.tuples(st.just("admitted"), numbers),
    st.tuples(st.just("cleaned_up"), numbers),
    st.tuples(st.just("blinded")),
    st.tuples(st.just("sighted")),
)


def _apply(state: RolloutState, event: tuple[object, ...], now: float) -> RolloutState:
    match event:
        case ("request", int(number), instead):
            if state.request_outstanding:
                return state
            state = rollout.request_sent(state, [f"old{number}"], now)
            replaces = None if instead is None else f"old{instead}"
            made = Replica(id=f"new{number}-{now}", name=f"web-{number}-new", replaces=replaces)
            return rollout.request_acknowledged(state, [f"old{number}"], [made], now, [3.0])
        case ("up", int(number)):
            return rollout.replica_up(state, _replacement_of(state, number), now)
        case ("down", int(number), gone):
            return rollout.replica_down(state, _replacement_of(state, number), "exited (1)", now, gone=bool(gone))
        case ("request_failed", int(number)):
            return rollout.request_failed(state, [f"old{number}"], "refused", now)
        case ("advance",):
            return rollout.advance(state, now)
        case ("admission_issued", int(number)):
            return rollout.admission_issued(state, f"old{number}")
        case ("admitted", int(number)):
            return rollout.admitted(state, f"old{number}", now)
        case ("cleaned_up", int(number)):
            return rollout.cleaned_up(state, f"old{number}")
        case ("blinded",):
            return rollout.blinded(state)
        case _:
            return rollout.sighted(state, now)


def _replacement_of(state: RolloutState, number: int) -> str:
    item = next(item for item in state.progress if item.target.id == f"old{number}")
    return item.replacement.id if item.replacement is not None else f"old{number}"


def _assert_index_is_a_recount(state: RolloutState) -> None:
    progress = state.progress
    recount = RolloutState(progress, state.batch, state.grace_s, state.admission, blind=state.blind)
    for phase in Phase:
        assert state.count(phase) == sum(1 for item in progress if item.phase is phase), phase
    assert state.in_flight() == sum(1 for item in progress if item.phase in rollout.IN_FLIGHT)
    waiting = [item for item in progress if item.phase is Phase.WAITING]
    assert state.first_waiting() == (waiting[0] if waiting else None)
    assert state.to_admit() == tuple(item for item in progress
                                     if item.phase is Phase.ADMITTING and not item.admission_issued)
    for replaced_too in (False, True):
        assert state.retirable(replaced_too) == tuple(
            item for item in progress if item.phase is Phase.UP and not item.cleaned_up and not item.refill
            and (replaced_too or item.adopted))
    assert state.failed_replaced() == tuple(item for item in progress if item.phase is Phase.FAILED
                                            and item.replacement is not None and not item.cleaned_up)
    settle_ends = [item.settle_until for item in progress if item.phase is Phase.SETTLING]
    deadlines = [item.deadline for item in progress if item.phase is Phase.REDEPLOYING]
    assert state.next_settle_end() == min((t for t in settle_ends if t is not None), default=None)
    assert state.next_deadline() == min((t for t in deadlines if t is not None), default=None)
    assert recount == state


@settings(max_examples=150, deadline=None)
@given(admission=st.booleans(), script=st.lists(st.tuples(events, st.floats(0.0, 2.0)), max_size=40))
def test_the_index_always_equals_a_recount_from_the_targets(
    admission: bool, script: list[tuple[tuple[object, ...], float]]
) -> None:
    state = rollout.start([old(n) for n in range(1, TARGETS + 1)], batch=3, grace_s=1.0, admission=admission)
    now = 0.0
    for event, elapsed in script:
        now += elapsed
        before = state
        state = _apply(state, event, now)
        _assert_index_is_a_recount(state)
        changed = [(a, b) for a, b in zip(before.progress, state.progress, strict=True) if a is not b]
        assert rollout.changes(before, state) == changed
