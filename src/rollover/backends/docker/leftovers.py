"""What a dead rollout left stopped, sorted when its lock is taken over: nothing of a replica's
data may end up mounted by no container.

A dead rollout can leave, not running: replicas it stopped (stop-first) or was retiring, the
replacements it made but never started, and rollbacks half-made. Compose would count them (and
start them) in its next scale-up, so each goes or runs again before anything else happens:

- one that ran and is the only container left mounting some anonymous volume (a replica's data)
  runs again: a stopped original whose replacement was never made, or a replacement already
  holding the volumes of an original that is gone. Originals are looked at first: of two stopped
  containers sharing a volume, the one that ran before the dead rollout began is the known-good one;
- the others go, and every one never started: their data (if any) is mounted by a container
  that stays.

Worked example: web-1 (volume A) stopped by a stop-first rollout killed before its replacement
existed -> web-1 runs again. Killed after web-7 was made on A but before it started -> web-1
runs again, web-7 goes. Killed after web-1 was removed (web-7 ran on A by then), web-7 stopped
by someone -> web-7 runs (the takeover then rolls it like any replica, see core/recovery.py).
"""

from __future__ import annotations

from rollover.backends.docker.inspect import anonymous_volumes, created_at, finished_at, is_lock
from rollover.backends.docker.workshop import Workshop
from rollover.engine import Inspect


async def settle_leftovers(workshop: Workshop, labels: dict[str, str], since: float) -> None:
    """Start or remove each container of the service not running and touched since ``since`` (when
    the dead rollout began)."""
    engine = workshop.connected()
    inspects = [
        inspect
        for container_id in await engine.list_container_ids(labels)
        if (inspect := await engine.inspect_container(container_id)) is not None and not is_lock(inspect)
    ]
    running = [inspect for inspect in inspects if inspect.get("State", {}).get("Running")]
    used: set[str] = set().union(*(anonymous_volumes(inspect) for inspect in running))
    left = [inspect for inspect in inspects if inspect not in running and _touched(inspect) >= since]
    left.sort(key=lambda inspect: (_made_since(inspect, since), created_at(inspect) or 0.0))
    async with workshop.mutations:
        for inspect in left:
            container_id, volumes = str(inspect["Id"]), anonymous_volumes(inspect)
            if volumes - used and _ran(inspect):
                await engine.start(container_id)
                used |= volumes
            else:
                # One it made itself takes the volumes it made along (taken-over ones are mounted by
                # name and stay); an original keeps its own, which a replacement may mount.
                await engine.remove(container_id, force=True, volumes=_made_since(inspect, since))


async def remove_never_started(workshop: Workshop, labels: dict[str, str], since: float) -> None:
    """Remove each container of the service made since ``since`` (engine time) and never started:
    what a request left half-made when the engine stopped answering mid-way.

    A create the daemon carried out while going down (its answer lost), or a create whose cleanup
    could not reach the daemon any more, leaves a container no one knows of: the request failed,
    the controller moved on, and Compose would count (and start) it in its next scale-up. Run
    before the lock goes, when every request has had its outcome; none of these holds data (see
    _ran), and volumes=True removes only the ones it made itself.
    """
    engine = workshop.connected()
    # Listed by the engine's own state filter: a rollout's end costs no inspect per replica.
    for container_id in await engine.list_container_ids(labels, status="created"):
        inspect = await engine.inspect_container(container_id)
        if inspect is None or is_lock(inspect) or _ran(inspect) or (created_at(inspect) or 0.0) < since:
            continue
        async with workshop.mutations:
            await workshop.remove_unstarted(container_id)


def _ran(inspect: Inspect) -> bool:
    """It was started once. One never started holds no data of its own: the volumes it made are
    empty, and those it took over (by name) are its predecessor's, which is still there - a
    replacement is started before its predecessor goes - or, if it was removed, mounted by a
    container that ran (the rollback's restore follows the same order). Compose may even have
    left it with fresh volumes only, killed before they were handed over."""
    return bool(inspect.get("State", {}).get("Status") != "created")


def _touched(inspect: Inspect) -> float:
    return max(created_at(inspect) or 0.0, finished_at(inspect) or 0.0)


def _made_since(inspect: Inspect, since: float) -> bool:
    return (created_at(inspect) or 0.0) >= since
