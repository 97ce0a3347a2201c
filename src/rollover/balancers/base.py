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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rollover.core.model import Replica


@dataclass(frozen=True)
class DrainResult:
    """How a drain ended: ``sessions_left == 0`` means every in-flight session finished."""

    sessions_left: int
    waited_s: float

    @property
    def complete(self) -> bool:
        return self.sessions_left == 0


@dataclass(frozen=True)
class BalancerView:
    """What a balancer says about the server that carries a replica, in its own words: HAProxy's
    ``web/spare2`` in state ``drain`` with 3 current sessions (``scur`` + ``qcur``). ``sessions`` is
    None when the balancer does not count them."""

    balancer: str  # "haproxy"
    server: str  # "web/spare2"
    state: str  # "ready" (in rotation), "drain" (no new traffic), "maint" (out)
    sessions: int | None = None

    def record(self) -> dict[str, object]:
        """As the JSON events carry it (report/events.schema.json, ``$defs/balancer_view``)."""
        found: dict[str, object] = {"balancer": self.balancer, "server": self.server, "state": self.state}
        if self.sessions is not None:
            found["sessions"] = self.sessions
        return found


ViewObserver = Callable[[Replica, BalancerView], None]


@runtime_checkable
class Telling(Protocol):
    """A balancer that tells what it did to a replica's server as it does it (admitted, drain,
    sessions while draining, maintenance). The others are shown by phase only."""

    def tell(self, observer: ViewObserver) -> None:
        """From now on, call ``observer`` with each new view of a replica's server."""


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
