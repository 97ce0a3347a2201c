"""PURE: the state of a rollout and how it changes as events arrive.

Every function takes the state and an event (with its time) and returns a new state; nothing
here performs anything or reads a clock. ``plan.decide`` reads the state to say what to do next.

One ``TargetProgress`` per target walks:

    WAITING -> REQUESTED -> REDEPLOYING -> [ADMITTING] -> SETTLING -> UP
                   \\             \\              \\             \\
                    +-------------+--------------+-------------+--> FAILED

REQUESTED: the request is out, not yet acknowledged. REDEPLOYING: the platform acknowledged; the
replacement exists and is starting. ADMITTING (only with a balancer or a post-start hook): the
replacement is up and is being put into rotation. SETTLING: it serves and the grace period runs.
A rollback is a second rollout of the same shape whose targets are the replacements, each
carrying the original it is restored from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from rollover.core.model import Replica


class Phase(StrEnum):
    WAITING = "waiting"
    REQUESTED = "requested"
    REDEPLOYING = "redeploying"
    ADMITTING = "admitting"
    SETTLING = "settling"
    UP = "up"
    FAILED = "failed"
    SKIPPED = "skipped"  # the target vanished before its turn


IN_FLIGHT = frozenset({Phase.REQUESTED, Phase.REDEPLOYING, Phase.ADMITTING, Phase.SETTLING})
FINISHED = frozenset({Phase.UP, Phase.FAILED, Phase.SKIPPED})


@dataclass(frozen=True)
class TargetProgress:
    target: Replica
    phase: Phase = Phase.WAITING
    restore_from: Replica | None = None  # set in a rollback: the original to put back
    replacement: Replica | None = None
    requested_at: float | None = None
    acked_at: float | None = None
    up_at: float | None = None
    settle_until: float | None = None
    deadline: float | None = None  # the replacement must be up by then
    finished_at: float | None = None
    failure: str | None = None
    admission_issued: bool = False
    adopted: bool = False  # replaced by a dead rollout's finished replacement (see recovery.py)
    # A stand-in for a replica a dead rollout removed and never replaced (see recovery.py): its
    # request makes a fresh replica; there is no old one to drain or retire, nor one to put back.
    refill: bool = False
    cleaned_up: bool = False  # the platform action owed after the outcome was issued


@dataclass(frozen=True)
class RolloutState:
    progress: tuple[TargetProgress, ...]
    batch: int  # replicas allowed in flight at once, before extras
    grace_s: float
    admission: bool = False  # replacements must be admitted (balancer, post-start hook) before settling
    request_outstanding: bool = False
    stopped_issuing: bool = False
    extras_up: frozenset[str] = frozenset()
    # Unknown replicas seen up while a request was outstanding: replacement or extra is only
    # known once the acknowledgement names the replacements.
    unclaimed_up: tuple[tuple[str, float], ...] = ()
    # Likewise unknown replicas seen going down (a replacement that died before its ack arrived).
    unclaimed_down: tuple[tuple[str, float, str], ...] = ()
    # The platform's events may be missing (the stream is lost, or its resync not yet in): a
    # replacement may be up unseen, so no deadline fails it until the resync has been applied.
    blind: bool = False

    def in_flight(self) -> int:
        return sum(1 for item in self.progress if item.phase in IN_FLIGHT)

    def waiting(self) -> list[TargetProgress]:
        return [item for item in self.progress if item.phase is Phase.WAITING]

    def count(self, phase: Phase) -> int:
        return sum(1 for item in self.progress if item.phase is phase)


def start(
    targets: Sequence[Replica], batch: int, grace_s: float, restore_from: Sequence[Replica] | None = None,
    admission: bool = False, adopted: Sequence[tuple[Replica, Replica]] = (), now: float = 0.0,
    refills: Sequence[Replica] = (),
) -> RolloutState:
    """A rollout of ``targets``; ``adopted`` pairs (old, successor) start out UP, their old replica
    still to be retired. ``refills`` (stand-ins for missing replicas) go out before the targets:
    the service is short until they are up.

    With ``admission``, an adopted successor is admitted first (ADMITTING): the dead rollout may
    have died before it put it into rotation, and retiring the old replica then would leave the
    balancer one replica short. Admitting one that is in rotation already changes nothing."""
    originals = list(restore_from) if restore_from is not None else [None] * len(targets)
    done = tuple(
        TargetProgress(target=old, phase=Phase.ADMITTING, replacement=new, up_at=now, adopted=True) if admission
        else TargetProgress(target=old, phase=Phase.UP, replacement=new, up_at=now, finished_at=now, adopted=True)
        for old, new in adopted
    )
    missing = tuple(TargetProgress(target=stand_in, refill=True) for stand_in in refills)
    progress = tuple(
        TargetProgress(target=target, restore_from=original)
        for target, original in zip(targets, originals, strict=True)
    )
    return RolloutState(progress=done + missing + progress, batch=batch, grace_s=grace_s, admission=admission)


def _update(state: RolloutState, ids: Iterable[str], **changes: object) -> RolloutState:
    wanted = set(ids)
    progress = tuple(
        replace(item, **changes) if item.target.id in wanted else item  # type: ignore[arg-type]
        for item in state.progress
    )
    return replace(state, progress=progress)


def request_sent(state: RolloutState, target_ids: Sequence[str], at: float) -> RolloutState:
    state = _update(state, target_ids, phase=Phase.REQUESTED, requested_at=at)
    return replace(state, request_outstanding=True)


def request_acknowledged(
    state: RolloutState, target_ids: Sequence[str], replacements: Sequence[Replica], at: float,
    timeouts: Sequence[float],
) -> RolloutState:
    """The platform made the replacements (same order as the targets); their clocks start now.

    A replacement may have taken the place of another target than the one asked for
    (``Replica.replaces``: Swarm picks the slot). The targets that went are the ones in flight now,
    to be drained and retired; each target asked for that did not go trades places with a waiting
    one that did. Asked for web-1, web-2 and web-3, Swarm replaced web-2, web-3 and web-5: web-1
    trades with web-5 (web-5 redeploying, web-1 waiting), and each replacement belongs to the
    target it displaced, whatever the order of the answer.
    """
    progress = list(state.progress)
    by_id = {item.target.id: index for index, item in enumerate(progress)}
    places = [by_id[target_id] for target_id in target_ids]  # the request's places in the progress
    went = [new.replaces or target_id for target_id, new in zip(target_ids, replacements, strict=True)]
    not_gone = [target_id for target_id in target_ids if target_id not in went]
    instead = [gone for gone in went if gone not in target_ids and gone in by_id
               and progress[by_id[gone]].phase is Phase.WAITING]
    for asked, gone in zip(not_gone, instead, strict=False):  # one left over on either side stays put
        mine, theirs = by_id[asked], by_id[gone]
        progress[mine], progress[theirs] = (
            replace(progress[mine], target=progress[theirs].target, restore_from=progress[theirs].restore_from),
            replace(progress[theirs], target=progress[mine].target, restore_from=progress[mine].restore_from),
        )
        by_id[asked], by_id[gone] = theirs, mine
    # Each replacement goes to the place of the target it displaced; one that displaced nothing
    # known takes the next place left.
    owners: dict[int, int] = {}
    for number, gone in enumerate(went):
        place = by_id.get(gone)
        if place in places and place not in owners.values():
            owners[number] = place
    left = [place for place in places if place not in owners.values()]
    for number, (new, timeout) in enumerate(zip(replacements, timeouts, strict=True)):
        index = owners[number] if number in owners else left.pop(0)
        progress[index] = replace(
            progress[index], phase=Phase.REDEPLOYING, replacement=new, acked_at=at, deadline=at + timeout
        )
    state = replace(state, progress=tuple(progress), request_outstanding=False)
    # A replica seen up as an extra may be named a replacement: the platform made it by itself
    # (Swarm's updater, restarted by someone else's spec change) and the request took it. It is
    # up as of now; it no longer frees a slot.
    claimed = state.extras_up & {new.id for new in replacements}
    state = replace(state, extras_up=state.extras_up - claimed)
    for replica_id in sorted(claimed):
        state = replica_up(state, replica_id, at)
    # Ups that raced ahead of the acknowledgement now find their owner, or are extras.
    unclaimed, downs = state.unclaimed_up, state.unclaimed_down
    state = replace(state, unclaimed_up=(), unclaimed_down=())
    for replica_id, up_at in unclaimed:
        state = replica_up(state, replica_id, up_at)
    for replica_id, down_at, reason in downs:
        state = replica_down(state, replica_id, reason, down_at)
    return state


def request_failed(state: RolloutState, target_ids: Sequence[str], reason: str, at: float, *,
                   removed: bool = False) -> RolloutState:
    """The request failed; ``removed``: there was nothing left to replace (a scale-down took the
    targets' places), so they are skipped."""
    state = _update(state, target_ids, phase=Phase.SKIPPED if removed else Phase.FAILED, failure=reason,
                    finished_at=at)
    return replace(state, request_outstanding=False)


def _find(state: RolloutState, replica_id: str) -> tuple[TargetProgress | None, TargetProgress | None]:
    """(entry whose replacement is this replica, entry whose target is this replica)."""
    as_replacement = next(
        (item for item in state.progress if item.replacement and item.replacement.id == replica_id), None
    )
    as_target = next((item for item in state.progress if item.target.id == replica_id), None)
    return as_replacement, as_target


def replica_up(state: RolloutState, replica_id: str, at: float) -> RolloutState:
    """A replica came up. A replacement starts settling; an extra frees a slot; a target waits."""
    owner, target = _find(state, replica_id)
    if owner is not None:
        if owner.phase is not Phase.REDEPLOYING:
            return state  # a repeated healthy report
        if state.admission:
            return _update(state, [owner.target.id], phase=Phase.ADMITTING, up_at=at)
        return _update(state, [owner.target.id], phase=Phase.SETTLING, up_at=at, settle_until=at + state.grace_s)
    if target is not None:
        return state  # a starting target came up: it still waits for its turn (the seed's rule)
    if state.request_outstanding:
        return replace(state, unclaimed_up=(*state.unclaimed_up, (replica_id, at)))
    return replace(state, extras_up=state.extras_up | {replica_id})


def replica_down(state: RolloutState, replica_id: str, reason: str, at: float, *, gone: bool = False,
                 slot_removed: bool = False) -> RolloutState:
    """A replica exited, turned unhealthy or was removed (``gone``: it will never run again;
    ``slot_removed``: with its place in the service, which now wants one replica less, so a
    replacement lost this way leaves its target skipped, not failed)."""
    owner, target = _find(state, replica_id)
    if owner is not None and owner.phase in (Phase.REDEPLOYING, Phase.ADMITTING, Phase.SETTLING):
        if slot_removed:
            return _update(state, [owner.target.id], phase=Phase.SKIPPED, failure=f"replacement {reason}",
                           finished_at=at)
        return _update(state, [owner.target.id], phase=Phase.FAILED, failure=f"replacement {reason}",
                       finished_at=at)
    if target is not None and target.phase is Phase.WAITING and gone:
        return _update(state, [target.target.id], phase=Phase.SKIPPED, failure=f"{reason} before its turn",
                       finished_at=at)
    if replica_id in state.extras_up:
        return replace(state, extras_up=state.extras_up - {replica_id})
    unclaimed = tuple(entry for entry in state.unclaimed_up if entry[0] != replica_id)
    if state.request_outstanding and target is None:
        # Perhaps the replacement the outstanding request is making: the ack will tell.
        return replace(state, unclaimed_up=unclaimed, unclaimed_down=(*state.unclaimed_down, (replica_id, at, reason)))
    return replace(state, unclaimed_up=unclaimed)


def blinded(state: RolloutState) -> RolloutState:
    """The event stream is lost: deadlines wait (see ``RolloutState.blind``)."""
    return replace(state, blind=True)


def sighted(state: RolloutState, now: float) -> RolloutState:
    """The resync after the stream came back has been applied: deadlines that passed meanwhile
    fall due now. Timeout 12 s, acknowledged at 1 s, lost from 2 s to 30 s: a replacement the
    resync shows up is UP; one it shows still starting fails at 30 s ("not up within 29s"), not
    at 13 s."""
    progress = tuple(
        replace(item, deadline=now)
        if item.phase is Phase.REDEPLOYING and item.deadline is not None and item.deadline < now else item
        for item in state.progress
    )
    return replace(state, progress=progress, blind=False)


def advance(state: RolloutState, now: float) -> RolloutState:
    """Let time pass: grace periods that ran out make replicas UP; missed deadlines are failures,
    unless the rollout is blind (they fail once it sees again, at the time it does)."""
    progress = []
    for item in state.progress:
        if item.phase is Phase.SETTLING and item.settle_until is not None and item.settle_until <= now:
            item = replace(item, phase=Phase.UP, finished_at=item.settle_until)
        elif (item.phase is Phase.REDEPLOYING and item.deadline is not None and item.deadline <= now
              and not state.blind):
            timeout = item.deadline - (item.acked_at or 0.0)
            item = replace(item, phase=Phase.FAILED, finished_at=item.deadline,
                           failure=f"replacement not up within {timeout:g}s")
        progress.append(item)
    return replace(state, progress=tuple(progress))


def _admitting(state: RolloutState, target_id: str) -> bool:
    """Whether this phase's target is waiting for the balancer. An answer can outlive its phase:
    the forward phase asks the balancer to admit a replacement, a failure elsewhere starts the
    rollback, and the answer arrives in the rollback's state, which has no such target."""
    item = next((item for item in state.progress if item.target.id == target_id), None)
    return item is not None and item.phase is Phase.ADMITTING


def admission_issued(state: RolloutState, target_id: str) -> RolloutState:
    return _update(state, [target_id], admission_issued=True)


def admitted(state: RolloutState, target_id: str, at: float) -> RolloutState:
    """The replacement is in rotation: its grace period starts now."""
    if not _admitting(state, target_id):
        return state  # it failed meanwhile, or the answer is for another phase's replica
    return _update(state, [target_id], phase=Phase.SETTLING, settle_until=at + state.grace_s)


def admission_failed(state: RolloutState, target_id: str, reason: str, at: float) -> RolloutState:
    if not _admitting(state, target_id):
        return state
    return _update(state, [target_id], phase=Phase.FAILED, failure=reason, finished_at=at)


def stop_issuing(state: RolloutState) -> RolloutState:
    return replace(state, stopped_issuing=True)


def cleaned_up(state: RolloutState, target_id: str) -> RolloutState:
    return _update(state, [target_id], cleaned_up=True)
