"""The balancer protocol: how the controller moves traffic between replicas.

A balancer is built for one service's pool (an HAProxy backend, say). The controller calls it in
this order, around the backend calls that replace each replica:

    await balancer.attach(snapshot.replicas)   # BalancerUnavailable: nothing touched yet
    ... a replacement comes up ...
    await balancer.admit(new)                  # only now does it get traffic
    result = await balancer.drain(old, timeout=grace)  # no new traffic; in-flight requests end
    ... backend.retire(old) ...
    await balancer.forget(old)                 # its slot is free for the next replacement
    await balancer.close()

Errors: ``attach`` raises ``BalancerUnavailable`` when the balancer cannot be reached or does not
front the given replicas; every later failure is a ``PlatformError``. A drain that runs out of
time is not an error: it returns a ``DrainResult`` with ``sessions_left > 0``, and the caller
decides (log it, carry on) - the replica is out of rotation either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rollover.core.model import Replica


@dataclass(frozen=True)
class DrainResult:
    """How a drain ended: ``sessions_left == 0`` means every in-flight session finished."""

    sessions_left: int
    waited_s: float

    @property
    def complete(self) -> bool:
        return self.sessions_left == 0


class Balancer(Protocol):
    async def attach(self, replicas: Sequence[Replica]) -> None:
        """Learn the current replicas and which server slot of the balancer carries each."""

    async def admit(self, replica: Replica) -> None:
        """Put a replacement that is up into rotation (and never before it is up)."""

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        """Stop new traffic to a replica, wait (at most ``timeout`` s) for its sessions to end,
        then take it out of the pool entirely."""
        ...

    async def forget(self, replica: Replica) -> None:
        """The replica was removed: free its slot."""

    async def close(self) -> None:
        """Release connections to the balancer."""


class NoBalancer:
    """The service is not fronted by a balancer rollover controls: every call is a no-op."""

    async def attach(self, replicas: Sequence[Replica]) -> None:
        return None

    async def admit(self, replica: Replica) -> None:
        return None

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        return DrainResult(sessions_left=0, waited_s=0.0)

    async def forget(self, replica: Replica) -> None:
        return None

    async def close(self) -> None:
        return None
