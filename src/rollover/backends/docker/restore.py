"""A rollback on a Docker Engine: a clone of the original replica's recorded definition, on its image.

A rollback's container is labelled with the id of the container it replaced
(``rollover.restored-from``): restore() is retried across a daemon restart, and a second attempt
finishes the container the first one made instead of making another.
"""

from __future__ import annotations

import secrets

from rollover.backends.docker.clone import clone_request
from rollover.backends.docker.inspect import IMAGE_REF_LABEL, RESTORED_FROM_LABEL, image_ref_of
from rollover.backends.docker.workshop import Workshop
from rollover.core.model import Order, Replica
from rollover.errors import PlatformError


async def restore_replica(
    workshop: Workshop, labels: dict[str, str], replaced: Replica, original: Replica, order: Order
) -> Replica:
    """Put ``original`` back in place of ``replaced``, its volumes and (where free) its name."""
    source = workshop.recorded(original.id)
    if source is None:
        raise PlatformError(f"no recorded definition of {original.name} to restore it from")
    engine = workshop.connected()
    new_id = await _earlier_restore(workshop, labels, replaced)
    if new_id is None:
        if order is Order.STOP_FIRST:
            await workshop.stop(replaced)
        request = clone_request(source, image=original.image, volumes_from=source, extra_labels={
            IMAGE_REF_LABEL: image_ref_of(source), RESTORED_FROM_LABEL: replaced.id,
        })
        async with workshop.mutations:
            # Under stop-first the replaced one is stopped, not yet removed: it goes once the
            # restored one runs on the volumes both mount (never a moment with neither).
            holder = await engine.inspect_container(original.name)
            name = original.name if holder is None else f"{original.name}-rollover-{secrets.token_hex(3)}"
            new_id = await workshop.create(request, name)
    # The replaced container may hold the name: until retire() removes it (start-first), or
    # until it is removed below (stop-first).
    holder = await engine.inspect_container(original.name)
    if holder is not None and holder["Id"] == replaced.id:
        workshop.rename_on_retire(replaced.id, new_id, original.name)
    [restored] = await workshop.start_fresh([new_id])
    if order is Order.STOP_FIRST:
        await workshop.remove_replaced([replaced.id])
        restored = await workshop.replica(new_id)
    return restored


async def _earlier_restore(workshop: Workshop, labels: dict[str, str], replaced: Replica) -> str | None:
    """The container an earlier attempt to restore ``replaced`` made and started, if any. One it
    made but never started is removed: the outage may have cut it short before its networks
    were connected (and Workshop.create's own cleanup could not reach the daemon either)."""
    engine = workshop.connected()
    found = [
        inspect
        for container_id in await engine.list_container_ids({**labels, RESTORED_FROM_LABEL: replaced.id})
        if (inspect := await engine.inspect_container(container_id)) is not None
    ]
    started = [inspect for inspect in found if inspect.get("State", {}).get("Status") != "created"]
    async with workshop.mutations:
        for half_made in found:
            if half_made not in started:
                await workshop.remove_unstarted(str(half_made["Id"]))
    if not started:
        return None
    workshop.remember(started[0])
    return str(started[0]["Id"])
