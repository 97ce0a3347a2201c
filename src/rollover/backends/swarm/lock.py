"""The rollout lock of a Swarm service: a Swarm config object named after the service.

Swarm refuses to create a second config of the same name (409 Conflict), which makes creating it
an atomic test-and-set on the managers' replicated store: every rollover process anywhere sees
the same lock. Its labels are the Engine lock's (``backends.docker.lock.LockRecord``): who holds
it since when, on which host and process, until when its lease runs, and how many replicas the
rollout began with. A lock whose holder is known dead (same host, process gone; or lease over) is stale:
it is removed by id and taken over, and the caller learns what it took over.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

from rollover.backends.lease import LOCK_HOLDER_LABEL, LOCK_SINCE_LABEL, LockRecord, stale_lock, stale_reason
from rollover.core.model import StaleLock
from rollover.engine import Engine
from rollover.errors import Locked

_LOOK_AGAIN_S = 0.5


def lock_name(service: str) -> str:
    """A Swarm config name (at most 64 characters) naming the service's rollout lock."""
    name = f"rollover-lock-{service}"
    if len(name) <= 64:
        return name
    return f"rollover-lock-{hashlib.sha256(service.encode()).hexdigest()[:24]}"


class SwarmLock:
    def __init__(self, manager: Engine, service: str) -> None:
        self._manager = manager
        self._service = service
        self.name = lock_name(service)
        self._config_id: str | None = None

    @property
    def held(self) -> bool:
        return self._config_id is not None

    async def acquire(self, holder: str, lease_s: float, replicas: int) -> StaleLock | None:
        """Take the lock; the stale lock taken over, if any. Locked while a live holder has it."""
        now = datetime.now(UTC)
        record = LockRecord(holder=holder, since=now, expires=now + timedelta(seconds=lease_s), replicas=replicas)
        labels = {"rollover.lock": "true", "rollover.service": self._service, **record.labels()}
        taken_over: StaleLock | None = None
        for _ in range(3):  # the holder may release it, or another may take it over, between our looks
            self._config_id = await self._manager.create_config(self.name, holder.encode(), labels)
            if self._config_id is not None:
                return taken_over
            held = await self._manager.inspect_config(self.name)
            if held is None:
                continue
            held_labels = dict(held.get("Spec", {}).get("Labels") or {})
            reason = stale_reason(held_labels, now=datetime.now(UTC), host=record.host)
            if reason is None:
                raise Locked(
                    f"rollout of Swarm service {self._service} already running: held by"
                    f" {held_labels.get(LOCK_HOLDER_LABEL, '?')} since {held_labels.get(LOCK_SINCE_LABEL, '?')}"
                    f" (lock: Swarm config {self.name})"
                )
            # by id: never a new one someone made meanwhile
            await self._manager.remove_config(str(held["ID"]), f"remove stale Swarm config {self.name}")
            taken_over = stale_lock(held_labels, reason)
            # A takeover's lock keeps the first dead rollout's time and count (see LockRecord.carrying).
            record = record.carrying(taken_over)
            labels = {**labels, **record.labels()}
        raise Locked(f"rollout of Swarm service {self._service} already running: its lock keeps changing hands")

    async def wait_released(self, timeout_s: float) -> None:
        """Until the config is gone or ``timeout_s`` passed. Swarm has no "wait until removed" for a
        config, so this looks every half second: a lock is held for minutes, not milliseconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self._manager.inspect_config(self.name) is not None and loop.time() < deadline:
            await asyncio.sleep(min(_LOOK_AGAIN_S, max(0.0, deadline - loop.time())))

    async def release(self) -> None:
        if self._config_id is None:
            return
        config_id, self._config_id = self._config_id, None
        await self._manager.remove_config(config_id, f"remove Swarm config {self.name}")
