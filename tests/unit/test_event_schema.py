"""The JSON events' schema (report/events.schema.json) describes what rollover prints: every event of
simulated rollouts of every shape validates, the schema knows exactly the kinds EventKind lists,
and an event that breaks the contract is caught. (Real rollouts' events are checked by the engine,
zero-downtime and Swarm helpers: tests/support/event_schema.py.)"""

from __future__ import annotations

import io
import json

import pytest

from rollover.cli import main
from rollover.core.events import EventKind
from rollover.report.output import JsonReporter
from rollover.report.schema import event_schema
from tests.support.event_schema import assert_valid_events, schema_errors
from tests.unit.test_event_kinds import ROLLOUTS

SIMULATIONS = {
    "completed-timeline": ["--replicas", "5", "--request-time", "1", "--redeploy-time", "4", "--step", "2",
                           "--timeline"],
    "rolled-back": ["--replicas", "4", "--request-time", "1", "--redeploy-time", "3", "--fail-replica", "3"],
    "continue": ["--replicas", "4", "--request-time", "1", "--redeploy-time", "3", "--fail-replica", "2",
                 "--on-failure", "continue", "--extra-at", "2", "--timeline"],
    "stop-first-half": ["--replicas", "6", "--request-time", "0.5", "--redeploy-time", "2", "--step", "half",
                        "--order", "stop-first", "--grace", "1"],
}


def _simulated(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    main(["simulate", *args, "--output", "json"], environ={})
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.parametrize("args", list(SIMULATIONS.values()), ids=list(SIMULATIONS))
def test_every_event_of_a_simulation_validates(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    events = _simulated(args, capsys)
    assert events[0]["event"] == "plan" and events[0]["schema"] == 1
    assert_valid_events(events)


@pytest.mark.parametrize("rollout", list(ROLLOUTS), ids=list(ROLLOUTS))
def test_every_event_of_each_kind_of_rollout_validates(rollout: str) -> None:
    out = io.StringIO()
    reporter = JsonReporter(out)
    for event in ROLLOUTS[rollout]():
        reporter(event)
    reporter.finish(None)
    assert_valid_events(json.loads(line) for line in out.getvalue().splitlines())


def test_the_schema_lists_exactly_the_event_kinds() -> None:
    schema = event_schema()
    assert set(schema["properties"]["event"]["enum"]) == {kind.value for kind in EventKind}
    described = {branch["if"]["properties"]["event"]["const"] for branch in schema["allOf"]}
    assert described == {kind.value for kind in EventKind}


@pytest.mark.parametrize(("event", "problem"), [
    ({"event": "up", "t": 1.0, "replica": "web-1", "grace": 0}, "'grace' was unexpected"),  # a field renamed
    ({"event": "retired", "t": 1.0}, "'replica' is a required property"),
    ({"event": "summary", "t": 3.0, "replaced": 1, "failed": 0, "rolled_back": 0, "skipped": 0, "refilled": 0,
      "duration_s": 3.0, "result": "done", "reason": None, "not_redeployed": []}, "'done' is not one of"),
    ({"event": "failed", "t": 2.0, "replica": "web-2", "reason": "exited",
      "diagnosis": {"state": "exited", "exit_code": "1"}}, "is not of type"),
    ({"event": "landed", "t": 0.0}, "is not one of"),
], ids=["renamed-field", "missing-replica", "unknown-result", "exit-code-as-text", "unknown-kind"])
def test_an_event_that_breaks_the_contract_is_caught(event: dict[str, object], problem: str) -> None:
    errors = schema_errors(event)
    assert any(problem in error for error in errors), errors
