"""Sorting a dead rollout's leftovers: targets, adoptions, orphans, shortfall."""

from rollover.core import rollout
from rollover.core.model import Order, Replica, StaleLock
from rollover.core.plan import decide, needs_repair
from rollover.core.policy import Policy, parse_step
from rollover.core.recovery import plan_recovery

SINCE = 1000.0


def replica(name: str, created: float) -> Replica:
    return Replica(id=name, name=name, created_at=created)


def stale(replicas: int | None = 4) -> StaleLock:
    return StaleLock(holder="ci pid 7", since=SINCE, replicas=replicas, reason="its holder is gone")


def test_a_finished_replacement_is_adopted_for_the_first_old_replica() -> None:
    old = [replica(f"web-{n}", 900) for n in range(1, 5)]
    new = replica("web-5", 1010)
    recovery = plan_recovery([*old, new], stale(), up={"web-5"})
    assert recovery.adopted == ((old[0], new),)
    assert recovery.targets == tuple(old[1:])
    assert recovery.orphans == () and recovery.missing == 0


def test_a_replacement_not_up_is_an_orphan() -> None:
    old = [replica(f"web-{n}", 900) for n in range(1, 5)]
    starting = replica("web-5", 1010)
    recovery = plan_recovery([*old, starting], stale(), up=set())
    assert recovery.orphans == (starting,)
    assert recovery.targets == tuple(old) and recovery.adopted == ()


def test_a_stop_first_gap_is_reported_as_missing() -> None:
    # web-1 was stopped and removed, its replacement never made: 3 left of 4.
    old = [replica(f"web-{n}", 900) for n in range(2, 5)]
    recovery = plan_recovery(old, stale(replicas=4), up=set())
    assert recovery.missing == 1 and recovery.targets == tuple(old)
    assert [stand_in.id for stand_in in recovery.refills] == ["refill-1"]


def test_a_replacement_whose_old_replica_is_already_gone_is_kept() -> None:
    old = [replica(f"web-{n}", 900) for n in range(2, 5)]
    new = replica("web-5", 1010)
    recovery = plan_recovery([*old, new], stale(replicas=4), up={"web-5"})
    # web-5 already stands in for the removed web-1: nothing is adopted, 3 old to roll + web-5 = 4
    assert recovery.adopted == () and recovery.targets == tuple(old)
    assert recovery.missing == 0


def test_without_a_recorded_count_each_finished_replacement_retires_one_old_replica() -> None:
    old = [replica(f"web-{n}", 900) for n in range(1, 4)]
    new = [replica("web-4", 1010), replica("web-5", 1020)]
    recovery = plan_recovery([*old, *new], stale(replicas=None), up={"web-4", "web-5"})
    assert [pair[0].name for pair in recovery.adopted] == ["web-1", "web-2"]


def _refill_with(phase_change: str) -> rollout.RolloutState:
    """A rollout refilling one missing replica, whose new replica then comes up or exits."""
    [stand_in] = plan_recovery([replica("web-2", 900)], stale(replicas=2), up=set()).refills
    state = rollout.start([], batch=1, grace_s=0.0, refills=[stand_in])
    state = rollout.request_sent(state, [stand_in.id], at=0.0)
    state = rollout.request_acknowledged(state, [stand_in.id], [replica("web-3", 1100)], at=1.0, timeouts=[10.0])
    if phase_change == "up":
        return rollout.advance(rollout.replica_up(state, "web-3", at=2.0), now=2.0)
    return rollout.replica_down(state, "web-3", "exited with code 1", at=2.0)


def test_a_failed_refill_is_discarded_not_repaired() -> None:
    state = _refill_with("exits")
    decision = decide(state, Policy(step=parse_step("1")), Order.STOP_FIRST, now=2.0)
    # Nothing of the replica it stood in for is left to put back: the failed one just goes.
    assert [item.replacement.name for item in decision.discard if item.replacement] == ["web-3"]
    assert not needs_repair(state.progress[0], Order.STOP_FIRST)


def test_a_refill_that_came_up_retires_nothing() -> None:
    state = _refill_with("up")
    assert state.progress[0].phase is rollout.Phase.UP
    assert decide(state, Policy(step=parse_step("1")), Order.START_FIRST, now=2.0).retire == ()


def test_behind_a_balancer_an_adopted_replacement_is_admitted_before_its_old_replica_retires() -> None:
    """The dead rollout may have died between its replacement's 'up' and its admission: retiring
    the old replica then would leave the balancer a replica short (seen on the engine: 3 of 4
    servers in rotation after a takeover)."""
    old, new = replica("web-1", 900), replica("web-5", 1100)
    policy = Policy(step=parse_step("1"))
    state = rollout.start([], batch=1, grace_s=0.0, admission=True, adopted=[(old, new)], now=5.0)

    first = decide(state, policy, Order.START_FIRST, now=5.0)
    assert [item.replacement.name for item in first.admit if item.replacement] == ["web-5"]
    assert first.retire == () and not first.finished
    state = rollout.admitted(rollout.admission_issued(state, "web-1"), "web-1", at=5.1)
    state = rollout.advance(state, now=5.1)
    assert state.progress[0].phase is rollout.Phase.UP
    assert [item.target.name for item in decide(state, policy, Order.START_FIRST, now=5.1).retire] == ["web-1"]


def test_without_a_balancer_an_adopted_replacement_is_up_at_once() -> None:
    old, new = replica("web-1", 900), replica("web-5", 1100)
    state = rollout.start([], batch=1, grace_s=0.0, adopted=[(old, new)], now=5.0)
    decision = decide(state, Policy(step=parse_step("1")), Order.START_FIRST, now=5.0)
    assert decision.admit == () and [item.target.name for item in decision.retire] == ["web-1"]
