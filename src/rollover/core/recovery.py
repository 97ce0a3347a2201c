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

from collections.abc import Collection, Iterable, Sequence
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

    Volumes decide before counts, so that no replica's data is left mounted by nothing: replicas
    sharing an anonymous volume are one replica's data in several containers (a replacement and
    its predecessor, or a rollback's restore), and exactly one of them is kept:
    - a replacement that is up (the newest, when a rollback's restore is up too); the others are
      retired for it (the first, adopted, drained like any) or discarded;
    - else the old replica; replacements not yet up are orphans;
    - else (its predecessor is gone: stop-first, killed after the removal) the replacement not yet
      up: kept as a target, to roll again with its volumes, never discarded and refilled empty.
    Replicas without such volumes are sorted by counting, as before.
    """
    # A rollback's restore is the old definition again: a replica to roll, like those found.
    fresh = {replica.id for replica in replicas if made_by(replica, stale) and not replica.restored}
    keepers: list[Replica] = []
    pairs: list[tuple[Replica, Replica]] = []
    orphans: list[Replica] = []
    for group in _sharing(replica for replica in replicas if replica.volumes):
        keeper, *others = sorted(group, key=lambda r: _keep_first(r, fresh, up))
        keepers.append(keeper)
        for other in others:
            if keeper.id in up and keeper.id in fresh and not any(pair[1] is keeper for pair in pairs):
                pairs.append((other, keeper))
            else:
                orphans.append(other)
    plain = [replica for replica in replicas if not replica.volumes]
    old = [replica for replica in plain if replica.id not in fresh]
    finished = [replica for replica in plain if replica.id in fresh and replica.id in up]
    orphans += [replica for replica in plain if replica.id in fresh and replica.id not in up]
    count = _adoptions(len(old) + len(keepers), len(finished), stale.replicas)
    plain_pairs = list(zip(old, finished, strict=False))[:min(count, len(old))]
    kept = len(keepers) + len(old) + len(finished) - len(plain_pairs)
    missing = max(0, (stale.replicas or kept) - kept)
    retired = {pair[0].id for pair in plain_pairs}
    targets = [r for r in keepers if r.id not in fresh or r.id not in up] + [r for r in old if r.id not in retired]
    order = {replica.id: n for n, replica in enumerate(replicas)}
    return Recovery(targets=tuple(sorted(targets, key=lambda r: order[r.id])), adopted=tuple(pairs + plain_pairs),
                    orphans=tuple(orphans), missing=missing)


def _keep_first(replica: Replica, fresh: Collection[str], up: Collection[str]) -> tuple[int, float]:
    """Sort key, the one to keep first: an up replacement (newest first), an old replica, a
    replacement not yet up."""
    made = replica.created_at or 0.0
    if replica.id in fresh and replica.id in up:
        return (0, -made)
    return (1, made) if replica.id not in fresh else (2, made)


def _sharing(replicas: Iterable[Replica]) -> list[list[Replica]]:
    """Groups of replicas linked by a shared volume (transitively), in first-seen order."""
    groups: list[list[Replica]] = []
    for replica in replicas:
        linked = [group for group in groups if any(member.volumes & replica.volumes for member in group)]
        merged = [member for group in linked for member in group] + [replica]
        groups = [group for group in groups if group not in linked] + [merged]
    return groups


def _adoptions(old: int, finished: int, began_with: int | None) -> int:
    """How many old replicas the finished replacements stand in for: those that bring the service
    over the count it began with. Began with 4; 4 old + 1 finished -> 1 (start-first, old one not
    yet removed); 3 old + 1 finished -> 0 (its old one was already removed). Unknown count: one old
    replica per finished replacement."""
    surplus = min(old, finished) if began_with is None else old + finished - began_with
    return max(0, min(surplus, old, finished))
