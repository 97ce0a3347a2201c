"""Step 'all' (the seed's 'service') takes no grace period: nothing waits behind the one wave."""

from __future__ import annotations

import json

import pytest

from rollover.cli import main
from rollover.core.policy import Policy, StepKind, parse_step

ISSUE_COMMAND = ["simulate", "--replicas", "7", "--request-time", "1", "--redeploy-time", "10"]


def simulate(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main([*ISSUE_COMMAND, *args, "--output", "json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    ("step", "duration_s", "grace_s"),
    [
        # 7 replicas sent at once, up 10 s later: done at 10 s, the 5 s grace never applies.
        pytest.param("all", 10, 0, id="all-no-grace"),
        pytest.param("service", 10, 0, id="seed-alias-service-no-grace"),
        # 'half' of 7 is 3 at a time; each replica's 5 s grace holds back the next and the end:
        # waves up at 10, 25 (+5 grace, +10), 40 -> the last settles at 45.
        pytest.param("half", 45, 5, id="half-keeps-grace"),
    ],
)
def test_grace_applies_to_every_step_but_all(capsys: pytest.CaptureFixture[str], step: str, duration_s: float,
                                             grace_s: float) -> None:
    records = simulate(capsys, "--step", step, "--grace", "5")
    plan, summary = records[0], records[-1]
    assert plan["grace_s"] == grace_s  # the plan the user reads says what applies
    assert summary["duration_s"] == duration_s
    assert summary["replaced"] == 7


def test_a_policy_for_step_all_carries_no_grace_whoever_builds_it() -> None:
    assert Policy(step=parse_step("all"), grace_s=5).grace_s == 0
    assert Policy(step=parse_step("2"), grace_s=5).grace_s == 5
    assert parse_step("service").kind is StepKind.ALL
