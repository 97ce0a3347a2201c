"""The lock's record, shared by every platform's lock (a Docker container, a Swarm config): who
holds it since when, for how long, on which host and process, and the replica count the rollout
began with; and how a lock is judged stale (its holder gone) and taken over.

A takeover's record carries the first dead rollout's time and count forward (LockRecord.carrying):
a chain of killed takeovers is judged against what the service had before any of them began.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from rollover.core.model import StaleLock

LOCK_HOLDER_LABEL = "rollover.lock.holder"
LOCK_SINCE_LABEL = "rollover.lock.since"
LOCK_HOST_LABEL = "rollover.lock.host"
LOCK_PROCESS_LABEL = "rollover.lock.process"  # "<pid>:<process start time in clock ticks>"
LOCK_EXPIRES_LABEL = "rollover.lock.expires"
LOCK_REPLICAS_LABEL = "rollover.lock.replicas"


@dataclass(frozen=True)
class LockRecord:
    """What a lock says of its holder and of the rollout it guards."""

    holder: str
    since: datetime
    expires: datetime
    replicas: int
    host: str = field(default_factory=socket.gethostname)
    process: str = field(default_factory=lambda: this_process())

    def labels(self) -> dict[str, str]:
        return {
            LOCK_HOLDER_LABEL: self.holder,
            # To the microsecond: a takeover tells the dead rollout's replacements from the replicas
            # it found by this time, and a replica made in the same second before it is no replacement.
            LOCK_SINCE_LABEL: self.since.isoformat(timespec="microseconds"),
            LOCK_EXPIRES_LABEL: self.expires.isoformat(timespec="seconds"),
            LOCK_REPLICAS_LABEL: str(self.replicas),
            LOCK_HOST_LABEL: self.host,
            LOCK_PROCESS_LABEL: self.process,
        }

    def carrying(self, stale: StaleLock) -> LockRecord:
        """This record, for a takeover of ``stale``: it keeps the time and the count of the rollout
        that began it all, so that if this one dies too, the next takeover still tells every
        replacement made since from the replicas that were there, and refills only against the
        original count (two kills in a row: 6 replicas, not 6 + what the first takeover refilled)."""
        since = datetime.fromtimestamp(stale.since, UTC) if stale.since is not None else self.since
        replicas = stale.replicas if stale.replicas is not None else self.replicas
        return replace(self, since=since, replicas=replicas)


def process_identity(pid: int) -> str | None:
    """'<pid>:<start time>' of a live process, None when there is none (Linux /proc).

    A zombie (state Z, or X while it is reaped) is dead: killed, its parent has not collected its
    exit status yet. That happens to a holder killed by SIGKILL whose parent (the docker CLI
    running it as a plugin, a CI runner) has not waited for it or exited without doing so, and
    whose new parent (pid 1) does not reap; its lock must still count as stale.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields_after_name = stat.rpartition(")")[2].split()
    if fields_after_name[0] in ("Z", "X"):  # field 3, state
        return None
    return f"{pid}:{fields_after_name[19]}"  # field 22, starttime


def this_process() -> str:
    return process_identity(os.getpid()) or f"{os.getpid()}:?"


def stale_reason(labels: dict[str, str], *, now: datetime, host: str) -> str | None:
    """Why a lock's holder cannot be running any more, or None while it may be.

    A lock from before these labels existed (no process label) is judged by its lease alone.
    """
    process = labels.get(LOCK_PROCESS_LABEL)
    if labels.get(LOCK_HOST_LABEL) == host and process:
        pid = process.partition(":")[0]
        if pid.isdigit() and process_identity(int(pid)) != process:
            return f"its holder (pid {pid} on {host}) is gone"
    expires = labels.get(LOCK_EXPIRES_LABEL)
    if expires and datetime.fromisoformat(expires) <= now:
        return f"its lease expired at {expires}"
    return None


def stale_lock(labels: dict[str, str], reason: str) -> StaleLock:
    since = labels.get(LOCK_SINCE_LABEL)
    replicas = labels.get(LOCK_REPLICAS_LABEL, "")
    return StaleLock(
        holder=labels.get(LOCK_HOLDER_LABEL, "?"),
        since=datetime.fromisoformat(since).timestamp() if since else None,
        replicas=int(replicas) if replicas.isdigit() else None,
        reason=reason,
    )
