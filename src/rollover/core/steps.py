"""PURE: the progress events that tell the user what step a replica took between two states.

Each event is (kind, replica name, loop time or None for now, fields in the order they are shown);
the controller stamps and emits them.
"""

from __future__ import annotations

from collections.abc import Iterator

from rollover.core.events import EventKind
from rollover.core.rollout import Phase, TargetProgress

StepEvent = tuple[EventKind, str, float | None, dict[str, object]]

# The event a replica's last phase is told as.
_FINISHED_AS = {Phase.UP: EventKind.SETTLED, Phase.FAILED: EventKind.FAILED, Phase.SKIPPED: EventKind.SKIPPED}


def replica_steps(before: TargetProgress, after: TargetProgress, grace_s: float) -> Iterator[StepEvent]:
    name = after.target.name
    if after.requested_at is not None and before.requested_at is None:
        yield EventKind.REQUEST_SENT, name, after.requested_at, {"restore": after.restore_from is not None,
                                                                  "refill": after.refill}
    if after.acked_at is not None and before.acked_at is None and after.replacement:
        # The platform may have replaced another waiting target than the one asked (Swarm).
        instead = {"instead_of": before.target.name} if before.target.id != after.target.id else {}
        # Docker (and Swarm) call a container healthy after its first passing check, whatever the
        # retries (those count failures): 1 pass expected; 0 without a healthcheck (up once running).
        needed = 1 if after.replacement.has_healthcheck else 0
        yield EventKind.ACKNOWLEDGED, name, after.acked_at, {"replacement": after.replacement.name,
                                                              "replacement_id": after.replacement.short_id,
                                                              "health_checks_needed": needed, **instead}
    if after.up_at is not None and before.up_at is None:
        yield EventKind.UP, name, after.up_at, {"grace_s": grace_s}
    if after.phase is not before.phase and after.phase in _FINISHED_AS:
        yield _FINISHED_AS[after.phase], name, after.finished_at, {"reason": after.failure}
