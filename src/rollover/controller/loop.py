"""The one async loop that applies decisions: events -> state -> decision -> platform calls.

The controller owns no rules: ``rollout`` says how the state changes, ``plan`` says what to do.
It runs unchanged against the simulator on virtual time and against real platforms. All its time
is the running loop's clock; every time it reports is relative to the start of the rollout.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Protocol

from rollover.backends.base import Backend, Refilling
from rollover.balancers.base import Balancer, NoBalancer
from rollover.controller.liveness import Broken, Liveness, StreamLost, StreamRestored
from rollover.controller.messages import (
    Acknowledged,
    Admitted,
    Interrupted,
    Message,
    RequestFailed,
    Resynced,
    watched_ids,
)
from rollover.core import rollout
from rollover.core.events import EventKind
from rollover.core.model import Order, ProgressEvent, Replica, ReplicaDown, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.core.plan import Decision, decide, needs_repair
from rollover.core.policy import FailurePolicy, Policy, batch_size, choose_order, lock_lease_s, replacement_timeout
from rollover.core.probe_report import ProbeReport
from rollover.core.recovery import Recovery, made_by, plan_recovery
from rollover.core.result import RolloutResult, conclude, first_failure, summary_figures
from rollover.core.rollout import Phase, RolloutState, TargetProgress
from rollover.core.steps import replica_steps
from rollover.errors import PlatformError, RolloverError, TargetRemoved

Reporter = Callable[[ProgressEvent], None]


def default_holder() -> str:
    """Who holds the lock, as the next run's "locked by" message names it: user@host pid N."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"


class TrafficProbe(Protocol):
    """What the controller needs of ``rollover.probe.open_loop.Probe``."""

    async def start(self) -> None: ...

    async def stop(self) -> ProbeReport: ...


class Controller:
    def __init__(self, backend: Backend, policy: Policy, *, report: Reporter | None = None,
                 holder: str | None = None, balancer: Balancer | None = None, drain_timeout_s: float = 30.0,
                 probe: TrafficProbe | None = None, max_probe_failures: int | None = None) -> None:
        self.backend = backend
        self.probe = probe
        self.max_probe_failures = max_probe_failures
        self.policy = policy
        self.balancer: Balancer = balancer or NoBalancer()
        self._admission = balancer is not None
        self._drain_timeout_s = drain_timeout_s
        self._report_to = report or (lambda event: None)
        self._holder = holder or default_holder()
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        # Event-stream outages so far, and whether the last one's resync is still to be applied:
        # until it is, deadlines wait (rollout.blinded).
        self._outages = 0
        self._outages_unseen = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._order = Order.START_FIRST
        self._interrupted_by: str | None = None
        self._problems: list[str] = []  # cleanups that failed after their replica's outcome
        self._link = Liveness(backend, self._messages.put_nowait, self._report)
        self._main: asyncio.Task[object] | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _report(self, kind: EventKind, replica: str = "", at: float | None = None, **detail: object) -> None:
        """Tell the user; ``at`` is a loop time (default now), reported relative to the start."""
        self._emit(kind, replica, at, detail)

    def _emit(self, kind: EventKind, replica: str, at: float | None, detail: dict[str, object]) -> None:
        moment = self._now() if at is None else at
        self._report_to(ProgressEvent(kind, round(moment - self._t0, 6), replica, tuple(detail.items())))

    def interrupt(self, signal_name: str) -> None:
        """SIGINT/SIGTERM: stop issuing, let in-flight replacements finish (and under 'rollback'
        put every replaced replica back), then exit 130. A second signal stops at once; the lock
        is still released on the way out."""
        if self._interrupted_by is None:
            self._interrupted_by = signal_name
            self._messages.put_nowait(Interrupted(signal_name))
        elif self._main is not None:
            self._report(EventKind.INTERRUPTED_AGAIN, signal=signal_name)
            self._main.cancel()

    async def run(self) -> RolloutResult:
        """Connect, look, lock, roll (and roll back if the policy says so), unlock."""
        self._main = asyncio.current_task()
        self._t0 = self._now()
        pump: asyncio.Task[None] | None = None
        try:
            await self.backend.connect()
            pump = asyncio.create_task(self._link.pump(self.backend.events()))
            snapshot = await self.backend.snapshot()
            await self.backend.prepare(snapshot)
            self._order, why = choose_order(self.policy.order, snapshot.replicas)
            batch = batch_size(self.policy.step, len(snapshot.replicas))
            self._t0 = self._now()  # times count from the plan: connecting and looking came before
            self._report_plan(snapshot, batch, why)
            await self.balancer.attach(snapshot.replicas)
            lease_s = lock_lease_s(self.policy, snapshot.replicas, batch, self._drain_timeout_s)
            stale = await self.backend.acquire_lock(self._holder, lease_s, len(snapshot.replicas))
            try:
                recovery = await self._recover(snapshot, stale) if stale is not None else None
                return await self._roll(snapshot, batch, recovery)
            finally:
                await self._release_lock()
        finally:
            if pump is not None:
                pump.cancel()
            await self.balancer.close()
            await self.backend.close()

    async def _recover(self, snapshot: ServiceSnapshot, stale: StaleLock) -> Recovery:
        """Take over from a dead rollout: adopt its finished replacements, discard its half-made ones,
        and refill (in the rollout, first) the replicas it removed and never replaced."""
        self._report(EventKind.TOOK_OVER_LOCK, holder=stale.holder, reason=stale.reason, replicas=stale.replicas)
        fresh = [replica.id for replica in snapshot.replicas if made_by(replica, stale)]
        up = {event.replica_id for event in await self.backend.observe(fresh) if isinstance(event, ReplicaUp)}
        recovery = plan_recovery(snapshot.replicas, stale, up)
        for orphan in recovery.orphans:
            await self._link.retrying(partial(self.backend.discard, orphan))
            self._report(EventKind.DISCARDED, orphan.name, replacement=orphan.name,
                         reason="half-made by the dead rollout")
        for old, new in recovery.adopted:
            self._report(EventKind.ADOPTED, old.name, replacement=new.name)
        if recovery.missing and isinstance(self.backend, Refilling):
            self._report(EventKind.REFILLING, missing=recovery.missing, replicas=stale.replicas)
        elif recovery.missing:
            self._report(EventKind.SHORT, missing=recovery.missing, replicas=stale.replicas)
            recovery = replace(recovery, missing=0)  # the platform refills by itself (see base.Refilling)
        return recovery

    async def _release_lock(self) -> None:
        """Release even after the platform was out of reach; if that fails too, say so rather than
        hide the error that ended the rollout (the next rollout finds the lock stale)."""
        try:
            await self._link.retrying(self.backend.release_lock)
        except RolloverError as exc:
            self._report(EventKind.LOCK_NOT_RELEASED, reason=str(exc))

    def _report_plan(self, snapshot: ServiceSnapshot, batch: int, why: str) -> None:
        timeouts = sorted({replacement_timeout(self.policy, replica) for replica in snapshot.replicas})
        self._report(
            EventKind.PLAN, service=snapshot.name, platform=snapshot.platform, where=snapshot.description,
            targets=[replica.name for replica in snapshot.replicas], step=str(self.policy.step), batch=batch,
            order=self._order.value, order_reason=why, grace_s=self.policy.grace_s,
            timeout_s=timeouts, on_failure=self.policy.on_failure.value,
        )

    async def _roll(self, snapshot: ServiceSnapshot, batch: int, recovery: Recovery | None) -> RolloutResult:
        if self.probe is not None:
            await self.probe.start()
        targets = recovery.targets if recovery is not None else snapshot.replicas
        adopted = recovery.adopted if recovery is not None else ()
        refills = recovery.refills if recovery is not None else ()
        forward = await self._run_phase(rollout.start(
            targets, batch, self.policy.grace_s, admission=self._admission, adopted=adopted, now=self._t0,
            refills=refills,
        ))
        # A failure or a signal puts back what needs repair (under 'rollback', every replaced
        # replica); under 'pause' everything stays as it is.
        back: RolloutState | None = None
        rolling_back = self.policy.on_failure is FailurePolicy.ROLLBACK
        if self.policy.on_failure is not FailurePolicy.PAUSE and (
                self._interrupted_by is not None or first_failure(forward) is not None):
            back = await self._roll_back(forward, batch, everything=rolling_back)
        probe = await self.probe.stop() if self.probe is not None else None
        outcome, failure = conclude(forward, back, self.policy.on_failure, interrupted_by=self._interrupted_by,
                                    problems=self._problems, probe=probe, max_probe_failures=self.max_probe_failures)
        result = RolloutResult(outcome, snapshot, self._order, forward, back, self._t0,
                               round(self._now() - self._t0, 6), failure, probe)
        self._emit(EventKind.SUMMARY, "", None, summary_figures(result))
        return result

    async def _roll_back(self, forward: RolloutState, batch: int, everything: bool = True) -> RolloutState:
        """Put replicas back on their previous definition, as a rollout of its own (same step,
        tracked until each is up): every replaced one when ``everything``, and always the originals
        of failed stop-first replacements, which were removed before their replacement failed.
        Refills stay as they are: they have no previous definition (see recovery.py)."""
        done = [item for item in forward.progress
                if (everything and item.phase is Phase.UP and item.replacement and not item.refill)
                or needs_repair(item, self._order)]
        if not done:
            return rollout.start([], batch, self.policy.grace_s)
        kept = [item.replacement.name for item in forward.progress
                if everything and item.refill and item.phase is Phase.UP and item.replacement]
        self._report(EventKind.ROLLBACK, replicas=[item.target.name for item in done], kept_refills=kept)
        replacements = [item.replacement for item in done if item.replacement is not None]
        originals = [item.target for item in done]
        return await self._run_phase(
            rollout.start(replacements, batch, self.policy.grace_s, restore_from=originals, admission=self._admission)
        )

    async def _run_phase(self, state: RolloutState) -> RolloutState:
        if self._outages_unseen:
            state = rollout.blinded(state)
        while True:
            state = self._apply(state, lambda s: rollout.advance(s, self._now()))
            decision = decide(state, self.policy, self._order, self._now())
            state = self._act(state, decision)
            if decision.finished:
                break
            message = await self._next_message(decision.wake_at)
            if message is not None:
                state = self._apply(state, partial(self._receive, message=message))
        await self._settle_background()
        return state

    def _act(self, state: RolloutState, decision: Decision) -> RolloutState:
        if decision.stop_issuing:
            state = rollout.stop_issuing(state)
            self._report(EventKind.STOP_ISSUING, policy=self.policy.on_failure.value)
        for item in decision.admit:
            state = rollout.admission_issued(state, item.target.id)
            self._spawn(self._admit(item))
        for item in decision.retire:
            state = rollout.cleaned_up(state, item.target.id)
            self._spawn(self._retire(item))
        for item in decision.discard:
            state = rollout.cleaned_up(state, item.target.id)
            self._spawn(self._discard(item))
        if decision.request:
            ids = [item.target.id for item in decision.request]
            state = self._apply(state, lambda s: rollout.request_sent(s, ids, self._now()))
            self._spawn(self._request(decision.request))
        return state

    async def _next_message(self, wake_at: float | None) -> Message | None:
        timeout = None if wake_at is None else max(0.0, wake_at - self._now())
        try:
            message = await asyncio.wait_for(self._messages.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(message, Broken):
            raise message.error
        return message

    def _stop_on_interrupt(self, state: RolloutState, signal_name: str) -> RolloutState:
        self._report(EventKind.INTERRUPTED, signal=signal_name, in_flight=state.in_flight())
        return rollout.stop_issuing(state)

    def _receive(self, state: RolloutState, *, message: Message) -> RolloutState:
        if isinstance(message, ReplicaUp):
            return rollout.replica_up(state, message.replica_id, message.at)
        if isinstance(message, ReplicaDown):
            return rollout.replica_down(state, message.replica_id, message.reason, message.at, gone=message.gone,
                                        slot_removed=message.slot_removed)
        if isinstance(message, Acknowledged):
            timeouts = [replacement_timeout(self.policy, new) for new in message.replacements]
            return rollout.request_acknowledged(state, message.target_ids, message.replacements, message.at,
                                                timeouts)
        if isinstance(message, RequestFailed):
            return rollout.request_failed(state, message.target_ids, message.reason, message.at,
                                          removed=message.removed)
        if isinstance(message, Interrupted):
            return self._stop_on_interrupt(state, message.signal)
        if isinstance(message, StreamLost):
            self._outages += 1
            self._outages_unseen = True
            return rollout.blinded(state)
        if isinstance(message, StreamRestored):
            self._spawn(self._resync(watched_ids(state), outage=self._outages))
            return state
        if isinstance(message, Resynced):
            if message.outage != self._outages:
                return state  # lost again since: the next resync decides
            self._outages_unseen = False
            return rollout.sighted(state, self._now())
        if isinstance(message, Admitted):
            if message.failure is not None:
                return rollout.admission_failed(state, message.target_id, message.failure, message.at)
            return rollout.admitted(state, message.target_id, message.at)
        return state

    def _apply(self, state: RolloutState, change: Callable[[RolloutState], RolloutState]) -> RolloutState:
        """Apply a pure transition and tell the user about every step each replica took."""
        new = change(state)
        for before, after in zip(state.progress, new.progress, strict=True):
            if before != after:
                for kind, name, at, detail in replica_steps(before, after, self.policy.grace_s):
                    self._emit(kind, name, at, detail)
                if after.phase is Phase.SKIPPED and before.phase is not Phase.SKIPPED:
                    self._spawn(self._forget_removed(after))
        return new

    async def _resync(self, ids: Sequence[str], outage: int | None = None) -> None:
        """Look up the state of ``ids`` and post it; after an outage, then say the rollout sees again."""
        for event in await self._link.retrying(lambda: self.backend.observe(ids)):
            self._messages.put_nowait(event)
        if outage is not None:
            self._messages.put_nowait(Resynced(outage))

    def _spawn(self, work: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._messages.put_nowait(Broken(task.exception()))  # type: ignore[arg-type]

    async def _settle_background(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _request(self, items: Sequence[TargetProgress]) -> None:
        ids = tuple(item.target.id for item in items)
        # A refill's stand-in never served: there is nothing to drain or forget.
        old = [item.target for item in items if not item.refill]
        try:
            # No request goes out blind: while the platform is out of reach it would fail, and
            # its replacement's fate could not be watched.
            await self._link.reachable()
            reopened = self._link.reopened
            if self._order is Order.STOP_FIRST:
                for replica in old:
                    await self._drain(replica)
            new = await self._make_replacements(items)
        except RolloverError as exc:
            self._messages.put_nowait(RequestFailed(ids, str(exc), self._now(), isinstance(exc, TargetRemoved)))
            return
        if len(new) != len(items):
            raise PlatformError(f"asked for {len(items)} replacements, the platform made {len(new)}")
        self._messages.put_nowait(Acknowledged(ids, tuple(new), self._now()))
        if self._link.reopened != reopened:
            # The stream was opened again meanwhile: the replacements' first events may have gone
            # to neither stream (a retried restore may even return one made before the outage).
            self._spawn(self._resync([replica.id for replica in new]))
        if self._order is Order.STOP_FIRST:
            for replica in old:
                await self.balancer.forget(replica)

    async def _make_replacements(self, items: Sequence[TargetProgress]) -> list[Replica]:
        """One request to the platform; requests never mix refills, redeploys and restores."""
        if items[0].refill:
            assert isinstance(self.backend, Refilling)  # only such backends get refills (_recover)
            return await self.backend.refill(len(items))
        if items[0].restore_from is None:
            return await self.backend.redeploy([item.target for item in items], self._order)
        # Restores are idempotent (Backend.restore): a daemon restart mid-rollback is ridden out.
        return list(await asyncio.gather(*(
            self._link.retrying(partial(self.backend.restore, item.target, item.restore_from, self._order))
            for item in items if item.restore_from is not None
        )))

    async def _admit(self, item: TargetProgress) -> None:
        """Put an up replacement into rotation; only then does its grace period (and slot) run."""
        assert item.replacement is not None
        try:
            await self.balancer.admit(await self._link.retrying(partial(self.backend.refresh, item.replacement)))
        except RolloverError as exc:
            self._messages.put_nowait(Admitted(item.target.id, self._now(), f"admission failed: {exc}"))
            return
        self._report(EventKind.ADMITTED, item.target.name, replacement=item.replacement.name)
        self._messages.put_nowait(Admitted(item.target.id, self._now()))

    async def _drain(self, replica: Replica) -> None:
        drained = await self.balancer.drain(replica, self._drain_timeout_s)
        if self._admission:
            self._report(EventKind.DRAINED, replica.name, sessions_left=drained.sessions_left,
                         waited_s=round(drained.waited_s, 3))

    async def _retire(self, item: TargetProgress) -> None:
        try:
            await self._drain(item.target)
            await self._link.retrying(lambda: self.backend.retire(item.target))
            await self.balancer.forget(item.target)
        except RolloverError as exc:
            self._cleanup_failed(item, f"could not retire {item.target.name}: {exc}")
            return
        self._report(EventKind.RETIRED, item.target.name)

    async def _forget_removed(self, item: TargetProgress) -> None:
        """A target someone else removed (skipped) leaves the balancer too: nothing drains or retires
        it, and its server would go on pointing at a container that is gone."""
        try:
            await self.balancer.forget(item.target)
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
        await self.balancer.forget(item.replacement)
        replacement = item.replacement
        await self._link.retrying(lambda: self.backend.discard(replacement))
        self._report(EventKind.DISCARDED, item.target.name, replacement=item.replacement.name)
