"""A takeover's lock carries the first dead rollout's time and count (double kills)."""

from datetime import UTC, datetime, timedelta

from rollover.backends.lease import LockRecord, stale_lock
from rollover.core.model import StaleLock

FIRST_BEGAN = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_takeover_lock_keeps_the_first_rollouts_time_and_count() -> None:
    # The first rollout began at 12:00 with 6 replicas and was killed; the takeover found 5 running
    # (one removed, never replaced) and was killed too. The third run must still count against 6.
    first = stale_lock(LockRecord("ci pid 1", FIRST_BEGAN, FIRST_BEGAN + timedelta(hours=1), 6).labels(), "gone")
    now = FIRST_BEGAN + timedelta(seconds=4)
    takeover = LockRecord("ci pid 2", now, now + timedelta(hours=1), replicas=5).carrying(first)
    seen_by_the_third = stale_lock(takeover.labels(), "its holder is gone")
    assert seen_by_the_third.since == FIRST_BEGAN.timestamp()
    assert seen_by_the_third.replicas == 6
    assert takeover.expires == now + timedelta(hours=1)  # the lease is the takeover's own


def test_a_lock_from_before_the_count_was_recorded_keeps_the_takeovers_own() -> None:
    now = FIRST_BEGAN
    unknown = StaleLock(holder="?", since=None, replicas=None, reason="its lease expired")
    takeover = LockRecord("ci pid 2", now, now + timedelta(hours=1), replicas=5).carrying(unknown)
    assert (takeover.since, takeover.replicas) == (now, 5)
