"""The executor of a decision's effects: the platform and balancer calls the loop asks for.

Each effect runs as a background task, so the loop goes on receiving while the platform works; what
an effect comes to is posted back to the loop as a message (``Acknowledged``, ``Admitted`` ...), and
the loop alone changes the rollout state. An effect that raises posts ``Broken``, which ends the
rollout; a cleanup owed after a replica's outcome that fails is recorded in ``problems`` instead,
so the rollout fails with the reason and still ends with its summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from rollover.backends.base import Backend, Diagnosing, Refilling
from rollover.balancers.base import Balancer, BalancerView, Telling
from rollover.controller.liveness import Broken, Liveness, Report
from rollover.controller.messages import Acknowledged, Admitted, Message, RequestFailed, Resynced
from rollover.core.events import EventKind
from rollover.core.model import Order, Replica
from rollover.core.rollout import TargetProgress
from rollover.errors import PlatformError, RolloverError, TargetRemoved

# How long the platform gets to say why a replacement failed, before the failure is told without it.
DIAGNOSIS_TIMEOUT_S = 10.0
# At most one 'draining' event per replica this often as its open connections change (HAProxy is
# asked every 15 ms): a live count for the user, not a flood of JSON lines.
DRAINING_EVERY_S = 0.25


class Executor:
    def __init__(self, backend: Backend, balancer: Balancer, link: Liveness, post: Callable[[Message], None],
                 report: Report, *, admission: bool, drain_timeout_s: float) -> None:
        self._backend = backend
        self._balancer = balancer
        self._link = link
        self._post = post  # into the loop's message queue
        self._report = report  # report(EventKind, replica, **detail)
        self._admission = admission
        self._drain_timeout_s = drain_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._problems: list[str] = []
        # Failed replacements whose evidence is being gathered, by id: nothing removes or replaces
        # one before its diagnosis is in.
        self._explaining: dict[str, asyncio.Task[None]] = {}
        # What the balancers last said about each replica's servers (by replica id, then server).
        self._views: dict[str, dict[tuple[str, str], BalancerView]] = {}
        self._draining_told: dict[str, float] = {}  # replica id -> when its last 'draining' event went
        if isinstance(balancer, Telling):
            balancer.tell(self._viewed)

    @property
    def problems(self) -> tuple[str, ...]:
        """Cleanups that failed after their replica's outcome, first first."""
        return tuple(self._problems)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # The effects a decision (or a message) asks for; each returns at once.

    def request(self, items: Sequence[TargetProgress], order: Order) -> None:
        self._spawn(self._request(items, order))

    def admit(self, item: TargetProgress) -> None:
        self._spawn(self._admit(item))

    def retire(self, item: TargetProgress) -> None:
        self._spawn(self._retire(item))

    def discard(self, item: TargetProgress) -> None:
        self._spawn(self._discard(item))

    def explain_failure(self, item: TargetProgress, at: float | None, detail: dict[str, object]) -> None:
        """Tell the failure once the platform said why (``Diagnosing``); at once when it cannot."""
        if item.replacement is None or not isinstance(self._backend, Diagnosing):
            self._report(EventKind.FAILED, item.target.name, at=at, **detail)
            return
        replacement = item.replacement
        self._explaining[replacement.id] = self._spawn(self._explain(self._backend, replacement, item.target.name,
                                                                     at, detail))

    def forget_removed(self, item: TargetProgress) -> None:
        self._spawn(self._forget_removed(item))

    def resync(self, ids: Sequence[str], outage: int | None = None) -> None:
        self._spawn(self._resync(ids, outage))

    async def settle(self) -> None:
        """Wait for every effect still running, and those they start."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def abandon(self) -> None:
        """Stop every effect still running: the rollout ends without them (the engine is lost)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _viewed(self, replica: Replica, view: BalancerView) -> None:
        """A balancer's word about a replica's server: kept for the admitted and drained events, and
        while draining told at once as a 'draining' event with the open connections (throttled)."""
        self._views.setdefault(replica.id, {})[view.balancer, view.server] = view
        if view.state != "drain" or not self._admission:
            return
        now = self._now()
        if now - self._draining_told.get(replica.id, float("-inf")) >= DRAINING_EVERY_S:
            self._draining_told[replica.id] = now
            self._report(EventKind.DRAINING, replica.name, **self._view_fields(replica))

    def _view_fields(self, replica: Replica) -> dict[str, object]:
        """``balancers`` (each server's view) and, while draining, ``sessions`` (their sum) when any
        balancer counts them; nothing for a balancer that tells nothing."""
        views = list(self._views.get(replica.id, {}).values())
        if not views:
            return {}
        fields: dict[str, object] = {"balancers": [view.record() for view in views]}
        counted = [view.sessions for view in views if view.sessions is not None]
        if counted and all(view.state == "drain" for view in views):
            fields["sessions"] = sum(counted)
        return fields

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._post(Broken(task.exception()))  # type: ignore[arg-type]

    async def _resync(self, ids: Sequence[str], outage: int | None) -> None:
        """Look up the state of ``ids`` and post it; after an outage, then say the rollout sees again."""
        for event in await self._link.retrying(lambda: self._backend.observe(ids)):
            self._post(event)
        if outage is not None:
            self._post(Resynced(outage))

    async def _request(self, items: Sequence[TargetProgress], order: Order) -> None:
        ids = tuple(item.target.id for item in items)
        # A refill's stand-in never served: there is nothing to drain or forget.
        old = [item.target for item in items if not item.refill]
        try:
            # No request goes out blind: while the platform is out of reach it would fail, and
            # its replacement's fate could not be watched.
            await self._link.reachable()
            reopened = self._link.reopened
            if order is Order.STOP_FIRST:
                for replica in old:
                    await self._drain(replica)
            new = await self._make_replacements(items, order)
        except RolloverError as exc:
            self._post(RequestFailed(ids, str(exc), self._now(), isinstance(exc, TargetRemoved)))
            return
        if len(new) != len(items):
            raise PlatformError(f"asked for {len(items)} replacements, the platform made {len(new)}")
        self._post(Acknowledged(ids, tuple(new), self._now()))
        if self._link.reopened != reopened:
            # The stream was opened again meanwhile: the replacements' first events may have gone
            # to neither stream (a retried restore may even return one made before the outage).
            self.resync([replica.id for replica in new])
        if order is Order.STOP_FIRST:
            for replica in old:
                await self._balancer.forget(replica)

    async def _explain(self, backend: Diagnosing, replacement: Replica, name: str, at: float | None,
                       detail: dict[str, object]) -> None:
        diagnosis: dict[str, object] = {"unavailable": "the rollout was stopped first"}
        try:
            diagnosis = await asyncio.wait_for(backend.diagnose(replacement), DIAGNOSIS_TIMEOUT_S)
        except RolloverError as exc:
            diagnosis = {"unavailable": str(exc)}
        except TimeoutError:
            diagnosis = {"unavailable": f"the platform did not answer within {DIAGNOSIS_TIMEOUT_S:g}s"}
        finally:  # told even when cancelled (the engine is lost): a failure is never kept quiet
            self._report(EventKind.FAILED, name, at=at, **detail, diagnosis=diagnosis)

    async def _explained(self, replica_id: str) -> None:
        """Wait until the evidence about this failed replacement is in (it is about to go)."""
        task = self._explaining.pop(replica_id, None)
        if task is not None:
            await asyncio.wait([task])

    async def _make_replacements(self, items: Sequence[TargetProgress], order: Order) -> list[Replica]:
        """One request to the platform; requests never mix refills, redeploys and restores."""
        for item in items:  # a restore replaces a failed stop-first replacement: its evidence first
            await self._explained(item.target.id)
        if items[0].refill:
            assert isinstance(self._backend, Refilling)  # only such backends get refills (Controller._recover)
            return await self._backend.refill(len(items))
        if items[0].restore_from is None:
            return await self._backend.redeploy([item.target for item in items], order)
        # Restores are idempotent (Backend.restore): a daemon restart mid-rollback is ridden out.
        return list(await asyncio.gather(*(
            self._link.retrying(partial(self._backend.restore, item.target, item.restore_from, order))
            for item in items if item.restore_from is not None
        )))

    async def _admit(self, item: TargetProgress) -> None:
        """Put an up replacement into rotation; only then does its grace period (and slot) run."""
        assert item.replacement is not None
        try:
            await self._balancer.admit(await self._link.retrying(partial(self._backend.refresh, item.replacement)))
        except RolloverError as exc:
            self._post(Admitted(item.target.id, self._now(), f"admission failed: {exc}"))
            return
        self._report(EventKind.ADMITTED, item.target.name, replacement=item.replacement.name,
                     **self._view_fields(item.replacement))
        self._post(Admitted(item.target.id, self._now()))

    async def _drain(self, replica: Replica) -> None:
        if self._admission:
            # A replacement is recorded as acknowledged, before it ran: a pre-stop hook is told
            # its address as it is now (a rollback drains replacements).
            replica = await self._link.retrying(partial(self._backend.refresh, replica))
            self._views.pop(replica.id, None)  # what it said at admission is over
            self._report(EventKind.DRAINING, replica.name)  # the balancer's first count follows at once
        drained = await self._balancer.drain(replica, self._drain_timeout_s)
        if self._admission:
            self._draining_told.pop(replica.id, None)
            views = self._view_fields(replica)
            views.pop("sessions", None)
            self._views.pop(replica.id, None)
            self._report(EventKind.DRAINED, replica.name, sessions_left=drained.sessions_left,
                         waited_s=round(drained.waited_s, 3), **views)

    async def _retire(self, item: TargetProgress) -> None:
        try:
            await self._drain(item.target)
            await self._link.retrying(lambda: self._backend.retire(item.target))
            await self._balancer.forget(item.target)
        except RolloverError as exc:
            self._cleanup_failed(item, f"could not retire {item.target.name}: {exc}")
            return
        self._report(EventKind.RETIRED, item.target.name)

    async def _forget_removed(self, item: TargetProgress) -> None:
        """A target someone else removed (skipped) leaves the balancer too: nothing drains or retires
        it, and its server would go on pointing at a container that is gone."""
        try:
            await self._balancer.forget(item.target)
        except RolloverError as exc:
            self._cleanup_failed(item, f"could not take {item.target.name} out of the balancer: {exc}")

    def _cleanup_failed(self, item: TargetProgress, problem: str) -> None:
        """A platform call after a replica's outcome failed: the rollout fails with the reason,
        and still ends with its summary (it is a result, not a crash)."""
        self._problems.append(problem)
        self._report(EventKind.CLEANUP_FAILED, item.target.name, reason=problem)

    async def _discard(self, item: TargetProgress) -> None:
        try:
            await self._remove_failed(item)
        except RolloverError as exc:
            self._cleanup_failed(item, f"could not remove the failed replacement of {item.target.name}: {exc}")

    async def _remove_failed(self, item: TargetProgress) -> None:
        """A failed replacement goes (a failed stop-first one is put back after the phase instead)."""
        if item.replacement is None:
            return
        replacement = item.replacement
        await self._explained(replacement.id)
        await self._balancer.forget(replacement)
        await self._link.retrying(lambda: self._backend.discard(replacement))
        self._report(EventKind.DISCARDED, item.target.name, replacement=item.replacement.name)
