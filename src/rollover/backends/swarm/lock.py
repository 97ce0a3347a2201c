"""The rollout lock of a Swarm service: a Swarm config object named after the service.

Swarm refuses to create a second config of the same name (409 Conflict), which makes creating it
an atomic test-and-set on the managers' replicated store: every rollover process anywhere sees
the same lock. Its labels are the Engine lock's (``docker_lock.LockRecord``): who holds it since
when, on which host and process, until when its lease runs, and how many replicas the rollout
began with. A lock whose holder is known dead (same host, process gone; or lease over) is stale:
it is removed by id and taken over, and the caller learns what it took over.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import docker.errors

from rollover.backends.docker.inspect import LOCK_HOLDER_LABEL
from rollover.backends.docker.lock import LOCK_SINCE_LABEL, LockRecord, stale_lock, stale_reason
from rollover.backends.swarm.tasks import lock_name
from rollover.core.model import StaleLock
from rollover.engine import Engine
from rollover.errors import Locked


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
            self._config_id = await self._call("create", _create_unless_taken, self.name, holder, labels)
            if self._config_id is not None:
                return taken_over
            held = await self._call("inspect", _inspect_or_none, self.name)
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
            await self._call("remove stale", _remove_if_present, str(held["ID"]))  # by id: never a new one
            taken_over = stale_lock(held_labels, reason)
        raise Locked(f"rollout of Swarm service {self._service} already running: its lock keeps changing hands")

    async def release(self) -> None:
        if self._config_id is None:
            return
        config_id, self._config_id = self._config_id, None
        await self._call("remove", _remove_if_present, config_id)

    async def _call(self, verb: str, fn: Any, *args: Any) -> Any:
        return await self._manager.call(f"{verb} Swarm config {self.name}", fn, self._manager.api, *args)


def _create_unless_taken(api: Any, name: str, holder: str, labels: dict[str, str]) -> str | None:
    try:
        return str(api.create_config(name, holder.encode(), labels=labels)["ID"])
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            return None
        raise


def _inspect_or_none(api: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(api.inspect_config(name))
    except docker.errors.NotFound:
        return None


def _remove_if_present(api: Any, config_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_config(config_id)
