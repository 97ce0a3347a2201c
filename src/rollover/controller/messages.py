"""What reaches the controller's loop besides the platform's events: the outcomes of its own
platform calls, signals and the event stream's outages and resyncs. Values only; the controller
posts them and applies each to the rollout state in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollover.controller.liveness import Broken, StreamLost, StreamRestored
from rollover.core.model import Replica, ReplicaDown, ReplicaUp
from rollover.core.rollout import IN_FLIGHT, Phase, RolloutState


@dataclass(frozen=True)
class Acknowledged:
    target_ids: tuple[str, ...]
    replacements: tuple[Replica, ...]
    at: float


@dataclass(frozen=True)
class RequestFailed:
    target_ids: tuple[str, ...]
    reason: str
    at: float
    removed: bool = False  # nothing left to replace (TargetRemoved): skipped, not failed


@dataclass(frozen=True)
class Admitted:
    target_id: str
    at: float
    failure: str | None = None


@dataclass(frozen=True)
class Interrupted:
    signal: str


@dataclass(frozen=True)
class Resynced:
    """What the stream missed has been looked up and posted (before this) for outage ``outage``."""

    outage: int


Message = (
    ReplicaUp | ReplicaDown | Acknowledged | RequestFailed | Admitted | Interrupted
    | StreamLost | StreamRestored | Resynced | Broken
)


def watched_ids(state: RolloutState) -> list[str]:
    """Replicas whose fate the rollout waits on: replacements in flight, waiting targets, extras."""
    ids = [item.replacement.id for item in state.progress if item.replacement and item.phase in IN_FLIGHT]
    # A refill's stand-in is no replica: looking it up would find it gone.
    ids += [item.target.id for item in state.progress if item.phase is Phase.WAITING and not item.refill]
    return ids + sorted(state.extras_up)
