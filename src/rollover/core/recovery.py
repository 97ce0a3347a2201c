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
        removed replica is gone, and nothing recorded which one it was."""
        return tuple(Replica(id=f"refill-{n}", name=f"refill-{n}", running=False) for n in range(1, self.missing + 1))


def made_by(replica: Replica, stale: StaleLock) -> bool:
    return stale.since is not None and replica.created_at is not None and replica.created_at >= stale.since


def plan_recovery(replicas: Sequence[Replica], stale: StaleLock, up: Collection[str]) -> Recovery:
    """Sort ``replicas`` (the running ones) into targets, adoptions and orphans; ``up`` holds the ids
    of those that are up now."""
    fresh = [replica for replica in replicas if made_by(replica, stale)]
    old = [replica for replica in replicas if not made_by(replica, stale)]
    finished = [replica for replica in fresh if replica.id in up]
    orphans = tuple(replica for replica in fresh if replica.id not in up)
    count = _adoptions(len(old), len(finished), stale.replicas)
    pairs = tuple(zip(old[:count], finished[:count], strict=True))
    kept = len(old) + len(finished) - count
    missing = max(0, (stale.replicas or kept) - kept)
    return Recovery(targets=tuple(old[count:]), adopted=pairs, orphans=orphans, missing=missing)


def _adoptions(old: int, finished: int, began_with: int | None) -> int:
    """How many old replicas the finished replacements stand in for: those that bring the service
    over the count it began with. Began with 4; 4 old + 1 finished -> 1 (start-first, old one not
    yet removed); 3 old + 1 finished -> 0 (its old one was already removed). Unknown count: one old
    replica per finished replacement."""
    surplus = min(old, finished) if began_with is None else old + finished - began_with
    return max(0, min(surplus, old, finished))
