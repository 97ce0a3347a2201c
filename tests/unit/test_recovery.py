"""Sorting a dead rollout's leftovers: targets, adoptions, orphans, shortfall."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

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


def holding(name: str, created: float, *volumes: str) -> Replica:
    return Replica(id=name, name=name, created_at=created, volumes=frozenset(volumes))


def test_a_replacement_not_up_that_alone_mounts_a_removed_replicas_volume_is_kept_as_a_target() -> None:
    # Stop-first, killed after web-1 (volume v1) was removed and web-5, mounting v1, was started.
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(2, 5)]
    starting = holding("web-5", 1010, "v1")
    recovery = plan_recovery([*old, starting], stale(replicas=4), up=set())
    assert recovery.orphans == () and recovery.missing == 0
    assert recovery.targets == (*old, starting)


def test_a_replacement_not_up_sharing_its_predecessors_volume_is_an_orphan() -> None:
    # Start-first, killed before web-5 (mounting web-1's v1) was up: web-1 still runs and keeps v1.
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(1, 5)]
    starting = holding("web-5", 1010, "v1")
    recovery = plan_recovery([*old, starting], stale(replicas=4), up=set())
    assert recovery.orphans == (starting,) and recovery.targets == tuple(old) and recovery.missing == 0


def test_a_finished_replacement_is_adopted_for_the_replica_whose_volumes_it_mounts() -> None:
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(1, 5)]
    new = holding("web-5", 1010, "v3")  # web-3's replacement, not web-1's
    recovery = plan_recovery([*old, new], stale(replicas=4), up={"web-5"})
    assert recovery.adopted == ((old[2], new),)
    assert recovery.targets == (old[0], old[1], old[3])


def test_two_finished_replacements_and_one_old_replica_removed_adopt_only_the_sharer() -> None:
    # web-1 was replaced (v1 now on web-5, web-1 gone); web-6 mounts web-2's v2 and web-2 still runs.
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(2, 5)]
    new = [holding("web-5", 1010, "v1"), holding("web-6", 1020, "v2")]
    recovery = plan_recovery([*old, *new], stale(replicas=4), up={"web-5", "web-6"})
    assert recovery.adopted == ((old[0], new[1]),)
    assert recovery.targets == (old[1], old[2]) and recovery.missing == 0


@given(
    replicas=st.integers(min_value=1, max_value=8),
    removed=st.integers(min_value=0, max_value=8),
    finished=st.integers(min_value=0, max_value=8),
    starting=st.integers(min_value=0, max_value=8),
)
def test_recovery_never_plans_more_replicas_than_the_service_began_with(
    replicas: int, removed: int, finished: int, starting: int
) -> None:
    """Whatever a dead rollout (or a chain of them) left, the takeover ends with the count the first
    began with: kept old replicas + kept replacements + refills == began, and every volume of a
    running replica is still used by exactly one replica the takeover keeps."""
    removed = min(removed, replicas)
    old = [holding(f"old-{n}", 900, f"v{n}") for n in range(removed, replicas)]
    # replacements of removed replicas (mounting their volumes) come first, then start-first ones
    sources = [f"v{n}" for n in range(replicas)]
    made = [holding(f"new-{n}", 1010 + n, sources[n % replicas]) for n in range(finished + starting)]
    up = {replica.id for replica in made[:finished]}
    # Several replacements of one replica's volumes: a replacement, the rollback's restore of it...
    recovery = plan_recovery([*old, *made], stale(replicas=replicas), up=up)
    retired = {old_one.id for old_one, _ in recovery.adopted}
    gone = retired | {orphan.id for orphan in recovery.orphans}
    kept = [replica for replica in [*old, *made] if replica.id not in gone]
    assert len(kept) + recovery.missing == replicas
    lost = {v for r in [*old, *made] for v in r.volumes} - {v for r in kept for v in r.volumes}
    assert not lost, f"volumes {sorted(lost)} would be used by no replica"
    shared = [v for v in {v for r in kept for v in r.volumes} if sum(v in r.volumes for r in kept) > 1]
    assert not shared, f"volumes {sorted(shared)} would be mounted by two replicas"
    assert not retired & {r.id for r in recovery.targets}


def test_killed_during_a_rollback_the_restore_and_the_replacement_it_undid_are_one_replica() -> None:
    # Start-first step 2: web-7 (web-1's volume v1) and web-8 (v2) replaced web-1 and web-2; the
    # rollback's restore of web-1 (a new web-1 on v1) was up when the rollback was killed.
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(3, 7)]
    web7, web8 = holding("web-7", 1010, "v1"), holding("web-8", 1020, "v2")
    restored = replace(holding("web-1", 1030, "v1"), restored=True)
    recovery = plan_recovery([*old, web7, web8, restored], stale(replicas=6), up={"web-7", "web-8", "web-1"})
    # One of the two goes: the restore, on the old definition (the takeover rolls forward).
    assert recovery.adopted == ((restored, web7),)
    assert recovery.targets == tuple(old) and recovery.orphans == () and recovery.missing == 0


def test_a_rollbacks_restore_alone_is_rolled_like_a_replica_that_was_there() -> None:
    old = [holding(f"web-{n}", 900, f"v{n}") for n in range(2, 5)]
    restored = replace(holding("web-1", 1030, "v1"), restored=True)
    recovery = plan_recovery([*old, restored], stale(replicas=4), up={"web-1"})
    assert recovery.targets == (*old, restored) and recovery.adopted == () and recovery.missing == 0
