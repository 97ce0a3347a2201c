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
from datetime import UTC, datetime
from typing import Any

from rollover.backends.docker.inspect import labels_of
from rollover.backends.lease import LOCK_HOLDER_LABEL, LOCK_SINCE_LABEL, LockRecord, stale_lock, stale_reason
from rollover.core.model import StaleLock
from rollover.engine import Engine
from rollover.errors import Locked


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
