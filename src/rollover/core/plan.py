"""PURE: decide what the controller does next, from the state of the rollout and the time.

``decide(state, policy, order, now)`` returns a ``Decision``: the next request to send (if any),
the replicas to retire or discard, when to wake up if nothing happens, and whether the rollout
is finished. It never performs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollover.core.model import Order
from rollover.core.policy import FailurePolicy, Policy, StepKind, tolerated_failures
from rollover.core.rollout import Phase, RolloutState, TargetProgress


@dataclass(frozen=True)
class Decision:
    request: tuple[TargetProgress, ...] = ()  # one request: a single target, or all (step 'all')
    admit: tuple[TargetProgress, ...] = ()  # replacements that are up: put them into rotation
    retire: tuple[TargetProgress, ...] = ()  # start-first: replaced replicas whose successor is up
    discard: tuple[TargetProgress, ...] = ()  # failed replacements to remove
    stop_issuing: bool = False  # a failure under rollback/pause: send nothing more
    wake_at: float | None = None  # the earliest grace end or deadline, if nothing else happens
    finished: bool = False


def free_slots(state: RolloutState) -> int:
    """Replicas that may go into redeployment now.

    The batch, plus one per extra replica that came up (the service has one more ready replica
    than it had, so one more may be down), minus those in flight. 6 targets, step 2, one
    replacement settling, one extra up -> 2 + 1 - 1 = 2.
    """
    return state.batch + len(state.extras_up) - state.in_flight()


def next_request(state: RolloutState, policy: Policy) -> tuple[TargetProgress, ...]:
    """The targets of the next request: requests go out one at a time, each one target, except
    that step 'all' sends every target in one service-wide request (refills, which the platform
    makes by another call, in one request of their own before it)."""
    if state.stopped_issuing or state.request_outstanding:
        return ()
    first = state.first_waiting()
    if first is None or free_slots(state) <= 0:
        return ()
    if policy.step.kind is StepKind.ALL:
        return tuple(item for item in state.waiting() if item.refill == first.refill)
    return (first,)


def _owed_cleanup(state: RolloutState, order: Order, policy: Policy) -> tuple[tuple[TargetProgress, ...], ...]:
    """Start-first: the replaced replica goes once its successor is UP. A failed replacement goes
    too, unless the policy is 'pause', which leaves everything for a human to look at. A failed
    stop-first replacement stays for now: its original is gone, and putting it back is a tracked
    restore after the phase (see Controller._roll), not a side effect. A refill has no old
    replica to retire: it stood in for one that was already gone."""
    keep_failed = policy.on_failure is FailurePolicy.PAUSE
    retire = state.retirable(replaced_too=order is Order.START_FIRST)
    discard = () if keep_failed else tuple(
        item for item in state.failed_replaced() if not needs_repair(item, order)
    )
    return retire, discard


def needs_repair(item: TargetProgress, order: Order) -> bool:
    """A forward stop-first replacement that failed: its original was removed before it was made.
    Not a failed refill: the replica it stood in for was removed by a dead rollout, and nothing of
    it is left to put back (the failed refill is discarded; the service stays short, and says so)."""
    return order is Order.STOP_FIRST and item.restore_from is None and item.phase is Phase.FAILED \
        and item.replacement is not None and not item.refill


def _wake_at(state: RolloutState) -> float | None:
    """The next grace end or deadline; blind, no deadline (a resync, not time, decides them)."""
    times = [moment for moment in (state.next_settle_end(), None if state.blind else state.next_deadline())
             if moment is not None]
    return min(times) if times else None


def decide(state: RolloutState, policy: Policy, order: Order, now: float) -> Decision:
    """What to do now. ``now`` is unused by the rules themselves but bounds ``wake_at``.

    Under 'rollback' and 'pause' the first failure stops issuing; in-flight replacements still
    run to their outcome. The rollout is finished when nothing is in flight and nothing more
    will be sent.
    """
    # More failures than max_failure_ratio absorbs (none, by default) apply the failure policy.
    failed = state.count(Phase.FAILED) > tolerated_failures(policy, state.targets())
    halt = failed and policy.on_failure is not FailurePolicy.CONTINUE
    issuing = not (state.stopped_issuing or halt)
    request = next_request(state, policy) if issuing else ()
    retire, discard = _owed_cleanup(state, order, policy)
    admit = state.to_admit()
    nothing_in_flight = state.in_flight() == 0
    finished = nothing_in_flight and not state.request_outstanding and (not issuing or not state.count(Phase.WAITING))
    wake_at = _wake_at(state)
    return Decision(
        request=request,
        admit=admit,
        retire=retire,
        discard=discard,
        stop_issuing=halt and not state.stopped_issuing,
        wake_at=max(wake_at, now) if wake_at is not None else None,
        finished=finished,  # cleanups in this decision are issued before the loop ends
    )
