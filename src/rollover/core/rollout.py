"""PURE: the state of a rollout and how it changes as events arrive.

Every function takes the state and an event (with its time) and returns a new state; nothing
here performs anything or reads a clock. ``plan.decide`` reads the state to say what to do next.

One ``TargetProgress`` per target walks:

    WAITING -> REQUESTED -> REDEPLOYING -> [ADMITTING] -> [SETTLING] -> UP
                   \\             \\              \\              \\
                    +-------------+--------------+--------------+--> FAILED

REQUESTED: the request is out, not yet acknowledged. REDEPLOYING: the platform acknowledged; the
replacement exists and is starting. ADMITTING (only with a balancer or a post-start hook): the
replacement is up and is being put into rotation. SETTLING: it serves and the grace period runs
(without a grace period, none: it is UP the moment it serves).
A rollback is a second rollout of the same shape whose targets are the replacements, each
carrying the original it is restored from.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum

from rollover.core.model import Replica
from rollover.core.persistent import Pieces, Shards


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


_FIELDS = frozenset(field.name for field in fields(TargetProgress))


def evolved(item: TargetProgress, **changes: object) -> TargetProgress:
    """``dataclasses.replace`` for a TargetProgress at the cost of one dict copy (``replace`` runs
    ``__init__`` field by field): a simulated rollout of 10,000 replicas makes 50,000 of them."""
    assert changes.keys() <= _FIELDS, f"not fields of TargetProgress: {changes.keys() - _FIELDS}"
    new = object.__new__(TargetProgress)
    object.__setattr__(new, "__dict__", {**item.__dict__, **changes})
    return new


class RolloutState:
    """The rollout's state, immutable like a frozen dataclass, and indexed: besides the targets'
    progress in order it keeps where each target and replacement is, how many targets are in each
    phase, the first one waiting, the cleanups owed and the grace ends and deadlines in heaps, all
    maintained by the transitions (``_put``), so that an event costs O(log n), not O(n): a
    simulated rollout of 10,000 replicas sees 50,000 of them."""

    batch: int  # replicas allowed in flight at once, before extras
    grace_s: float
    admission: bool  # replacements must be admitted (balancer, post-start hook) before settling
    request_outstanding: bool
    stopped_issuing: bool
    extras_up: frozenset[str]
    # Unknown replicas seen up while a request was outstanding: replacement or extra is only
    # known once the acknowledgement names the replacements.
    unclaimed_up: tuple[tuple[str, float], ...]
    # Likewise unknown replicas seen going down (a replacement that died before its ack arrived).
    unclaimed_down: tuple[tuple[str, float, str], ...]
    # The platform's events may be missing (the stream is lost, or its resync not yet in): a
    # replacement may be up unseen, so no deadline fails it until the resync has been applied.
    blind: bool
    # The index (see _indexed): positions are places in ``progress``.
    _items: Pieces[TargetProgress]
    _position: dict[str, int]  # target id -> position
    _replacement: Shards[str, int]  # replacement id -> position
    _counts: dict[Phase, int]
    _first_waiting: int  # no WAITING target before it (len when none waits)
    _to_admit: frozenset[int]  # ADMITTING, admission not yet issued
    _adopted_up: frozenset[int]  # UP adopted successors whose old replica is still to retire
    _replaced_up: Shards[int, None]  # UP replacements (not refills) whose old replica is still to retire
    _failed_replaced: frozenset[int]  # FAILED with a replacement still to discard
    _settle_ends: list[tuple[float, int]]  # heap of (settle_until, position) of SETTLING targets
    _deadlines: list[tuple[float, int]]  # heap of (deadline, position) of REDEPLOYING targets
    # (the items before the last _put, the positions it changed): what ``changes`` reads when it
    # is asked about that one step, the usual case, instead of comparing every piece.
    _delta: tuple[Pieces[TargetProgress], tuple[int, ...]]

    def __init__(
        self, progress: Sequence[TargetProgress], batch: int, grace_s: float, admission: bool = False,
        request_outstanding: bool = False, stopped_issuing: bool = False, extras_up: frozenset[str] = frozenset(),
        unclaimed_up: tuple[tuple[str, float], ...] = (), unclaimed_down: tuple[tuple[str, float, str], ...] = (),
        blind: bool = False,
    ) -> None:
        fields = dict(batch=batch, grace_s=grace_s, admission=admission, request_outstanding=request_outstanding,
                      stopped_issuing=stopped_issuing, extras_up=extras_up, unclaimed_up=unclaimed_up,
                      unclaimed_down=unclaimed_down, blind=blind)
        for name, value in (*fields.items(), *_indexed(progress).items()):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RolloutState is immutable: cannot set {name}")

    def _evolve(self, **changes: object) -> RolloutState:
        new = object.__new__(RolloutState)
        object.__setattr__(new, "__dict__", {**self.__dict__, **changes})  # one C-level copy of the fields
        return new

    def _public(self) -> tuple[object, ...]:
        return (self.progress, self.batch, self.grace_s, self.admission, self.request_outstanding,
                self.stopped_issuing, self.extras_up, self.unclaimed_up, self.unclaimed_down, self.blind)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RolloutState) and self._public() == other._public()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RolloutState(progress={self.progress!r}, batch={self.batch!r}, blind={self.blind!r}, ...)"

    @property
    def progress(self) -> tuple[TargetProgress, ...]:
        return tuple(self._items)

    def targets(self) -> int:
        """How many targets the rollout has (``len(progress)`` without building it)."""
        return len(self._items)

    def in_flight(self) -> int:
        return sum(self._counts[phase] for phase in IN_FLIGHT)

    def waiting(self) -> list[TargetProgress]:
        return [item for item in self._items if item.phase is Phase.WAITING]

    def count(self, phase: Phase) -> int:
        return self._counts[phase]

    def first_waiting(self) -> TargetProgress | None:
        return self._items[self._first_waiting] if self._first_waiting < len(self._items) else None

    def to_admit(self) -> tuple[TargetProgress, ...]:
        return self._in_order(self._to_admit)

    def retirable(self, replaced_too: bool) -> tuple[TargetProgress, ...]:
        """UP targets whose old replica is still to retire: adopted ones, and with ``replaced_too``
        (start-first) the replaced ones, in order."""
        if not (replaced_too and self._replaced_up):
            return self._in_order(self._adopted_up)
        return self._in_order({*self._adopted_up, *self._replaced_up})

    def failed_replaced(self) -> tuple[TargetProgress, ...]:
        """FAILED targets whose replacement is still to discard, in order."""
        return self._in_order(self._failed_replaced)

    def _in_order(self, positions: Iterable[int]) -> tuple[TargetProgress, ...]:
        return tuple(self._items[position] for position in sorted(positions)) if positions else ()

    def next_settle_end(self) -> float | None:
        return self._settle_ends[0][0] if self._settle_ends else None

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None


def changes(before: RolloutState, after: RolloutState) -> list[tuple[TargetProgress, TargetProgress]]:
    """(before, after) of every target a transition changed, in order; transitions keep an
    unchanged target as the same object, so identity finds them."""
    mine, theirs = before._items, after._items
    if mine is theirs:
        return []
    parent, positions = after._delta
    if parent is not mine:  # several steps apart: compare them piece by piece
        positions = tuple(mine.changed(theirs))
    return [(mine[position], theirs[position]) for position in sorted(positions)
            if mine[position] is not theirs[position]]


def _indexed(progress: Sequence[TargetProgress]) -> dict[str, object]:
    """The index of ``progress`` counted from scratch (a new state, a rare reshuffle)."""
    items = Pieces(tuple(progress))
    counts = dict.fromkeys(Phase, 0)
    for item in progress:
        counts[item.phase] += 1
    first = next((position for position, item in enumerate(progress) if item.phase is Phase.WAITING), len(progress))
    index: dict[str, object] = dict(
        _items=items, _position={item.target.id: position for position, item in reversed(list(enumerate(progress)))},
        _replacement=Shards((item.replacement.id, position) for position, item in reversed(list(enumerate(progress)))
                            if item.replacement is not None),
        _counts=counts, _first_waiting=first, _delta=(items, ()),
    )
    memberships: dict[str, object] = {}
    for name in ("_to_admit", "_adopted_up", "_failed_replaced"):
        memberships[name] = frozenset(position for position, item in enumerate(progress)
                                      if _membership(item) == name)
    memberships["_replaced_up"] = Shards((position, None) for position, item in enumerate(progress)
                                         if _membership(item) == "_replaced_up")
    settle_ends = [(item.settle_until, position) for position, item in enumerate(progress) if _settling(item)]
    deadlines = [(item.deadline, position) for position, item in enumerate(progress) if _redeploying(item)]
    heapq.heapify(settle_ends)
    heapq.heapify(deadlines)
    return {**index, **memberships, "_settle_ends": settle_ends, "_deadlines": deadlines}


def _settling(item: TargetProgress) -> bool:
    return item.phase is Phase.SETTLING and item.settle_until is not None


def _redeploying(item: TargetProgress) -> bool:
    return item.phase is Phase.REDEPLOYING and item.deadline is not None


def _membership(item: TargetProgress) -> str:
    """Which of the index's cleanup memberships ``item`` is in ('' for none; they exclude each
    other, by phase): ADMITTING not yet issued, UP adopted or replaced with its old replica still
    to retire (a refill has none), FAILED with a replacement still to discard."""
    phase = item.phase
    if phase is Phase.UP:
        if item.cleaned_up or item.refill:
            return ""
        return "_adopted_up" if item.adopted else "_replaced_up"
    if phase is Phase.ADMITTING:
        return "" if item.admission_issued else "_to_admit"
    if phase is Phase.FAILED and item.replacement is not None and not item.cleaned_up:
        return "_failed_replaced"
    return ""


def _put(state: RolloutState, changed: dict[int, TargetProgress], **fields: object) -> RolloutState:
    """``state`` with the targets at these positions changed, its index kept: O(log n) each."""
    if not changed:
        return state._evolve(**fields) if fields else state
    items, counts = state._items, dict(state._counts)
    sets: dict[str, frozenset[int]] = {}
    replaced_up, replacement = state._replaced_up, state._replacement
    settle_ends, deadlines = state._settle_ends, state._deadlines
    first_waiting = state._first_waiting
    for position, new in changed.items():
        old = items[position]
        items = items.with_item(position, new)
        counts[old.phase] -= 1
        counts[new.phase] += 1
        # The index's invariant: a target is in the membership its item says (_membership), so
        # the old item says which one it leaves.
        was, now = _membership(old), _membership(new)
        if was != now:
            if was == "_replaced_up":
                replaced_up = replaced_up.without(position)
            elif was:
                sets[was] = sets.get(was, getattr(state, was)) - {position}
            if now == "_replaced_up":
                replaced_up = replaced_up.set(position, None)
            elif now:
                sets[now] = sets.get(now, getattr(state, now)) | {position}
        if new.replacement is not None and new.replacement is not old.replacement:
            replacement = replacement.set(new.replacement.id, position)
        if _settling(new) and not (_settling(old) and old.settle_until == new.settle_until):
            settle_ends = [*settle_ends]
            heapq.heappush(settle_ends, (new.settle_until or 0.0, position))  # set: _settling(new)
        if _redeploying(new) and not (_redeploying(old) and old.deadline == new.deadline):
            deadlines = [*deadlines]
            heapq.heappush(deadlines, (new.deadline or 0.0, position))  # set: _redeploying(new)
        if new.phase is Phase.WAITING:
            first_waiting = min(first_waiting, position)
    while first_waiting < len(items) and items[first_waiting].phase is not Phase.WAITING:
        first_waiting += 1
    # Entries of targets that moved on stay in the heaps until they reach the top: pop them there,
    # so that the top is always a live grace end or deadline (only a change can end a top's life).
    if settle_ends and settle_ends[0][1] in changed:
        settle_ends = _pruned(settle_ends, items, _settles_at)
    if deadlines and deadlines[0][1] in changed:
        deadlines = _pruned(deadlines, items, _due_at)
    return state._evolve(_items=items, _counts=counts, _replaced_up=replaced_up, _replacement=replacement,
                         _settle_ends=settle_ends, _deadlines=deadlines, _first_waiting=first_waiting,
                         _delta=(state._items, tuple(changed)), **sets, **fields)


def _settles_at(item: TargetProgress, at: float) -> bool:
    return _settling(item) and item.settle_until == at


def _due_at(item: TargetProgress, at: float) -> bool:
    return _redeploying(item) and item.deadline == at


def _pruned(heap: list[tuple[float, int]], items: Pieces[TargetProgress],
            live: Callable[[TargetProgress, float], bool]) -> list[tuple[float, int]]:
    if not heap or live(items[heap[0][1]], heap[0][0]):
        return heap
    heap = [*heap]
    while heap and not live(items[heap[0][1]], heap[0][0]):
        heapq.heappop(heap)
    return heap


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
    waiting = TargetProgress(target=targets[0]) if targets else None  # the others are copies: 10,000 of them
    progress = tuple(
        evolved(waiting, target=target, restore_from=original)  # type: ignore[arg-type]
        for target, original in zip(targets, originals, strict=True)
    )
    return RolloutState(progress=done + missing + progress, batch=batch, grace_s=grace_s, admission=admission)


def _update(state: RolloutState, ids: Iterable[str], **changes: object) -> RolloutState:
    positions = sorted({state._position[target_id] for target_id in ids if target_id in state._position})
    return _put(state, {position: evolved(state._items[position], **changes) for position in positions})


def request_sent(state: RolloutState, target_ids: Sequence[str], at: float) -> RolloutState:
    state = _update(state, target_ids, phase=Phase.REQUESTED, requested_at=at)
    return state._evolve(request_outstanding=True)


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
    if (len(target_ids) == 1 and replacements[0].replaces in (None, target_ids[0]) and not state.extras_up
            and not state.unclaimed_up and not state.unclaimed_down):
        # The usual answer, without the bookkeeping below for the unusual ones (the same outcome).
        only = state._position[target_ids[0]]
        return _put(state, {only: evolved(state._items[only], phase=Phase.REDEPLOYING, replacement=replacements[0],
                                           acked_at=at, deadline=at + timeouts[0])}, request_outstanding=False)
    progress: dict[int, TargetProgress] = {}  # the places changed, over the state's own

    def at_place(place: int) -> TargetProgress:
        return progress[place] if place in progress else state._items[place]

    by_id = state._position
    places = [by_id[target_id] for target_id in target_ids]  # the request's places in the progress
    went = [new.replaces or target_id for target_id, new in zip(target_ids, replacements, strict=True)]
    not_gone = [target_id for target_id in target_ids if target_id not in went]
    instead = [gone for gone in went if gone not in target_ids and gone in by_id
               and at_place(by_id[gone]).phase is Phase.WAITING]
    swaps = list(zip(not_gone, instead, strict=False))  # one left over on either side stays put
    if swaps:
        by_id = dict(by_id)  # rare (Swarm picked the slot): a C-level copy
    for asked, gone in swaps:
        mine, theirs = by_id[asked], by_id[gone]
        progress[mine], progress[theirs] = (
            evolved(at_place(mine), target=at_place(theirs).target, restore_from=at_place(theirs).restore_from),
            evolved(at_place(theirs), target=at_place(mine).target, restore_from=at_place(mine).restore_from),
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
        progress[index] = evolved(
            at_place(index), phase=Phase.REDEPLOYING, replacement=new, acked_at=at, deadline=at + timeout
        )
    state = _put(state, dict(sorted(progress.items())), _position=by_id, request_outstanding=False)
    # A replica seen up as an extra may be named a replacement: the platform made it by itself
    # (Swarm's updater, restarted by someone else's spec change) and the request took it. It is
    # up as of now; it no longer frees a slot.
    claimed = state.extras_up & {new.id for new in replacements}
    state = state._evolve(extras_up=state.extras_up - claimed)
    for replica_id in sorted(claimed):
        state = replica_up(state, replica_id, at)
    # Ups that raced ahead of the acknowledgement now find their owner, or are extras.
    unclaimed, downs = state.unclaimed_up, state.unclaimed_down
    state = state._evolve(unclaimed_up=(), unclaimed_down=())
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
    return state._evolve(request_outstanding=False)


def _find(state: RolloutState, replica_id: str) -> tuple[TargetProgress | None, TargetProgress | None]:
    """(entry whose replacement is this replica, entry whose target is this replica)."""
    owner, target = state._replacement.get(replica_id), state._position.get(replica_id)
    return (None if owner is None else state._items[owner]), (None if target is None else state._items[target])


def replica_up(state: RolloutState, replica_id: str, at: float) -> RolloutState:
    """A replica came up. A replacement starts settling; an extra frees a slot; a target waits."""
    owner, target = _find(state, replica_id)
    if owner is not None:
        if owner.phase is not Phase.REDEPLOYING:
            return state  # a repeated healthy report
        if state.admission:
            return _update(state, [owner.target.id], phase=Phase.ADMITTING, up_at=at)
        return _update(state, [owner.target.id], up_at=at, **_settling_from(state, at))
    if target is not None:
        return state  # a starting target came up: it still waits for its turn (the seed's rule)
    if state.request_outstanding:
        return state._evolve(unclaimed_up=(*state.unclaimed_up, (replica_id, at)))
    return state._evolve(extras_up=state.extras_up | {replica_id})


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
        return state._evolve(extras_up=state.extras_up - {replica_id})
    unclaimed = tuple(entry for entry in state.unclaimed_up if entry[0] != replica_id)
    if state.request_outstanding and target is None:
        # Perhaps the replacement the outstanding request is making: the ack will tell.
        return state._evolve(unclaimed_up=unclaimed,
                             unclaimed_down=(*state.unclaimed_down, (replica_id, at, reason)))
    return state._evolve(unclaimed_up=unclaimed)


def blinded(state: RolloutState) -> RolloutState:
    """The event stream is lost: deadlines wait (see ``RolloutState.blind``)."""
    return state._evolve(blind=True)


def sighted(state: RolloutState, now: float) -> RolloutState:
    """The resync after the stream came back has been applied: deadlines that passed meanwhile
    fall due now. Timeout 12 s, acknowledged at 1 s, lost from 2 s to 30 s: a replacement the
    resync shows up is UP; one it shows still starting fails at 30 s ("not up within 29s"), not
    at 13 s."""
    passed = sorted({position for deadline, position in state._deadlines if deadline < now
                     and _redeploying(state._items[position]) and state._items[position].deadline == deadline})
    return _put(state, {position: evolved(state._items[position], deadline=now) for position in passed}, blind=False)


def advance(state: RolloutState, now: float) -> RolloutState:
    """Let time pass: grace periods that ran out make replicas UP; missed deadlines are failures,
    unless the rollout is blind (they fail once it sees again, at the time it does)."""
    changed: dict[int, TargetProgress] = {}
    for position in _due(state._settle_ends, now):
        item = state._items[position]
        if _settling(item) and item.settle_until <= now:  # type: ignore[operator]
            changed[position] = evolved(item, phase=Phase.UP, finished_at=item.settle_until)
    for position in _due(state._deadlines, now) if not state.blind else ():
        item = state._items[position]
        if _redeploying(item) and item.deadline <= now and position not in changed:  # type: ignore[operator]
            timeout = item.deadline - (item.acked_at or 0.0)  # type: ignore[operator]
            changed[position] = evolved(item, phase=Phase.FAILED, finished_at=item.deadline,
                                        failure=f"replacement not up within {timeout:g}s")
    return _put(state, dict(sorted(changed.items())))


def _due(heap: list[tuple[float, int]], now: float) -> list[int]:
    """Positions of the heap's entries due by ``now`` (some may be stale: the caller checks)."""
    if not heap or heap[0][0] > now:
        return []
    heap = [*heap]
    due = []
    while heap and heap[0][0] <= now:
        due.append(heapq.heappop(heap)[1])
    return due


def _admitting(state: RolloutState, target_id: str) -> bool:
    """Whether this phase's target is waiting for the balancer. An answer can outlive its phase:
    the forward phase asks the balancer to admit a replacement, a failure elsewhere starts the
    rollback, and the answer arrives in the rollback's state, which has no such target."""
    position = state._position.get(target_id)
    return position is not None and state._items[position].phase is Phase.ADMITTING


def admission_issued(state: RolloutState, target_id: str) -> RolloutState:
    return _update(state, [target_id], admission_issued=True)


def admitted(state: RolloutState, target_id: str, at: float) -> RolloutState:
    """The replacement is in rotation: its grace period starts now."""
    if not _admitting(state, target_id):
        return state  # it failed meanwhile, or the answer is for another phase's replica
    return _update(state, [target_id], **_settling_from(state, at))


def _settling_from(state: RolloutState, at: float) -> dict[str, object]:
    """A replacement's grace period starts at ``at``; without one it is UP at once (what
    ``advance`` would make of it at that instant, one transition sooner)."""
    if state.grace_s > 0:
        return {"phase": Phase.SETTLING, "settle_until": at + state.grace_s}
    return {"phase": Phase.UP, "settle_until": at, "finished_at": at}


def admission_failed(state: RolloutState, target_id: str, reason: str, at: float) -> RolloutState:
    if not _admitting(state, target_id):
        return state
    return _update(state, [target_id], phase=Phase.FAILED, failure=reason, finished_at=at)


def stop_issuing(state: RolloutState) -> RolloutState:
    return state._evolve(stopped_issuing=True)


def cleaned_up(state: RolloutState, target_id: str) -> RolloutState:
    return _update(state, [target_id], cleaned_up=True)


def issued(state: RolloutState, *, admissions: Sequence[str] = (), cleanups: Sequence[str] = (),
           request: Sequence[str] = (), at: float = 0.0) -> RolloutState:
    """A decision's effects issued, as one transition: ``admission_issued`` for ``admissions``,
    ``cleaned_up`` for ``cleanups``, then ``request_sent`` for ``request`` (if any) at ``at``."""
    changed: dict[int, TargetProgress] = {}
    for ids, changes in ((admissions, {"admission_issued": True}), (cleanups, {"cleaned_up": True}),
                         (request, {"phase": Phase.REQUESTED, "requested_at": at})):
        for target_id in ids:
            position = state._position.get(target_id)
            if position is not None:
                changed[position] = evolved(changed.get(position, state._items[position]), **changes)
    fields = {"request_outstanding": True} if request else {}
    return _put(state, dict(sorted(changed.items())), **fields)
