"""Sorting a dead rollout's leftovers: targets, adoptions, orphans, shortfall."""

from rollover.model import Replica, StaleLock
from rollover.recovery import plan_recovery

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
