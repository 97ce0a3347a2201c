"""The rollout lock on a Docker Engine: a container that is created and never started.

Its name is the lock and the engine's name uniqueness the atomic test-and-set: a second create
gets 409 Conflict. Its labels say who holds it since when, for the Locked message. It is made from
the service's own image, which is present for sure, so taking the lock never pulls anything.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from rollover.backends.docker_engine import Engine
from rollover.backends.docker_inspect import LOCK_HOLDER_LABEL, labels_of
from rollover.errors import Locked

LOCK_SINCE_LABEL = "rollover.lock.since"


def lock_name(service: str, *, project: str | None, selector: dict[str, str] | None) -> str:
    """``rollover-lock-<project>-<service>``, or ``rollover-lock-sel-<hash>`` for a label selector."""
    if selector is None:
        return f"rollover-lock-{project}-{service}"
    canonical = json.dumps(selector, sort_keys=True)
    return f"rollover-lock-sel-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def lock_body(image: str, holder: str, since: datetime) -> dict[str, Any]:
    return {
        "Image": image,
        "Entrypoint": ["rollover-lock"],  # never started: no command has to exist
        "Labels": {LOCK_HOLDER_LABEL: holder, LOCK_SINCE_LABEL: since.isoformat(timespec="seconds")},
        "NetworkDisabled": True,
        "HostConfig": {"NetworkMode": "none"},
    }


async def take_lock(engine: Engine, name: str, *, image: str, holder: str, service: str) -> str:
    """Create the lock container; its id. Locked, naming the holder, when someone has it."""
    for _ in range(2):  # the holder may release it between our conflict and our look at it
        lock_id = await engine.create_container(lock_body(image, holder, datetime.now(UTC)), name)
        if lock_id is not None:
            return lock_id
        held = await engine.inspect_container(name)
        if held is not None:
            labels = labels_of(held)
            raise Locked(
                f"rollout of {service} already running: held by {labels.get(LOCK_HOLDER_LABEL, '?')} "
                f"since {labels.get(LOCK_SINCE_LABEL, '?')} (lock container {name})"
            )
    raise Locked(f"rollout of {service} already running: its lock {name} keeps changing hands")
