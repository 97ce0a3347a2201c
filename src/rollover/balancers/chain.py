"""Several balancers (and hooks) steered as one, e.g. HAProxy plus a pre-stop command.

Every call goes to each part in the order given. ``attach``, ``admit`` and ``drain`` stop at the
first failure: a replica the first balancer refused must not be announced by the next one.
``forget`` and ``close`` release resources, so they reach every part even when one fails, and
then raise the first error.

A drain shares its time budget: each part gets what the parts before it left. The result adds
up the sessions left over every part and reports the whole time waited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rollover.balancers.base import Balancer, DrainResult, Telling, ViewObserver
from rollover.clock import Clock, loop_clock
from rollover.core.model import Replica


class BalancerChain:
    def __init__(self, balancers: Sequence[Balancer], *, clock: Clock | None = None) -> None:
        self.balancers = tuple(balancers)
        self._clock = clock

    def tell(self, observer: ViewObserver) -> None:
        for balancer in self.balancers:
            if isinstance(balancer, Telling):
                balancer.tell(observer)

    async def attach(self, replicas: Sequence[Replica]) -> None:
        for balancer in self.balancers:
            await balancer.attach(replicas)

    async def admit(self, replica: Replica) -> None:
        for balancer in self.balancers:
            await balancer.admit(replica)

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        clock = self._clock or loop_clock()
        started = clock()
        sessions_left = 0
        for balancer in self.balancers:
            remaining = max(0.0, timeout - (clock() - started))
            sessions_left += (await balancer.drain(replica, remaining)).sessions_left
        return DrainResult(sessions_left=sessions_left, waited_s=clock() - started)

    async def forget(self, replica: Replica) -> None:
        await self._call_every(lambda balancer: balancer.forget(replica))

    async def close(self) -> None:
        await self._call_every(lambda balancer: balancer.close())

    async def _call_every(self, call: Callable[[Balancer], Awaitable[None]]) -> None:
        first_error: Exception | None = None
        for balancer in self.balancers:
            try:
                await call(balancer)
            except Exception as exc:  # not BaseException: a cancellation stops the loop at once
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
