"""The backend protocol: the only door between the controller and a platform.

A backend is built for one service (a Compose service, a label selector, a Swarm service, or the
simulator's made-up one) with the redeploy spec fixed at construction (image override, pull).
The controller calls it in this order:

    await backend.connect()                # EngineUnavailable if the platform cannot be reached
    events = backend.events()              # the stream is live BEFORE the snapshot is taken,
    snapshot = await backend.snapshot()    # so nothing that happens in between is missed
    await backend.prepare(snapshot)        # ImageNotFound / Unsupported: still nothing touched
    await backend.acquire_lock(holder)     # Locked (exit 3); with --lock-wait, wait_for_lock
                                           # and acquire_lock again until the wait is over
    ... redeploy / retire / discard / restore (/ refill), as the plan decides ...
    await backend.release_lock()
    await backend.close()

Every method translates platform errors into ``rollover.errors`` at this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from rollover.core.model import Order, Replica, ReplicaEvent, ServiceSnapshot, StaleLock

# A lock's lease when the caller does not say: an hour.
DEFAULT_LEASE_S = 3600.0


class Backend(Protocol):
    platform: str

    async def connect(self) -> None:
        """Reach the platform; raise EngineUnavailable (naming the address) if it cannot be reached."""

    def events(self) -> AsyncIterator[ReplicaEvent]:
        """Up/down events of this service's replicas only, from the moment this is called.

        When the platform goes away the iterator raises a RolloverError; the controller calls
        ``events()`` again once it can, then ``observe()`` for what it missed.

        A replica is *up* when it reports healthy (it has a healthcheck) or when it is running
        (it has none). Events of any other container are never yielded.
        """
        ...

    async def observe(self, replica_ids: Sequence[str]) -> list[ReplicaEvent]:
        """What is true of these replicas now, as events stamped now: ReplicaUp for those up,
        ReplicaDown for those exited, unhealthy or gone; nothing for those still starting.

        After a lost event stream was re-opened, this fills in what happened meanwhile.
        """
        ...

    async def refresh(self, replica: Replica) -> Replica:
        """The replica as the platform describes it now: an address or a published port may only
        be known once it runs (a Swarm task gets its host port after it was acknowledged)."""
        ...

    async def snapshot(self) -> ServiceSnapshot:
        """The service's running and starting replicas; ServiceNotFound if there are none."""

    async def prepare(self, snapshot: ServiceSnapshot) -> None:
        """Check (and pull, if asked) what the rollout needs before anything is touched."""

    async def acquire_lock(self, holder: str, lease_s: float = DEFAULT_LEASE_S, replicas: int = 0) -> StaleLock | None:
        """Take the service's rollout lock, recorded on the platform; Locked names the holder.

        The lock records the replica count the rollout began with and a lease (how long the
        holder may be presumed alive when it cannot be checked). A stale lock, whose holder is
        known dead, is taken over and returned, so the caller can finish what that rollout left.
        """

    async def release_lock(self) -> None:
        """Give the lock back; a no-op when it is not held."""

    async def wait_for_lock(self, timeout_s: float) -> None:
        """After Locked (``--lock-wait``): return once the holder may have let go of the lock, or
        after ``timeout_s``; the caller tries ``acquire_lock`` again either way."""

    async def redeploy(self, targets: Sequence[Replica], order: Order) -> list[Replica]:
        """Replace each target by a fresh replica made from the service's current definition.

        Returns once the platform acknowledged the request: the replacements exist (one per
        target, same order). With START_FIRST a Docker backend returns as soon as the engine
        created them and starts them meanwhile (a start it refuses arrives as a ReplicaDown);
        what only a running replica has (its address) is then learnt through ``refresh``. With
        STOP_FIRST each target is stopped and removed first and its replacement returns started;
        with START_FIRST the targets keep running and the caller retires them later.
        """
        ...

    async def restore(self, replaced: Replica, original: Replica, order: Order) -> Replica:
        """Rollback of one replica: replace ``replaced`` by one made from ``original``'s definition.

        ``original`` is the replica as the snapshot recorded it (its image id, its config), so the
        result runs the previous image. Order as for ``redeploy``.

        Idempotent: the controller calls it again when the platform went out of reach (a daemon
        restart), and the first call may have been carried out in part or in full. A second call
        with the same ``replaced`` finishes that work and returns the replica it made, never a
        second one; ``replaced`` may be gone by then.
        """
        ...

    async def retire(self, replica: Replica) -> None:
        """Stop (within its stop grace period) and remove a replica that has been replaced."""

    async def discard(self, replica: Replica) -> None:
        """Remove a failed replacement at once."""

    async def close(self) -> None:
        """Release connections and background watchers."""


@runtime_checkable
class Refilling(Protocol):
    """Optional: backends whose service can be short of replicas because a rollout was killed.

    A stop-first rollout killed between removing a replica and making its replacement leaves the
    service one short; the next rollout refills it (``recovery.py``). Docker (Compose and selector)
    and the simulator implement it. Swarm does not: its orchestrator keeps a replicated service at
    its count by itself (a removed task is recreated from the service's spec), so a dead rollout
    never leaves it short, and a recovery there only reports a shortfall it sees.
    """

    async def refill(self, count: int) -> list[Replica]:
        """Make ``count`` new replicas of the service from its current definition (the image it is
        rolled to), started, as ``redeploy`` would make replacements but replacing nothing. Not
        idempotent (it is not retried): a failure is a failed replacement."""
        ...


@runtime_checkable
class Diagnosing(Protocol):
    """Optional: backends that can say why a failed replacement failed, in the platform's words.

    Called once per failed replacement, before it is discarded or put back, so the failure event
    can carry the evidence (Docker: state, exit code, health-check results, the log's last lines;
    Swarm: the task's error and state history). The simulator has no such evidence.
    """

    async def diagnose(self, replica: Replica) -> dict[str, object]:
        """JSON-able evidence about ``replica`` (see events.schema.json, ``diagnosis``)."""
        ...
