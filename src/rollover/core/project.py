"""PURE: a whole Compose project's deploy plan: which services, in which order, with which action
and which rollout settings.

The model comes from Compose itself (project/model.py reads ``docker compose config``); what runs
comes from the engine (project/survey.py). This module only compares the two and decides:

- not running -> CREATE (Compose's own ``up``, waited until up);
- running, definition changed (config hash, or the image its tag points to) -> ROLL (rollover's
  engine), or RECREATE when Compose cannot run a second container of it (``container_name``);
- running, unchanged -> UNTOUCHED (SCALE when only the replica count differs);
- ``x-rollover: {skip: true}`` -> SKIP; a service gone from the file -> ORPHAN (left) or REMOVE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from rollover.core.settings import Overrides, ServiceSettings, service_settings
from rollover.errors import InvalidOption


class Action(StrEnum):
    CREATE = "create"  # nothing runs: Compose creates and starts it, rollover waits until it is up
    ROLL = "roll"  # changed: rolled by rollover's controller, zero downtime
    RECREATE = "recreate"  # changed, but it cannot run twice: Compose's own stop-first recreate
    SCALE = "scale"  # unchanged, another replica count: Compose adds or removes replicas
    UNTOUCHED = "untouched"  # unchanged: same containers
    SKIP = "skip"  # x-rollover: {skip: true}
    ORPHAN = "orphan"  # runs, but the file no longer defines it: left alone (--remove-orphans removes)
    REMOVE = "remove"  # an orphan removed with --remove-orphans


@dataclass(frozen=True)
class DefinedService:
    """A service as Compose resolved it (after merging files, interpolation and profiles)."""

    name: str
    config_hash: str
    replicas: int = 1
    depends_on: tuple[str, ...] = ()
    image: str | None = None
    image_id: str | None = None  # what the image reference points to on the engine now
    has_build: bool = False
    container_name: str | None = None
    fixed_host_ports: tuple[str, ...] = ()
    named_volumes: tuple[str, ...] = ()
    update_config: Mapping[str, object] = field(default_factory=dict)
    rollback_config: Mapping[str, object] = field(default_factory=dict)
    x_rollover: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningService:
    """A service's containers on the engine, as labelled by Compose."""

    name: str
    running: tuple[str, ...] = ()  # container ids
    stopped: tuple[str, ...] = ()
    config_hashes: frozenset[str] = frozenset()  # of the running containers
    image_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServicePlan:
    service: str
    action: Action
    why: str
    running: int = 0
    wanted: int = 0
    settings: ServiceSettings | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectPlan:
    project: str
    services: tuple[ServicePlan, ...]  # in deploy order, orphans last

    def acting(self) -> tuple[ServicePlan, ...]:
        return tuple(item for item in self.services if item.action not in (Action.UNTOUCHED, Action.SKIP,
                                                                            Action.ORPHAN))


def deploy_order(defined: Mapping[str, DefinedService], selected: Sequence[str]) -> list[str]:
    """Dependencies first; among services whose dependencies are all placed, by name.

    db <- api <- web, worker alone: round 1 {db, worker}, round 2 {api}, round 3 {web}
    -> ['db', 'worker', 'api', 'web'].
    Compose rejects cycles itself; one found here anyway is bad input.
    """
    wanted = set(selected)
    placed: list[str] = []
    while len(placed) < len(wanted):
        ready = sorted(name for name in wanted - set(placed)
                       if all(dep in placed or dep not in wanted for dep in defined[name].depends_on))
        if not ready:
            raise InvalidOption(f"depends_on has a cycle among {', '.join(sorted(wanted - set(placed)))}")
        placed.extend(ready)
    return placed


def with_dependencies(defined: Mapping[str, DefinedService], names: Sequence[str]) -> list[str]:
    """The named services and everything they depend on, as ``docker compose up SERVICE`` takes them."""
    for name in names:
        if name not in defined:
            raise InvalidOption(f"no service {name!r} in the project (it has {', '.join(sorted(defined))})")
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        pending.extend(dep for dep in defined[name].depends_on if dep in defined)
    return sorted(found)


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked of ``rollover up``."""

    project: str
    selected: tuple[str, ...] = ()  # empty: every service
    no_deps: bool = False
    force_recreate: bool = False
    remove_orphans: bool = False
    overrides: Overrides = field(default_factory=Overrides)


def plan_project(request: PlanRequest, defined: Mapping[str, DefinedService],
                 running: Mapping[str, RunningService], known: frozenset[str]) -> ProjectPlan:
    """One ServicePlan per selected service (deploy order), then the orphans.

    ``known``: every service the files define under any profile; a service running under a
    profile that is not enabled now is no orphan (Compose does not call it one either).
    """
    names = list(request.selected) if request.no_deps else with_dependencies(
        defined, request.selected or sorted(defined))
    for name in names:
        if name not in defined:
            raise InvalidOption(f"no service {name!r} in the project (it has {', '.join(sorted(defined))})")
    plans = [_service_plan(request, defined[name], running.get(name)) for name in deploy_order(defined, names)]
    if not request.selected:
        for name in sorted(set(running) - known):
            action = Action.REMOVE if request.remove_orphans else Action.ORPHAN
            why = "not in the compose file any more" + ("" if request.remove_orphans else
                                                        "; left running (--remove-orphans removes it)")
            plans.append(ServicePlan(name, action, why, running=len(running[name].running)))
    return ProjectPlan(request.project, tuple(plans))


def _service_plan(request: PlanRequest, service: DefinedService, running: RunningService | None) -> ServicePlan:
    settings = service_settings(service, request.overrides)
    count = len(running.running) if running else 0

    def plan(action: Action, why: str) -> ServicePlan:
        return ServicePlan(service.name, action, why, running=count, wanted=service.replicas, settings=settings,
                           depends_on=service.depends_on)

    if settings.skip:
        return plan(Action.SKIP, "x-rollover: skip is true")
    if running is None or not running.running:
        return plan(Action.CREATE, "not running")
    changed = change_reason(service, running) or ("--force-recreate" if request.force_recreate else None)
    if changed is None:
        if count != service.replicas:
            return plan(Action.SCALE, f"unchanged; {count} running, {service.replicas} wanted")
        return plan(Action.UNTOUCHED, "unchanged (same config hash and image)")
    if service.container_name:
        return plan(Action.RECREATE, f"{changed}; container_name {service.container_name!r} cannot run twice:"
                                     " Compose recreates it stop-first")
    return plan(Action.ROLL, changed)


def change_reason(service: DefinedService, running: RunningService) -> str | None:
    """Which part of the definition changed, in words; None when nothing did."""
    if running.config_hashes != {service.config_hash}:
        return "definition changed (config hash differs)"
    if service.image_id is not None and running.image_ids and running.image_ids != {service.image_id}:
        return f"image {service.image} now points to another image ({service.image_id[:19]})"
    return None


def blocked_by(plan: ServicePlan, failed: set[str], defined_deps: Mapping[str, tuple[str, ...]]) -> str | None:
    """The failed service this one (transitively) depends on, if any: it is not deployed then."""
    pending, seen = list(plan.depends_on), set()
    while pending:
        dep = pending.pop(0)
        if dep in failed:
            return dep
        if dep not in seen:
            seen.add(dep)
            pending.extend(defined_deps.get(dep, ()))
    return None
