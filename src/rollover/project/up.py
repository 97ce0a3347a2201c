"""``rollover up``: what ``docker compose up -d`` does, without downtime.

Sequence: load the model from Compose (model.py) -> look at what runs (survey.py) -> plan (pure,
core/project.py) -> check everything that could be bad input (images, balancers, hooks, probe
URLs) -> print the plan -> act on each service in dependency order -> the project summary.
Everything up to the plan is read-only, so bad input exits 2 with nothing touched; --dry-run stops
after the plan (with the simulator's prediction, predict.py).

A service whose action fails blocks every service that depends on it; independent services go on.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rollover.assembly import (
    TrafficOptions,
    check_probe_url,
    make_balancer,
    make_probe,
    parse_balancers,
    parse_hook,
    parse_nginx_master,
)
from rollover.backends.docker.backend import DockerBackend
from rollover.backends.docker.compose import docker_cli_env, run_docker
from rollover.backends.docker.inspect import COMPOSE_SERVICE, labels_of
from rollover.controller.loop import Controller, Reporter
from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.core.project import Action, PlanRequest, ProjectPlan, ServicePlan, blocked_by, plan_project
from rollover.core.result import Outcome
from rollover.core.settings import ServiceSettings
from rollover.engine import Engine, Inspect
from rollover.errors import ImageNotFound, InvalidOption, Locked, PlatformError, RolloverError
from rollover.project.actions import compose_up, remove_orphan
from rollover.project.model import LoadedProject, ProjectArgs, load_project
from rollover.project.predict import predict_durations
from rollover.project.report import plan_figures, project_summary
from rollover.project.survey import project_containers, running_services, with_image_ids


@dataclass(frozen=True)
class UpRequest:
    args: ProjectArgs
    plan: PlanRequest
    pull: bool = False
    dry_run: bool = False


@dataclass
class ServiceOutcome:
    service: str
    action: Action
    result: str  # completed, rolled-back, paused, failed, blocked, locked, interrupted, untouched...
    replaced: int = 0
    failed: int = 0
    duration_s: float = 0.0
    reason: str | None = None


@dataclass
class ProjectRun:
    """The outcomes so far; the exit code follows from them."""

    outcomes: list[ServiceOutcome] = field(default_factory=list)
    interrupted_by: str | None = None

    def failed_services(self) -> set[str]:
        return {item.service for item in self.outcomes if item.result not in ("completed", "untouched", "skipped",
                                                                               "left")}

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None or any(item.result == Outcome.INTERRUPTED for item in self.outcomes):
            return 130
        failed = [item for item in self.outcomes if item.service in self.failed_services()]
        if failed and all(item.result == "locked" for item in failed):
            return 3
        return 1 if failed else 0


Emit = Callable[[ProgressEvent], None]
ReporterFor = Callable[[str], tuple[Reporter, Callable[[], None]]]


async def rollover_up(request: UpRequest, emit: Emit, reporter_for: ReporterFor) -> int:
    """Run ``rollover up``; the exit code. ``reporter_for(service)`` gives a rolled service's
    event reporter and the call that flushes its summary."""
    env = docker_cli_env(None)
    engine = await Engine.connect(None)
    try:
        loaded = await load_project(request.args, env)
        loaded, plan, containers = await _look(engine, loaded, request.plan)
        if request.pull and not request.dry_run:
            # After a first look (which validated the selection): a moved tag is then a change.
            await _pull(request, [item.service for item in plan.services
                                  if item.action not in (Action.ORPHAN, Action.REMOVE, Action.SKIP)], env)
            loaded, plan, containers = await _look(engine, loaded, request.plan)
        traffic = {item.service: traffic_options(item) for item in plan.services if item.action is Action.ROLL}
        _check_images(loaded, plan, request.pull)
        predictions = await predict_durations(engine, plan, containers) if request.dry_run else {}
        t0 = asyncio.get_running_loop().time()
        emit(ProgressEvent(EventKind.PROJECT_PLAN, 0.0, "", tuple(plan_figures(plan, request, predictions).items())))
        if request.dry_run:
            return 0
        run = await _deploy(request, loaded, plan, traffic, engine, emit, reporter_for)
        duration = round(asyncio.get_running_loop().time() - t0, 3)
        emit(ProgressEvent(EventKind.PROJECT_SUMMARY, duration, "",
                           tuple(project_summary(plan, run.outcomes, duration, run.exit_code).items())))
        return run.exit_code
    finally:
        await engine.close()


async def _look(engine: Engine, loaded: LoadedProject,
                request: PlanRequest) -> tuple[LoadedProject, ProjectPlan, dict[str, list[Inspect]]]:
    """The plan from the model and what runs now; the project's containers by service."""
    loaded.services.update(await with_image_ids(engine, loaded.services))
    containers = await project_containers(engine, loaded.name)
    plan = plan_project(replace(request, project=loaded.name), loaded.services, running_services(containers),
                        loaded.known)
    by_service: dict[str, list[Inspect]] = {}
    for inspect in containers:
        by_service.setdefault(labels_of(inspect).get(COMPOSE_SERVICE, ""), []).append(inspect)
    return loaded, plan, by_service


async def _pull(request: UpRequest, services: list[str], env: Mapping[str, str]) -> None:
    """``docker compose pull`` of the services about to be deployed; a failure touched nothing else."""
    if not services:
        return
    try:
        await run_docker([*request.args.cli_args(), "pull", "--quiet", "--ignore-buildable", *services], env=env)
    except PlatformError as exc:
        raise ImageNotFound(f"--pull: {exc}") from exc


def traffic_options(plan: ServicePlan) -> TrafficOptions:
    """x-rollover's traffic settings, validated now: bad input before anything is touched."""
    assert plan.settings is not None
    traffic = plan.settings.traffic
    try:
        if traffic.balancer_address not in ("auto", "published") and not traffic.balancer_address.startswith(
                "network:"):
            raise InvalidOption(f"balancer_address {traffic.balancer_address!r}: expected auto, published or"
                                " network:NAME")
        return TrafficOptions(
            balancers=parse_balancers(traffic.balancers), address_mode=traffic.balancer_address,
            port=traffic.balancer_port, drain_timeout_s=traffic.drain_timeout_s,
            pre_stop=parse_hook(traffic.pre_stop, "pre_stop"), post_start=parse_hook(traffic.post_start, "post_start"),
            probe_url=check_probe_url(traffic.probe), probe_rate=traffic.probe_rate,
            max_probe_failures=traffic.max_probe_failures,
            **({} if traffic.nginx_master is None else {"nginx_master": parse_nginx_master(traffic.nginx_master)}),
        )
    except InvalidOption as exc:
        raise InvalidOption(f"service {plan.service}: x-rollover {exc}") from None


def _check_images(loaded: LoadedProject, plan: ProjectPlan, pull: bool) -> None:
    """Every service about to get new containers has its image here (or builds it, or is pulled)."""
    for item in plan.services:
        service = loaded.services.get(item.service)
        acting = item.action in (Action.CREATE, Action.ROLL, Action.RECREATE, Action.SCALE)
        if acting and service is not None and service.image_id is None and not service.has_build and not pull:
            raise ImageNotFound(f"service {item.service}: image {service.image} is not on the engine"
                                " (build it, or pass --pull)")


async def _deploy(request: UpRequest, loaded: LoadedProject, plan: ProjectPlan, traffic: dict[str, TrafficOptions],
                  engine: Engine, emit: Emit, reporter_for: ReporterFor) -> ProjectRun:
    run = ProjectRun()
    current: list[Controller] = []
    loop = asyncio.get_running_loop()

    def interrupt(name: str) -> None:
        run.interrupted_by = run.interrupted_by or name
        for controller in current:
            controller.interrupt(name)

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, interrupt, signal.Signals(number).name)
    deps = {item.service: item.depends_on for item in plan.services}
    try:
        for item in plan.services:
            started = loop.time()
            outcome = await _act(request, loaded, item, run, deps, traffic, engine, reporter_for, current)
            outcome.duration_s = outcome.duration_s or round(loop.time() - started, 3)
            run.outcomes.append(outcome)
            if item.action not in _QUIET:
                emit(ProgressEvent(EventKind.SERVICE_DONE, round(loop.time() - started, 3), "",
                                   (("service", item.service), *_figures(outcome))))
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
    return run


_QUIET = {Action.UNTOUCHED: "untouched", Action.SKIP: "skipped", Action.ORPHAN: "left"}


async def _act(request: UpRequest, loaded: LoadedProject, item: ServicePlan, run: ProjectRun,
               deps: Mapping[str, tuple[str, ...]], traffic: Mapping[str, TrafficOptions], engine: Engine,
               reporter_for: ReporterFor, current: list[Controller]) -> ServiceOutcome:
    if item.action in _QUIET:
        return ServiceOutcome(item.service, item.action, _QUIET[item.action])
    if run.interrupted_by is not None:
        return ServiceOutcome(item.service, item.action, "not-started", reason=f"interrupted by {run.interrupted_by}")
    blocker = blocked_by(item, run.failed_services(), deps)
    if blocker is not None:
        return ServiceOutcome(item.service, item.action, "blocked", reason=f"it depends on {blocker}, which failed")
    if item.action is Action.ROLL:
        return await _roll(request, loaded, item, traffic[item.service], reporter_for, current)
    try:
        if item.action is Action.REMOVE:
            found = running_services(await project_containers(engine, loaded.name)).get(item.service)
            await remove_orphan(engine, (*found.running, *found.stopped) if found else ())
        else:
            await _compose_up(request, item, Action(item.action))
    except RolloverError as exc:
        return ServiceOutcome(item.service, item.action, "failed", failed=max(1, item.wanted), reason=str(exc))
    replaced = item.running if item.action in (Action.RECREATE, Action.REMOVE) else 0
    return ServiceOutcome(item.service, item.action, "completed", replaced=replaced)


async def _compose_up(request: UpRequest, item: ServicePlan, action: Action) -> None:
    timeout = item.settings.policy.timeout_s if item.settings else None
    await compose_up(request.args, item.service, action, docker_cli_env(None), pull=request.pull, timeout_s=timeout)


def _figures(outcome: ServiceOutcome) -> tuple[tuple[str, object], ...]:
    return (("action", outcome.action), ("result", outcome.result), ("replaced", outcome.replaced),
            ("failed", outcome.failed), ("duration_s", outcome.duration_s), ("reason", outcome.reason))


async def _roll(request: UpRequest, loaded: LoadedProject, item: ServicePlan, traffic: TrafficOptions,
                reporter_for: ReporterFor, current: list[Controller]) -> ServiceOutcome:
    settings: ServiceSettings | None = item.settings
    assert settings is not None
    clock = asyncio.get_running_loop().time
    report, flush = reporter_for(item.service)
    backend = DockerBackend(item.service, project=loaded.name, pull=request.pull, clock=clock,
                            compose_project=loaded.compose)
    controller = Controller(backend, settings.policy, report=report, balancer=make_balancer(traffic, clock),
                            drain_timeout_s=traffic.drain_timeout_s, probe=make_probe(traffic, clock),
                            max_probe_failures=traffic.max_probe_failures)
    current.append(controller)
    try:
        result = await controller.run()
    except Locked as exc:
        return ServiceOutcome(item.service, item.action, "locked", reason=str(exc))
    except RolloverError as exc:
        return ServiceOutcome(item.service, item.action, "failed", reason=f"{type(exc).__name__}: {exc}")
    finally:
        current.remove(controller)
        flush()
    outcome = ServiceOutcome(item.service, item.action, str(result.outcome), replaced=result.replaced,
                             failed=result.failed, duration_s=result.duration_s, reason=result.reason)
    if result.outcome is Outcome.COMPLETED and item.running != item.wanted:
        # Rolled at the count that ran; Compose brings it to the count the file asks for.
        try:
            await _compose_up(request, item, Action.SCALE)
        except RolloverError as exc:
            outcome.result, outcome.reason = "failed", f"rolled, but scaling to {item.wanted} failed: {exc}"
    return outcome
