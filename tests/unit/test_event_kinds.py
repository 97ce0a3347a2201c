"""EventKind is the one list of what the JSON output can carry: nothing emits a kind outside it,
and nothing in it lacks an emitter."""

from __future__ import annotations

import ast
import asyncio
import io
import json
from pathlib import Path

import pytest

import rollover
from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller import Controller
from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent, StaleLock
from rollover.core.policy import FailurePolicy, OrderChoice, Policy, parse_step
from rollover.report.output import JsonReporter, TextReporter

SOURCE = Path(rollover.__file__).parent
# Where a kind is defined or only read, not emitted.
NOT_EMITTERS = (SOURCE / "core" / "events.py", SOURCE / "report")


def _events(backend_options: dict[str, object], interrupt_at: float | None = None,
            **policy_options: object) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    policy = Policy(step=parse_step("1"), **policy_options)  # type: ignore[arg-type]

    async def main() -> None:
        controller = Controller(SimBackend(3, 1, 10, **backend_options),  # type: ignore[arg-type]
                                policy, report=events.append)
        if interrupt_at is not None:
            asyncio.get_running_loop().call_at(interrupt_at, controller.interrupt, "SIGINT")
        await controller.run()

    run_virtual(main())
    return events


ROLLOUTS = {
    "completed": lambda: _events({}),
    "rolled-back": lambda: _events({"fail_replicas": (2,)}),
    "paused": lambda: _events({"fail_replicas": (1,)}, on_failure=FailurePolicy.PAUSE),
    "interrupted": lambda: _events({}, interrupt_at=5),
    "stream-gap": lambda: _events({"stream_gap": (9, 14)}),
    "takeover": lambda: _events({"stale_lock": StaleLock("ci pid 7", 0.0, 4, "its holder is gone")},
                                order=OrderChoice.STOP_FIRST),
}


@pytest.mark.parametrize("rollout", list(ROLLOUTS), ids=list(ROLLOUTS))
def test_every_kind_a_simulated_rollout_emits_is_an_event_kind(rollout: str) -> None:
    events = ROLLOUTS[rollout]()
    assert events and all(isinstance(event.kind, EventKind) for event in events)
    assert events[-1].kind is EventKind.SUMMARY


def test_the_json_output_carries_the_kinds_value() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out)
    for event in _events({}):
        reporter(event)
    reporter.finish(None)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "plan" and lines[-1]["event"] == "summary"
    assert '"event": "request_sent"' in out.getvalue()  # the value, not "EventKind.REQUEST_SENT"


def _kinds_referenced(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "EventKind"}


def test_every_event_kind_has_an_emitter() -> None:
    referenced: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if not any(path == place or place in path.parents for place in NOT_EMITTERS):
            referenced |= _kinds_referenced(path)
    unemitted = {kind.name for kind in EventKind} - referenced
    assert not unemitted, f"listed in EventKind but emitted nowhere: {sorted(unemitted)}"
    assert referenced <= {kind.name for kind in EventKind}


@pytest.mark.parametrize("rollout", list(ROLLOUTS), ids=list(ROLLOUTS))
def test_the_text_output_says_every_event_in_words(rollout: str) -> None:
    # A rollout-wide event (no replica) once printed as "[  4.0s] : took_over_lock".
    out = io.StringIO()
    reporter = TextReporter(out)
    for event in ROLLOUTS[rollout]():
        reporter(event)
    lines = out.getvalue().splitlines()
    assert lines
    assert not [line for line in lines if "] : " in line], lines
