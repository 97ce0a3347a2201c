"""The one async loop: messages -> state -> decision; ``executor`` carries out the decision's effects.

The controller owns no rules: ``rollout`` says how the state changes, ``plan`` says what to do.
Only the loop changes the rollout state: the effects it hands to the executor come back as messages.
It runs unchanged against the simulator on virtual time and against real platforms. All its time
is the running loop's clock; every time it reports is relative to the start of the rollout.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Protocol, assert_never

from rollover.backends.base import Backend, Refilling
from rollover.balancers.base import Balancer, NoBalancer
from rollover.controller.executor import Executor
from rollover.controller.liveness import Broken, Liveness, StreamLost, StreamRestored
from rollover.controller.mailbox import Mailbox
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
from rollover.core.events import EVENT_SCHEMA_VERSION, EventKind
from rollover.core.model import Order, ProgressEvent, ReplicaDown, ReplicaUp, ServiceSnapshot, StaleLock
from rollover.core.plan import Decision, decide, needs_repair
from rollover.core.policy import (
    FailurePolicy,
    Policy,
    batch_size,
    choose_order,
    lock_lease_s,
    replacement_timeout,
    tolerated_failures,
)
from rollover.core.probe_report import ProbeReport
from rollover.core.recovery import Recovery, made_by, plan_recovery
from rollover.core.result import RolloutResult, conclude, first_failure, summary_figures
from rollover.core.rollout import Phase, RolloutState
from rollover.core.steps import replica_steps
from rollover.errors import BadInput, EngineLost, Locked, PlatformError, RolloverError, StoppedBySignal

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
                 probe: TrafficProbe | None = None, max_probe_failures: int | None = None,
                 lock_wait_s: float = 0.0) -> None:
        self.backend = backend
        self.probe = probe
        self.max_probe_failures = max_probe_failures
        self.policy = policy
        self.balancer: Balancer = balancer or NoBalancer()
        self._admission = balancer is not None
        self._drain_timeout_s = drain_timeout_s  # also bounds the lock's lease
        self._report_to = report or (lambda event: None)
        self._holder = holder or default_holder()
        self._messages: Mailbox[Message] = Mailbox()
        # Event-stream outages so far, and whether the last one's resync is still to be applied:
        # until it is, deadlines wait (rollout.blinded).
        self._outages = 0
        self._outages_unseen = False
        self._t0 = 0.0
        self._order = Order.START_FIRST
        self._interrupted_by: str | None = None
        # Set when the platform stayed away mid-rollout: the rollout ends where it stands, with a summary.
        self._engine_lost: EngineLost | None = None
        self._link = Liveness(backend, self._messages.post, self._report)
        self._effects = Executor(backend, self.balancer, self._link, self._messages.post, self._report,
                                 admission=self._admission, drain_timeout_s=drain_timeout_s)
        self._main: asyncio.Task[object] | None = None
        self._lock_wait_s = lock_wait_s
        self._signalled = asyncio.Event()  # ends a --lock-wait: nothing is touched yet

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
        self._signalled.set()
        if self._interrupted_by is None:
            self._interrupted_by = signal_name
            self._messages.post(Interrupted(signal_name))
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
            stale, waited = await self._take_lock(lease_s, len(snapshot.replicas))
            try:
                if waited:  # the other rollout changed the service meanwhile: look again
                    snapshot, batch = await self._look_again()
                return await self._roll(snapshot, batch, stale)
            finally:
                await self._release_lock()
        finally:
            if pump is not None:
                pump.cancel()
            await self.balancer.close()
            await self.backend.close()

    async def _take_lock(self, lease_s: float, replicas: int) -> tuple[StaleLock | None, bool]:
        """The lock, and whether it took waiting for it. Locked at once without ``--lock-wait``;
        with it, wait (reported once) for the live holder to let go, up to the bound, then Locked."""
        deadline = self._now() + self._lock_wait_s
        waited = False
        while True:
            try:
                return await self.backend.acquire_lock(self._holder, lease_s, replicas), waited
            except Locked as exc:
                left = deadline - self._now()
                if left <= 0:
                    raise Locked(f"{exc} (waited {self._lock_wait_s:g} s)" if waited else str(exc)) from None
                if not waited:
                    self._report(EventKind.LOCK_WAIT, holder=str(exc), wait_s=self._lock_wait_s)
                waited = True
                await self._wait_for_lock(left)

    async def _wait_for_lock(self, timeout_s: float) -> None:
        released = asyncio.ensure_future(self.backend.wait_for_lock(timeout_s))
        signalled = asyncio.ensure_future(self._signalled.wait())
        try:
            await asyncio.wait({released, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (released, signalled):
                waiter.cancel()
        if self._interrupted_by is not None:
            raise StoppedBySignal(
                f"stopped waiting for the lock (interrupted by {self._interrupted_by}): nothing touched")
        released.result()  # its error (the engine gone, say), if it had one

    async def _look_again(self) -> tuple[ServiceSnapshot, int]:
        """After waiting for the lock: the replicas as the other rollout left them, a new plan."""
        snapshot = await self.backend.snapshot()
        await self.backend.prepare(snapshot)
        self._order, why = choose_order(self.policy.order, snapshot.replicas)
        batch = batch_size(self.policy.step, len(snapshot.replicas))
        self._t0 = self._now()
        self._report_plan(snapshot, batch, why)
        await self.balancer.attach(snapshot.replicas)
        return snapshot, batch

    async def _recover(self, snapshot: ServiceSnapshot, stale: StaleLock) -> Recovery:
        """Take over from a dead rollout: adopt its finished replacements, discard its half-made ones,
        and refill (in the rollout, first) the replicas it removed and never replaced."""
        self._report(EventKind.TOOK_OVER_LOCK, holder=stale.holder, reason=stale.reason, replicas=stale.replicas)
        # Taking the lock over may have started what the dead rollout left stopped (a replica that
        # is the only one holding its data): look again, and let the balancer learn it too.
        snapshot = await self._link.retrying(self.backend.snapshot)
        try:
            await self.balancer.attach(snapshot.replicas)
        except BadInput as exc:  # the lock is taken and leftovers sorted: no longer "nothing was touched"
            raise PlatformError(f"after taking the lock over: {exc}") from exc
        fresh = [replica.id for replica in snapshot.replicas if made_by(replica, stale)]
        seen = await self._link.retrying(lambda: self.backend.observe(fresh))  # the lock is taken: mid-rollout
        up = {event.replica_id for event in seen if isinstance(event, ReplicaUp)}
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
            EventKind.PLAN, schema=EVENT_SCHEMA_VERSION, service=snapshot.name, platform=snapshot.platform,
            where=snapshot.description,
            targets=[replica.name for replica in snapshot.replicas], step=str(self.policy.step), batch=batch,
            order=self._order.value, order_reason=why, grace_s=self.policy.grace_s,
            timeout_s=timeouts, on_failure=self.policy.on_failure.value,
        )

    async def _roll(self, snapshot: ServiceSnapshot, batch: int, stale: StaleLock | None) -> RolloutResult:
        recovery: Recovery | None = None
        try:
            recovery = await self._recover(snapshot, stale) if stale is not None else None
        except EngineLost as lost:
            self._engine_lost = lost  # nothing of this rollout's own was touched yet: every target waits
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
        # replica); under 'pause' everything stays as it is, and without the engine nothing can move.
        back: RolloutState | None = None
        tolerated = tolerated_failures(self.policy, len(forward.progress))
        # Failures max_failure_ratio absorbs leave the policy unapplied: only repairs are owed.
        within = self._interrupted_by is None and forward.count(Phase.FAILED) <= tolerated
        rolling_back = self.policy.on_failure is FailurePolicy.ROLLBACK and not within
        if (self.policy.on_failure is not FailurePolicy.PAUSE or within) and self._engine_lost is None and (
                self._interrupted_by is not None or first_failure(forward) is not None):
            back = await self._roll_back(forward, batch, everything=rolling_back)
        probe = await self.probe.stop() if self.probe is not None else None
        outcome, failure = conclude(forward, back, self.policy.on_failure, interrupted_by=self._interrupted_by,
                                    problems=self._effects.problems, probe=probe,
                                    max_probe_failures=self.max_probe_failures,
                                    engine_lost=None if self._engine_lost is None else str(self._engine_lost),
                                    tolerated=tolerated)
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
        # rollback_config: how a rollback rolls, when it says; else like the rollout.
        grace_s = self.policy.grace_s if self.policy.rollback_grace_s is None else self.policy.rollback_grace_s
        if self.policy.rollback_step is not None:
            batch = batch_size(self.policy.rollback_step, len(done))
        if not done:
            return rollout.start([], batch, grace_s)
        kept = [item.replacement.name for item in forward.progress
                if everything and item.refill and item.phase is Phase.UP and item.replacement]
        self._report(EventKind.ROLLBACK, replicas=[item.target.name for item in done], kept_refills=kept)
        replacements = [item.replacement for item in done if item.replacement is not None]
        originals = [item.target for item in done]
        return await self._run_phase(
            rollout.start(replacements, batch, grace_s, restore_from=originals, admission=self._admission)
        )

    async def _run_phase(self, state: RolloutState) -> RolloutState:
        """Run one phase to its end; when the engine is lost (or was already), its state as it stands."""
        if self._engine_lost is not None:
            return state
        if self._outages_unseen:
            state = rollout.blinded(state)
        try:
            state = self._advance(state)
            while True:
                decision = decide(state, self.policy, self._order, self._now())
                state = self._act(state, decision)
                if decision.finished:
                    break
                # Everything that arrived meanwhile (in a simulation: all of this instant), each
                # message followed by what time made due, then one decision for them all.
                messages = await self._messages.take(decision.wake_at)
                for message in messages:
                    state = self._advance(self._apply(state, partial(self._receive, message=message)))
                if not messages:  # the deadline came first
                    state = self._advance(state)
            await self._effects.settle()
        except EngineLost as lost:
            self._engine_lost = lost
            await self._effects.abandon()  # the engine that would carry them out is gone
        return state

    def _advance(self, state: RolloutState) -> RolloutState:
        return self._apply(state, lambda s: rollout.advance(s, self._now()))

    def _act(self, state: RolloutState, decision: Decision) -> RolloutState:
        if decision.stop_issuing:
            state = rollout.stop_issuing(state)
            self._report(EventKind.STOP_ISSUING, policy=self.policy.on_failure.value)
        cleanups = (*decision.retire, *decision.discard)
        if decision.admit or cleanups or decision.request:
            # One transition for all the decision issues (a simulation makes 20,000 decisions).
            state = self._apply(state, lambda s: rollout.issued(
                s, admissions=[item.target.id for item in decision.admit],
                cleanups=[item.target.id for item in cleanups],
                request=[item.target.id for item in decision.request], at=self._now()))
        for item in decision.admit:
            self._effects.admit(item)
        for item in decision.retire:
            self._effects.retire(item)
        for item in decision.discard:
            self._effects.discard(item)
        if decision.request:
            self._effects.request(decision.request, self._order)
        return state

    def _stop_on_interrupt(self, state: RolloutState, signal_name: str) -> RolloutState:
        self._report(EventKind.INTERRUPTED, signal=signal_name, in_flight=state.in_flight())
        return rollout.stop_issuing(state)

    def _receive(self, state: RolloutState, *, message: Message) -> RolloutState:
        match message:
            case ReplicaUp():
                return rollout.replica_up(state, message.replica_id, message.at)
            case ReplicaDown():
                return rollout.replica_down(state, message.replica_id, message.reason, message.at,
                                            gone=message.gone, slot_removed=message.slot_removed)
            case Acknowledged():
                timeouts = [replacement_timeout(self.policy, new) for new in message.replacements]
                return rollout.request_acknowledged(state, message.target_ids, message.replacements, message.at,
                                                    timeouts)
            case RequestFailed():
                return rollout.request_failed(state, message.target_ids, message.reason, message.at,
                                              removed=message.removed)
            case Admitted() if message.failure is not None:
                return rollout.admission_failed(state, message.target_id, message.failure, message.at)
            case Admitted():
                return rollout.admitted(state, message.target_id, message.at)
            case Interrupted():
                return self._stop_on_interrupt(state, message.signal)
            case StreamLost():
                self._outages += 1
                self._outages_unseen = True
                return rollout.blinded(state)
            case StreamRestored():
                self._effects.resync(watched_ids(state), outage=self._outages)
                return state
            case Resynced() if message.outage != self._outages:
                return state  # lost again since: the next resync decides
            case Resynced():
                self._outages_unseen = False
                return rollout.sighted(state, self._now())
            case Broken():
                raise message.error
            case _:
                assert_never(message)

    def _apply(self, state: RolloutState, change: Callable[[RolloutState], RolloutState]) -> RolloutState:
        """Apply a pure transition and tell the user about every step each replica took."""
        new = change(state)
        for before, after in rollout.changes(state, new):
            # The changed targets only (see rollout.changes): 10,000 of them in a simulation.
            for kind, name, at, detail in replica_steps(before, after, self.policy.grace_s):
                if kind is EventKind.FAILED:
                    self._effects.explain_failure(after, at, detail)
                else:
                    self._emit(kind, name, at, detail)
            if after.phase is Phase.SKIPPED and before.phase is not Phase.SKIPPED:
                self._effects.forget_removed(after)
        return new
