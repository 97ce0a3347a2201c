"""--lock-wait: a second rollout of a service that another live rollout holds waits for it (saying
so) and then goes on from what the first left; with a wait shorter than the first rollout it ends
exit 3 as without one."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.support.docker_cli import image_id, rplug_name, service_images
from tests.support.engine import APP_V1, APP_V2, ComposeProject
from tests.support.faults import Rollover

pytestmark = pytest.mark.engine


def test_a_second_rollout_waits_for_the_first_then_rolls(
    compose_project: Callable[..., ComposeProject], started: list[Rollover]
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    env = dict(os.environ)
    args = ["--project", project.name, "--step", "1"]
    first = Rollover([*args, "--grace", "3"], project.directory, env)
    first.wait_for("request_sent")  # it holds the lock now
    short = Rollover([*args, "--lock-wait", "1"], project.directory, env)
    waiting = Rollover([*args, "--lock-wait", "5m"], project.directory, env)
    started += [first, short, waiting]  # killed at the end if still running
    waited = waiting.wait_for("lock_wait", deadline_s=120)
    assert "already running" in str(waited["holder"]) and waited["wait_s"] == 300

    gave_up = short.finish()
    assert gave_up.returncode == 3 and "(waited 1 s)" in gave_up.stderr
    assert gave_up.kinds() == ["plan", "lock_wait"]
    first_outcome = first.finish()
    assert first_outcome.returncode == 0, first_outcome.text()
    # The replicas the first left are its replacements (the waiting one starts the moment the lock
    # goes, so listing the containers now could already show its own).
    made_by_first = sorted(str(event["replacement"]) for event in first_outcome.events
                           if event["event"] == "acknowledged")

    outcome = waiting.finish()
    assert outcome.returncode == 0, outcome.text()
    plans = [event for event in outcome.events if event["event"] == "plan"]
    assert len(plans) == 2, "the plan again, after the wait"
    assert sorted(plans[1]["targets"]) == made_by_first, "it rolls what the first rollout left"
    assert service_images(project) == [image_id(project, APP_V2)] * 2
