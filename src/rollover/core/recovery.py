"""PURE: finish what a dead rollout left, from the lock it left behind.

A rollout killed with SIGKILL leaves its lock (with the time it began) and, mid-flight, some
replacements it made. The next rollout that takes the lock over sorts the service's running
replicas by that time:
- made before it began: still to be rolled (targets), as usual;
- made after, and up: replacements the dead rollout finished. Each is adopted: it pairs with one
  old replica, which is retired without a new replacement (start-first left both running);
- made after, and not up: half-made replacements, discarded.

Worked example: 4 replicas rolled start-first step 1, killed after web-5 came up but before web-1
was removed: running web-1..4 (old) and web-5 (new, up). Recovery: adopt web-5 for web-1 (web-1
is retired), roll web-2..4 -> 4 replicas, all new.

Fewer replicas than the dead rollout began with means it removed some it never replaced (stop-first,
killed between the removal and the replacement, or its replacement was half-made and is discarded).
Each missing one is refilled: a stand-in target whose request makes a fresh replica of the service
as it is defined now. Worked example: 4 replicas rolled stop-first, killed after web-1 was removed:
running web-2..4 (old). Recovery: refill 1 (a new replica), roll web-2..4 -> 4 replicas, all new.

Data first: a Docker stop-first replacement is made mounting its predecessor's volumes before the
predecessor is removed, so a replica's volumes always have a user. Worked example: 4 replicas with
a volume each, stop-first, killed after web-1 was removed and web-5 (mounting web-1's volume)
started but before it was up: web-5 is the only user of that volume, so it is kept as a target
(rolled again, volume and all), not discarded: 4 replicas, nothing refilled, nothing lost.

A takeover that dies in turn leaves a lock carrying the first rollout's time and count (the
backends carry them forward), so whoever comes next counts against what the service had before
any of them began: two kills in a row never refill a slot twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rollover.core.model import Replica, StaleLock


@dataclass(frozen=True)
class Recovery:
    targets: tuple[Replica, ...]
    adopted: tuple[tuple[Replica, Replica], ...]  # (old replica to retire, its adopted successor)
    orphans: tuple[Replica, ...]  # half-made replacements to discard
    missing: int  # replicas short of the count the dead rollout began with

    @property
    def refills(self) -> tuple[Replica, ...]:
        """One stand-in per missing replica, for the rollout to refill. Named ``refill-N``: the
        removed replica is gone, and so are its volumes' last users (see plan_recovery)."""
        return tuple(Replica(id=f"refill-{n}", name=f"refill-{n}", running=False) for n in range(1, self.missing + 1))


def made_by(replica: Replica, stale: StaleLock) -> bool:
    return stale.since is not None and replica.created_at is not None and replica.created_at >= stale.since


def plan_recovery(replicas: Sequence[Replica], stale: StaleLock, up: Collection[str]) -> Recovery:
    """Sort ``replicas`` (the running ones) into targets, adoptions and orphans; ``up`` holds the ids
    of those that are up now.

    Volumes decide before counts, so that no replica's data is left mounted by nothing:
    - a replacement not yet up that mounts its predecessor's volumes while the predecessor still
      runs is an orphan (the predecessor keeps the data);
    - one not yet up whose volumes no old replica mounts holds the only copy of a removed
      replica's data (stop-first, killed after the removal): it is kept, as a target to roll again;
    - a finished replacement mounting an old replica's volumes is adopted for that one.
    """
    fresh = [replica for replica in replicas if made_by(replica, stale)]
    old = [replica for replica in replicas if not made_by(replica, stale)]
    finished = [replica for replica in fresh if replica.id in up]
    unfinished = [replica for replica in fresh if replica.id not in up]
    holders = [replica for replica in unfinished if replica.volumes and not _predecessors(replica, old)]
    orphans = tuple(replica for replica in unfinished if replica not in holders)
    pairs = _pairs(old, finished, _adoptions(len(old) + len(holders), len(finished), stale.replicas))
    retired = {pair[0].id for pair in pairs}
    kept = len(old) + len(holders) + len(finished) - len(pairs)
    missing = max(0, (stale.replicas or kept) - kept)
    targets = tuple(replica for replica in old if replica.id not in retired) + tuple(holders)
    return Recovery(targets=targets, adopted=pairs, orphans=orphans, missing=missing)


def _predecessors(replacement: Replica, old: Sequence[Replica]) -> list[Replica]:
    return [replica for replica in old if replica.volumes & replacement.volumes]


def _pairs(old: Sequence[Replica], finished: Sequence[Replica], count: int) -> tuple[tuple[Replica, Replica], ...]:
    """(old, finished) pairs to adopt: each finished replacement mounting an old replica's volumes
    is paired with that one (retiring another would leave its data unused and this one's shared);
    then, up to ``count`` pairs in all, the others in order."""
    pairs: list[tuple[Replica, Replica]] = []
    for new in finished:
        shared = [replica for replica in _predecessors(new, old) if replica.id not in {p[0].id for p in pairs}]
        if shared:
            pairs.append((shared[0], new))
    paired_old = {pair[0].id for pair in pairs}
    paired_new = {pair[1].id for pair in pairs}
    free_old = [replica for replica in old if replica.id not in paired_old and not _successors(replica, finished)]
    free_new = [replica for replica in finished if replica.id not in paired_new]
    extra = max(0, count - len(pairs))
    return tuple(pairs) + tuple(zip(free_old, free_new, strict=False))[:extra]


def _successors(replica: Replica, finished: Sequence[Replica]) -> bool:
    return any(replica.volumes & new.volumes for new in finished)


def _adoptions(old: int, finished: int, began_with: int | None) -> int:
    """How many old replicas the finished replacements stand in for: those that bring the service
    over the count it began with. Began with 4; 4 old + 1 finished -> 1 (start-first, old one not
    yet removed); 3 old + 1 finished -> 0 (its old one was already removed). Unknown count: one old
    replica per finished replacement."""
    surplus = min(old, finished) if began_with is None else old + finished - began_with
    return max(0, min(surplus, old, finished))
