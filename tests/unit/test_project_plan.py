"""The project plan and the per-service settings (core/project.py, core/settings.py): pure tables."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rollover.backends.sim import SimBackend
from rollover.cli import main
from rollover.clock import run_virtual
from rollover.controller import Controller
from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.core.policy import FailurePolicy, OrderChoice, Policy, Step, StepKind, tolerated_failures
from rollover.core.project import (
    Action,
    DefinedService,
    PlanRequest,
    RunningService,
    deploy_order,
    plan_project,
)
from rollover.core.result import Outcome, RolloutResult
from rollover.core.settings import Overrides, service_settings
from rollover.errors import InvalidOption
from rollover.project.up import ProjectRun, ServiceOutcome


def _service(name: str, **options: Any) -> DefinedService:
    return DefinedService(name=name, config_hash=f"hash-{name}", image="app:v1", image_id="sha256:v1", **options)


def _running(service: DefinedService, count: int = 1, config_hash: str | None = None,
             image_id: str = "sha256:v1") -> RunningService:
    return RunningService(service.name, running=tuple(f"{service.name}{n}" for n in range(count)),
                          config_hashes=frozenset({config_hash or service.config_hash}),
                          image_ids=frozenset({image_id}))


PROJECT = {
    "db": _service("db", named_volumes=("data",), fixed_host_ports=("127.0.0.1:5432",)),
    "api": _service("api", replicas=3, depends_on=("db",)),
    "web": _service("web", replicas=2, depends_on=("api",)),
    "worker": _service("worker", replicas=2),
}


def test_dependencies_first_then_by_name() -> None:
    # round 1 {db, worker}, round 2 {api}, round 3 {web}
    assert deploy_order(PROJECT, sorted(PROJECT)) == ["db", "worker", "api", "web"]


def test_a_cycle_is_bad_input() -> None:
    cyclic = {"a": _service("a", depends_on=("b",)), "b": _service("b", depends_on=("a",))}
    with pytest.raises(InvalidOption, match="cycle"):
        deploy_order(cyclic, ["a", "b"])


def _actions(running: dict[str, RunningService], **request: Any) -> dict[str, Action]:
    plan = plan_project(PlanRequest("p", **request), PROJECT, running, frozenset(PROJECT))
    return {item.service: item.action for item in plan.services}


@pytest.mark.parametrize(("running", "request_options", "expected"), [
    ({}, {}, {"db": Action.CREATE, "worker": Action.CREATE, "api": Action.CREATE, "web": Action.CREATE}),
    ({"db": _running(PROJECT["db"]), "worker": _running(PROJECT["worker"], 2, config_hash="old"),
      "api": _running(PROJECT["api"], 3, image_id="sha256:old"), "web": _running(PROJECT["web"], 2)}, {},
     {"db": Action.UNTOUCHED, "worker": Action.ROLL, "api": Action.ROLL, "web": Action.UNTOUCHED}),
    ({"db": _running(PROJECT["db"]), "worker": _running(PROJECT["worker"], 2),
      "api": _running(PROJECT["api"], 3), "web": _running(PROJECT["web"], 1)}, {"force_recreate": True},
     {"db": Action.ROLL, "worker": Action.ROLL, "api": Action.ROLL, "web": Action.ROLL}),
    ({"web": _running(PROJECT["web"], 1)}, {"selected": ("web",), "no_deps": True}, {"web": Action.SCALE}),
    ({}, {"selected": ("api",)}, {"db": Action.CREATE, "api": Action.CREATE}),
    ({"old": RunningService("old", running=("x",))}, {"selected": ("worker",)}, {"worker": Action.CREATE}),
    ({"old": RunningService("old", running=("x",))}, {},
     {"db": Action.CREATE, "worker": Action.CREATE, "api": Action.CREATE, "web": Action.CREATE,
      "old": Action.ORPHAN}),
    ({"old": RunningService("old", running=("x",))}, {"remove_orphans": True},
     {"db": Action.CREATE, "worker": Action.CREATE, "api": Action.CREATE, "web": Action.CREATE,
      "old": Action.REMOVE}),
], ids=["empty-engine", "changed-hash-and-image", "force-recreate", "scale-only", "with-dependencies",
        "orphans-only-for-the-whole-project", "orphan-left", "orphan-removed"])
def test_each_service_gets_its_action(running: dict[str, RunningService], request_options: dict[str, Any],
                                      expected: dict[str, Action]) -> None:
    assert _actions(running, **request_options) == expected


def test_container_name_is_recreated_by_compose_and_skip_is_honoured() -> None:
    named = replace(PROJECT["worker"], container_name="the-worker", replicas=1)
    skipped = replace(PROJECT["web"], x_rollover={"skip": True})
    plan = plan_project(PlanRequest("p"), {"worker": named, "web": skipped},
                        {"worker": _running(named, config_hash="old")}, frozenset({"worker", "web"}))
    assert [(item.service, item.action) for item in plan.services] == [("web", Action.SKIP),
                                                                        ("worker", Action.RECREATE)]


def test_an_unknown_service_is_bad_input() -> None:
    with pytest.raises(InvalidOption, match="no service 'nosuch'"):
        _actions({}, selected=("nosuch",))


@pytest.mark.parametrize(("service", "flags", "policy", "sources"), [
    (_service("api", replicas=3), Overrides(), Policy(step=Step(StepKind.COUNT, 1), order=OrderChoice.START_FIRST),
     {}),
    (_service("api", replicas=3, update_config={"parallelism": 0, "delay": "2s", "monitor": "5s",
                                                "failure_action": "pause", "max_failure_ratio": 0.5}),
     Overrides(),
     Policy(step=Step(StepKind.ALL), grace_s=0.0, order=OrderChoice.START_FIRST, on_failure=FailurePolicy.PAUSE,
            max_failure_ratio=0.5),
     {"step": "update_config.parallelism", "grace": "update_config.monitor",
      "on_failure": "update_config.failure_action"}),
    (_service("api", replicas=3, update_config={"parallelism": 2, "delay": "1s", "monitor": "3s"}),
     Overrides(step="1", on_failure="continue"),
     Policy(step=Step(StepKind.COUNT, 1), grace_s=3.0, order=OrderChoice.START_FIRST,
            on_failure=FailurePolicy.CONTINUE),
     {"step": "flag", "grace": "update_config.monitor", "on_failure": "flag"}),
    (_service("db", named_volumes=("data",)), Overrides(), Policy(order=OrderChoice.STOP_FIRST), {}),
    (_service("db", named_volumes=("data",), update_config={"order": "start-first"}), Overrides(),
     Policy(order=OrderChoice.START_FIRST), {"order": "update_config.order"}),
    (_service("db", fixed_host_ports=("8080",), update_config={"order": "start-first"}), Overrides(),
     Policy(order=OrderChoice.STOP_FIRST), {"order": "update_config.order"}),
    (_service("api", x_rollover={"timeout": "90s"}, rollback_config={"parallelism": 3, "delay": "1s"}),
     Overrides(), Policy(order=OrderChoice.START_FIRST, timeout_s=90.0, rollback_step=Step(StepKind.COUNT, 3),
                         rollback_grace_s=1.0), {"timeout": "x-rollover.timeout"}),
], ids=["defaults", "update-config", "flags-win", "lone-replica-with-named-volume", "file-says-otherwise",
        "fixed-port-forces-stop-first", "x-rollover-timeout-and-rollback-config"])
def test_settings_and_where_they_came_from(service: DefinedService, flags: Overrides, policy: Policy,
                                           sources: dict[str, str]) -> None:
    settings = service_settings(service, flags)
    # parallelism 0 is 'all', which has no grace (the policy keeps that rule)
    assert settings.policy == policy
    assert dict(settings.sources) == sources


@pytest.mark.parametrize(("service", "message"), [
    (_service("api", update_config={"failure_action": "explode"}), "service api: failure_action 'explode'"),
    (_service("api", update_config={"max_failure_ratio": 2}), "max_failure_ratio 2"),
    (_service("api", update_config={"delay": "soon"}), "delay 'soon'"),
    (_service("api", x_rollover={"probe_url": "x"}), "x-rollover has no key 'probe_url'"),
    (_service("api", x_rollover={"skip": "yes"}), "x-rollover.skip 'yes'"),
    (_service("api", x_rollover={"balancer_port": "http"}), "balancer_port 'http'"),
    (_service("api", x_rollover={"probe_rate": 0}), "probe_rate 0"),
])
def test_invalid_settings_name_the_service_and_the_field(service: DefinedService, message: str) -> None:
    with pytest.raises(InvalidOption, match=message.replace("(", r"\(")):
        service_settings(service, Overrides())


@pytest.mark.parametrize(("ratio", "targets", "tolerated"), [(0.0, 6, 0), (0.25, 6, 1), (0.3, 10, 3), (1.0, 4, 4)])
def test_tolerated_failures(ratio: float, targets: int, tolerated: int) -> None:
    assert tolerated_failures(Policy(max_failure_ratio=ratio), targets) == tolerated


# -- max_failure_ratio and rollback_config, on the simulator ----------------------------------------


def _simulated(policy: Policy, fail: tuple[int, ...]) -> tuple[RolloutResult, list[ProgressEvent]]:
    events: list[ProgressEvent] = []

    async def main() -> RolloutResult:
        return await Controller(SimBackend(4, 1, 10, fail_replicas=fail), policy, report=events.append).run()

    return run_virtual(main()), events


def test_failures_within_max_failure_ratio_do_not_apply_the_failure_action() -> None:
    # 4 targets, ratio 0.25 -> 1 tolerated: the second target's failure is absorbed, the rest roll,
    # nothing is rolled back; the service is not converged, so the result is still a failure.
    result, _ = _simulated(Policy(max_failure_ratio=0.25), fail=(2,))
    assert (result.outcome, result.replaced, result.failed, result.rolled_back) == (Outcome.FAILED, 3, 1, 0)
    assert result.reason is not None and "within max_failure_ratio" in result.reason


def test_one_failure_more_than_tolerated_rolls_back() -> None:
    result, _ = _simulated(Policy(max_failure_ratio=0.25), fail=(1, 2))
    assert result.outcome is Outcome.ROLLED_BACK and result.failed == 2


def test_a_rollback_rolls_as_rollback_config_says() -> None:
    # step 1 forward; the 4th target fails. rollback_config parallelism 0 (all): the three replaced
    # replicas' restores all go out (one request a second, the simulator's request time) before the
    # first is up 10 s later; without it, one after the other: 10 s apart.
    result, events = _simulated(Policy(rollback_step=Step(StepKind.ALL)), fail=(4,))
    assert result.outcome is Outcome.ROLLED_BACK
    assert _restores(events) == [40.0, 41.0, 42.0]
    _, events = _simulated(Policy(), fail=(4,))
    assert _restores(events) == [40.0, 50.0, 60.0]


def _restores(events: list[ProgressEvent]) -> list[float]:
    return [event.at for event in events if event.kind is EventKind.REQUEST_SENT and event.fields()["restore"]]


# -- the project's exit code -------------------------------------------------------------------------


@pytest.mark.parametrize(("results", "code"), [
    (["completed", "untouched", "skipped", "left"], 0),
    (["completed", "rolled-back", "blocked"], 1),
    (["completed", "locked"], 3),
    (["locked", "failed"], 1),
    (["completed", "interrupted", "not-started"], 130),
])
def test_the_exit_code_follows_the_services_results(results: list[str], code: int) -> None:
    run = ProjectRun([ServiceOutcome(f"s{number}", Action.ROLL, result) for number, result in enumerate(results)])
    assert run.exit_code == code


def test_no_deps_without_services_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--no-deps"], environ={}) == 2
    assert capsys.readouterr().err == "error: InvalidOption: --no-deps needs the services to deploy\n"
