"""A takeover's lock carries the first dead rollout's time and count (double kills)."""

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rollover.backends.lease import LOCK_HOST_LABEL, LockRecord, process_identity, stale_lock, stale_reason
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


def test_a_holder_killed_but_not_yet_reaped_is_gone() -> None:
    # A zombie still has its /proc entry (pid and start time unchanged) until its parent waits for
    # it: the docker CLI killing its plugin, or a CI runner, may exit without doing so.
    holder = subprocess.Popen(["sleep", "60"])
    try:
        labels = LockRecord("ci", FIRST_BEGAN, datetime.now(UTC) + timedelta(hours=1), 2,
                            process=process_identity(holder.pid) or "").labels()
        assert stale_reason(labels, now=datetime.now(UTC), host=labels[LOCK_HOST_LABEL]) is None
        os.kill(holder.pid, signal.SIGKILL)
        wait_until_zombie(holder.pid)
        reason = stale_reason(labels, now=datetime.now(UTC), host=labels[LOCK_HOST_LABEL])
        assert reason == f"its holder (pid {holder.pid} on {labels[LOCK_HOST_LABEL]}) is gone"
    finally:
        holder.kill()
        holder.wait()


def wait_until_zombie(pid: int, bound_s: float = 10.0) -> None:
    deadline = time.monotonic() + bound_s
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, f"pid {pid} never became a zombie"
        time.sleep(0.01)  # a SIGKILL lands within milliseconds
