"""Plain values shared by every layer: replicas, snapshots of a service, and platform events.

Everything here is frozen and free of I/O; times are seconds on the controller's clock
(monotonic for real rollouts, virtual for the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from rollover.core.events import EventKind


class Order(StrEnum):
    """How one replica is replaced."""

    START_FIRST = "start-first"  # replacement starts; the old one goes once the new one is up
    STOP_FIRST = "stop-first"  # the old one goes first; the replacement takes its place


@dataclass(frozen=True)
class Replica:
    """One container (or Swarm task) of a service, as the platform last described it."""

    id: str
    name: str
    image: str = ""  # resolved image id the replica runs (sha256:...), "" when unknown
    image_ref: str = ""  # the reference the replica was created from (repo:tag)
    running: bool = True
    has_healthcheck: bool = False
    # A published host port fixed in the definition: two containers cannot share it, so
    # start-first is impossible for this replica (see policy.choose_order).
    fixed_host_ports: tuple[str, ...] = ()
    # Seconds a healthcheck may take to pass before it is hopeless, when the platform knows it
    # (start_period + interval x retries); None when there is no healthcheck.
    health_budget_s: float | None = None
    created_at: float | None = None  # seconds since the epoch, when the platform made it
    # A replacement's predecessor, when the platform picked it rather than the target it was asked
    # to replace (Swarm picks the slot): the replica that goes, to be drained and retired.
    replaces: str | None = None
    # Seconds the platform may take, after acknowledging this replacement, before it even starts it:
    # Swarm stop-first stops the old task first (its stop grace period). The replacement's timeout
    # counts from when it starts, so this is added to it (see policy.replacement_timeout).
    start_delay_s: float = field(default=0.0, compare=False)
    # Not on the rollout's target definition although it may be new: made by a rollback (the
    # previous definition again). A takeover never counts it as a finished replacement, and rolls
    # it like a replica that was there before.
    restored: bool = field(default=False, compare=False)
    # Volumes that are this replica's own data (Docker: its anonymous volumes, by name), found again
    # only through a container that mounts them. A takeover keeps any replica that is the only one
    # mounting one of them (see recovery.plan_recovery).
    volumes: frozenset[str] = field(default=frozenset(), compare=False)
    # Platform-specific extras a backend wants to keep with the replica (never interpreted above).
    details: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class StaleLock:
    """The lock of a rollout that died (SIGKILL, a lost machine), taken over by this one."""

    holder: str
    since: float | None  # when that rollout began, seconds since the epoch
    replicas: int | None  # how many replicas the service had when it began
    reason: str  # why it is known to be dead


@dataclass(frozen=True)
class ServiceSnapshot:
    """A service as it stood when the rollout began."""

    name: str
    platform: str
    replicas: tuple[Replica, ...]  # running or starting replicas: the rollout's targets
    description: str = ""  # how the backend found it, e.g. "compose project shop, service web"


@dataclass(frozen=True)
class ReplicaUp:
    """A replica came up: healthy when it has a healthcheck, else running."""

    replica_id: str
    at: float


@dataclass(frozen=True)
class ReplicaDown:
    """A replica stopped being usable: it exited, turned unhealthy, or was removed."""

    replica_id: str
    at: float
    reason: str
    gone: bool = False  # it will never run again: a container removed, a Swarm task gone with its slot
    # The platform removed its place in the service (a Swarm scale-down): the service is meant to
    # have one replica less, so a replacement lost this way is no failure.
    slot_removed: bool = False


ReplicaEvent = ReplicaUp | ReplicaDown


class ProgressEvent(NamedTuple):
    """Something the user is told about, at ``at`` seconds from the start of the rollout;
    every kind, and when it is emitted, is listed in ``rollover.core.events.EventKind``.

    A named tuple, not a frozen dataclass: as immutable, and made at C speed (a simulation of
    10,000 replicas makes 50,000 of them; a frozen dataclass sets each field through
    ``object.__setattr__``)."""

    kind: EventKind
    at: float
    replica: str = ""
    detail: tuple[tuple[str, object], ...] = ()

    def fields(self) -> dict[str, object]:
        return dict(self.detail)
