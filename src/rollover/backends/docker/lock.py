"""The rollout lock on a Docker Engine: a container that is created and never started.

Its name is the lock and the engine's name uniqueness the atomic test-and-set: a second create
gets 409 Conflict. Its labels say who holds it since when, for the Locked message. It is made from
the service's own image, which is present for sure, so taking the lock never pulls anything.

The lock is also the record of an unfinished rollout: a holder killed with SIGKILL leaves it
behind, with the time it began and the replica count it began with. A later rollout takes it over
when it is stale: its holder ran on this host and that process is gone (pid and process start time
both checked, so a reused pid does not count as alive), or its lease ran out (a holder on another
machine cannot be checked; the lease is generous: twice the time the rollout could take). The
takeover removes the stale container by id, so two rollouts taking over at once cannot both win:
the loser's create meets the winner's lock and reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollover.backends.docker.inspect import LOCK_HOLDER_LABEL, labels_of
from rollover.core.model import StaleLock
from rollover.engine import Engine
from rollover.errors import Locked

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
    """'<pid>:<start time>' of a live process, None when there is none (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields_after_name = stat.rpartition(")")[2].split()
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


def lock_name(service: str, *, project: str | None, selector: dict[str, str] | None) -> str:
    """``rollover-lock-<project>-<service>``, or ``rollover-lock-sel-<hash>`` for a label selector."""
    if selector is None:
        return f"rollover-lock-{project}-{service}"
    canonical = json.dumps(selector, sort_keys=True)
    return f"rollover-lock-sel-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def lock_body(image: str, record: LockRecord) -> dict[str, Any]:
    return {
        "Image": image,
        "Entrypoint": ["rollover-lock"],  # never started: no command has to exist
        "Labels": record.labels(),
        "NetworkDisabled": True,
        "HostConfig": {"NetworkMode": "none"},
    }


async def take_lock(
    engine: Engine, name: str, *, image: str, record: LockRecord, service: str
) -> tuple[str, StaleLock | None]:
    """Create the lock container: (its id, the stale lock taken over, if any). Locked, naming the
    holder, when a live rollout has it."""
    taken_over: StaleLock | None = None
    for _ in range(3):  # the holder may release it, or another may take it over, between our looks
        lock_id = await engine.create_container(lock_body(image, record), name)
        if lock_id is not None:
            return lock_id, taken_over
        held = await engine.inspect_container(name)
        if held is None:
            continue
        labels = labels_of(held)
        reason = stale_reason(labels, now=datetime.now(UTC), host=record.host)
        if reason is None:
            raise Locked(
                f"rollout of {service} already running: held by {labels.get(LOCK_HOLDER_LABEL, '?')} "
                f"since {labels.get(LOCK_SINCE_LABEL, '?')} (lock container {name})"
            )
        # By id: if someone else took it over meanwhile, this removes nothing of theirs.
        await engine.remove(str(held["Id"]), force=True, volumes=True)
        taken_over = stale_lock(labels, reason)
        record = record.carrying(taken_over)
    raise Locked(f"rollout of {service} already running: its lock {name} keeps changing hands")
